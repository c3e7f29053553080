"""`m2-mcp fix` (not implemented yet)."""

HELP = "fix (not implemented yet)"


def add_arguments(parser):
    pass


def run(args) -> int:
    from m2_mcp.errors import UsageError

    raise UsageError("'fix' is not implemented yet")
