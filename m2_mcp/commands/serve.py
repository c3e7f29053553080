"""`m2-mcp serve` (not implemented yet)."""

HELP = "serve (not implemented yet)"


def add_arguments(parser):
    pass


def run(args) -> int:
    from m2_mcp.errors import UsageError

    raise UsageError("'serve' is not implemented yet")
