"""`m2-mcp model` (not implemented yet)."""

HELP = "model (not implemented yet)"


def add_arguments(parser):
    pass


def run(args) -> int:
    from m2_mcp.errors import UsageError

    raise UsageError("'model' is not implemented yet")
