"""The drift engine: pure tables, statistical tests, reports and quality figures.

No I/O, no HTTP, no database, no event loop: bytes and tables in, reports out (the report may
spread the columns of a large table over a few threads, as numpy releases the GIL). It imports
nothing of node_exporter_ml outside this package (tests/test_architecture.py checks it); numpy,
scipy, pandas and pyarrow load on first use, in the drift worker process.
"""
