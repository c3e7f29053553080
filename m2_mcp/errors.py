"""Exceptions that map to the contract's exit codes and tool errors."""


class M2Error(Exception):
    """Base error; `exit_code` is what the CLI exits with."""

    exit_code = 1


class UsageError(M2Error):
    """Bad flag, bad path, not a git repo, bad configuration: exit 2."""

    exit_code = 2


class EndpointError(M2Error):
    """The model endpoint is unreachable or keeps failing: exit 3."""

    exit_code = 3


class ToolError(Exception):
    """An expected tool failure, reported to the caller as a one-line tool error."""
