"""`m2-mcp doctor` (not implemented yet)."""

HELP = "doctor (not implemented yet)"


def add_arguments(parser):
    pass


def run(args) -> int:
    from m2_mcp.errors import UsageError

    raise UsageError("'doctor' is not implemented yet")
