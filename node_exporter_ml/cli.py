"""Command line entry point (placeholder until the server lands)."""


def main() -> int:
    """Run the agent."""
    return 0
