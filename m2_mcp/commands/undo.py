"""`m2-mcp undo` (not implemented yet)."""

HELP = "undo (not implemented yet)"


def add_arguments(parser):
    pass


def run(args) -> int:
    from m2_mcp.errors import UsageError

    raise UsageError("'undo' is not implemented yet")
