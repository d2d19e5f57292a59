"""Model-server latency: parsing, framework profiles, windows, scraping and latency causes."""
