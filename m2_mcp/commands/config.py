"""`m2-mcp config` (not implemented yet)."""

HELP = "config (not implemented yet)"


def add_arguments(parser):
    pass


def run(args) -> int:
    from m2_mcp.errors import UsageError

    raise UsageError("'config' is not implemented yet")
