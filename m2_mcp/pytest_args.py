"""`run_tests` arguments may not point pytest outside the repo (the sandbox is the second line).

Refused: path options (`--basetemp`, `--rootdir`, `-c`, `--confcutdir`, `--junitxml`, `--log-file`,
...) and test paths that resolve outside the root or into `.git`; `-p` plugins given as paths;
`-o` overrides of path settings that point outside, `-o addopts` and `@file` argument files (pass the
options themselves).
"""

from __future__ import annotations

from m2_mcp.errors import ToolError
from m2_mcp.repo import Repo

PATH_OPTIONS = {
    "--basetemp", "--rootdir", "-c", "--config-file", "--confcutdir", "--junitxml", "--junit-xml", "--result-log",
    "--resultlog", "--log-file", "--report-log", "--html", "--json-report-file", "--cov-config", "--debug",
    "--cache-dir", "--ignore", "--ignore-glob", "--deselect",
}
PATH_SETTINGS = {"cache_dir", "log_file", "junit_xml", "testpaths", "rootdir", "confcutdir", "basetemp"}
SHORT_WITH_VALUE = {"-c", "-p", "-o", "-k", "-m", "-W", "-r"}  # options whose value may be glued: -cFILE
VALUE_OPTIONS = {"-k", "-m", "-W", "-r", "--tb", "--maxfail", "--durations", "--durations-min", "--import-mode",
                 "--capture", "--color", "--code-highlight", "--log-level", "--log-cli-level", "--log-format",
                 "--log-date-format", "--log-file-level", "--junit-prefix", "--show-capture",
                 "-n", "--dist", "--timeout", "--count", "--reruns"}


def check_args(repo: Repo, args: list[str]) -> None:
    """Raise a one-line ToolError for the first argument that points pytest outside the repo."""
    i = 0
    while i < len(args):
        arg = args[i]
        if not isinstance(arg, str):
            raise ToolError("run_tests args must be strings")
        if arg.startswith("@"):  # pytest reads more arguments from that file, past these checks
            raise ToolError(f"refused run_tests argument {arg!r}: pass the arguments themselves, not an @file")
        name, value, glued = _split(arg)
        if not glued and name in PATH_OPTIONS | {"-p", "-o", "--override-ini", "--cov-report"} | VALUE_OPTIONS:
            if name == "--debug" and (i + 1 >= len(args) or args[i + 1].startswith("-")):
                value = None  # --debug without a file name
            else:
                value = args[i + 1] if i + 1 < len(args) else None
                i += 1
        i += 1
        if value is None and name.startswith("-"):
            continue
        if name in PATH_OPTIONS:
            _inside(repo, value, arg)
            if name == "--basetemp" and value and repo.resolve(value) == repo.root:
                raise ToolError(f"refused run_tests argument {arg!r}: pytest empties --basetemp, not the repo root")
        elif name == "-p":
            if "/" in value or "\\" in value or value.startswith("."):
                raise ToolError(f"refused run_tests argument {arg!r}: -p takes a plugin module name, not a path")
        elif name in ("-o", "--override-ini"):
            key, _, setting = value.partition("=")
            key = key.strip().lower()
            if key == "addopts":
                raise ToolError(f"refused run_tests argument {arg!r}: pass the options themselves, not -o addopts")
            if key in PATH_SETTINGS:
                for part in setting.split():
                    _inside(repo, part, arg)
        elif name == "--cov-report" and ":" in value:
            _inside(repo, value.split(":", 1)[1], arg)
        elif not name.startswith("-"):  # a test path or node id
            _inside(repo, name.split("::", 1)[0], arg)


def _split(arg: str) -> tuple[str, str | None, bool]:
    """(option or positional, its value if glued to it, whether a value was glued)."""
    if arg.startswith("--") and "=" in arg:
        name, value = arg.split("=", 1)
        return name, value, True
    if arg[:2] in SHORT_WITH_VALUE and len(arg) > 2 and not arg.startswith("--"):
        return arg[:2], arg[2:], True
    return arg, None, False


def _inside(repo: Repo, path: str | None, arg: str) -> None:
    if path is None or not path.strip():
        return
    try:
        repo.resolve(path)
    except ToolError as exc:
        raise ToolError(f"refused run_tests argument {arg!r}: {exc}") from None
