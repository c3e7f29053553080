"""`m2-mcp runs` (not implemented yet)."""

HELP = "runs (not implemented yet)"


def add_arguments(parser):
    pass


def run(args) -> int:
    from m2_mcp.errors import UsageError

    raise UsageError("'runs' is not implemented yet")
