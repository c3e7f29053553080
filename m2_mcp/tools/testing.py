"""`run_tests`: run the repo's test command and parse pytest's results into counts and failures.

Also used by the agent loop: `run_test_command()` gives the same `TestRun`, `TestCounts.of(run)`
the five numbers of the result object, `failure_signature(run)` a stable fingerprint for
no-progress detection.
"""

from __future__ import annotations

import re
import shlex
from typing import ClassVar, Literal

from pydantic import BaseModel

from m2_mcp import budget, proc
from m2_mcp.errors import ToolError
from m2_mcp.pytest_args import check_args
from m2_mcp.repo import Repo
from m2_mcp.tools import pyenv
from m2_mcp.tools.registry import tool

DEFAULT_TIMEOUT_S = 600
MAX_TIMEOUT_S = 1800
MAX_FAILURES = 50
MAX_MESSAGE_CHARS = 500

# Outcome words on a summary line, folded into the four counts (xfailed is expected: skipped;
# a non-strict xpassed still passes: passed).
_FOLD = {
    "passed": "passed", "xpassed": "passed", "failed": "failed", "error": "errors", "errors": "errors",
    "skipped": "skipped", "xfailed": "skipped", "deselected": None, "warning": None, "warnings": None,
    "rerun": None, "reruns": None,
}
_SUMMARY = re.compile(r"(no tests ran|\d+ \w+(?:, \d+ \w+)*)(?: in [\d.]+s.*?)?\s*=*$")
_COUNT = re.compile(r"(\d+) (\w+)")
_SHORT = re.compile(r"^(FAILED|ERROR) (.+?)(?: - (.*))?$")
_SECTION = re.compile(r"^_{3,} (.+?) _{3,}$")
_LOCATION = re.compile(r"^(\S+):(\d+): ")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class TestFailure(BaseModel):
    __test__: ClassVar[bool] = False

    test_id: str  # e.g. tests/test_x.py::TestK::test_y[2], or a module that failed to import
    kind: Literal["failed", "error"]
    location: str | None = None  # path:line of the deepest frame in the repo
    message: str = ""


class TestRun(BaseModel):
    __test__: ClassVar[bool] = False

    command: str
    exit_code: int | None  # null when killed on timeout
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    summary: str | None = None  # the final summary line, e.g. "1 failed, 2 passed in 0.12s"
    failures: list[TestFailure] = []
    timed_out: bool = False
    duration_s: float = 0.0
    output: str = ""  # stdout then stderr, cut in the middle if long
    note: str | None = None


class TestCounts(BaseModel):
    """The five numbers of `tests_before` / `tests_after` in the result object."""

    __test__: ClassVar[bool] = False

    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    exit_code: int | None = None  # null when the test command timed out

    @classmethod
    def of(cls, run: TestRun) -> "TestCounts":
        return cls(
            passed=run.passed, failed=run.failed, errors=run.errors, skipped=run.skipped, exit_code=run.exit_code
        )


@tool(read_only=False)
async def run_tests(repo: Repo, args: list[str] | None = None, timeout: int = DEFAULT_TIMEOUT_S) -> TestRun:
    """Run the repository's test command (default `python -m pytest -q`) with optional extra
    arguments (e.g. a test file or `-k name`); returns pass/fail/error/skip counts and each
    failure's test id, file:line and message. `timeout` is in seconds (default 600, at most
    1800); a run that times out is killed and reported with `timed_out: true`.
    """
    run = await run_test_command(repo, args, timeout)
    reason = not_runnable(run)
    if reason:
        raise ToolError(reason)
    return run


def not_runnable(run: TestRun) -> str | None:
    """Why the test command could not even start (exit 126/127, e.g. `python: command not found`), or None."""
    if run.exit_code not in (126, 127) or run.passed or run.failed or run.errors:
        return None
    last = (run.output or "").strip().splitlines()[-1:] or [""]
    return f"the test command could not run (exit {run.exit_code}): {run.command}: {last[0][:200]}"


async def run_test_command(repo: Repo, args: list[str] | None = None, timeout: int = DEFAULT_TIMEOUT_S) -> TestRun:
    """Run `repo.test_cmd` (with the repo's own Python) plus shell-quoted `args` (refused if they point
    pytest outside the repo), sandboxed, and parse what it printed."""
    check_args(repo, args or [])
    test_cmd = pyenv.resolve_command(repo.test_cmd, repo.root, repo.env)
    command = " ".join([test_cmd, *(shlex.quote(a) for a in args or [])])
    seconds = max(1, min(timeout, MAX_TIMEOUT_S))
    result = await proc.run(command, cwd=repo.root, timeout=seconds, env={"COLUMNS": "200", **repo.env}, untrusted=True)
    text = _ANSI.sub("", result.stdout + ("\n" + result.stderr if result.stderr.strip() else ""))
    run = parse_output(text)
    run.command = command
    run.exit_code = result.exit_code
    run.timed_out = result.timed_out
    run.duration_s = result.duration_s
    notes = [result.note] if result.note else []
    if seconds != timeout:
        notes.append(f"timeout clamped to {seconds}s")
    if result.timed_out:
        notes.append(f"timed out after {seconds}s and was killed; run fewer tests (pass a file or -k) or raise timeout")
    elif result.exit_code == 5 or run.summary == "no tests ran":
        notes.append("no tests ran; check the path or -k expression")
    chars = budget.output_chars()
    shown, used = [], 0
    for failure in run.failures[:MAX_FAILURES]:  # failures take at most half the budget
        cost = len(failure.test_id) + len(failure.message) + len(failure.location or "") + 60
        if used + cost > chars // 2:
            break
        shown.append(failure)
        used += cost
    if len(shown) < len(run.failures):
        notes.append(f"{len(run.failures)} failures, showing the first {len(shown)}")
        run.failures = shown
    room = max(1000, chars - used - 600)
    hint = "run fewer tests (pass a test file or -k) to see all of it"
    run.output, cut = budget.truncate(text, room, hint)
    if cut:
        notes.append("output truncated in the middle")
    run.note = "; ".join(notes) or None
    return run


def parse_output(text: str) -> TestRun:
    """Counts and failures from pytest's output (or a plain `N passed, N failed` line)."""
    lines = text.splitlines()
    run = TestRun(command="", exit_code=None)
    for line in reversed(lines):
        m = _SUMMARY.search(line.strip())
        if m and (m.group(1) == "no tests ran" or any(w in _FOLD for _, w in _COUNT.findall(m.group(1)))):
            run.summary = line.strip()[m.start():].strip("= ")
            for number, word in _COUNT.findall(m.group(1)):
                if _FOLD.get(word):
                    setattr(run, _FOLD[word], getattr(run, _FOLD[word]) + int(number))
            break
    run.failures = _failures(lines)
    return run


def _failures(lines: list[str]) -> list[TestFailure]:
    sections: dict[str, list[list[str]]] = {}  # title -> the bodies of sections with that title
    current: list[str] | None = None
    for line in lines:
        m = _SECTION.match(line)
        if m:
            title = re.sub(r"^ERROR (?:at (?:setup|teardown) of |collecting )", "", m.group(1))
            current = []
            sections.setdefault(title, []).append(current)
        elif line.startswith("=") and line.endswith("="):
            current = None
        elif current is not None:
            current.append(line)

    failures = []
    short = [m for m in map(_SHORT.match, lines) if m]
    entries = [(m.group(1), m.group(2), m.group(3) or "") for m in short]
    if not entries:  # no short summary (e.g. -rN): fall back to the section titles
        entries = [("FAILED", title, "") for title, bodies in sections.items() for _ in bodies]
    for word, test_id, message in entries:
        title = test_id.split("::", 1)[1].replace("::", ".") if "::" in test_id else test_id
        bodies = sections.get(title) or []
        body = bodies.pop(0) if bodies else []
        if not message:
            message = next((ln.lstrip("E").strip() for ln in body if ln.startswith("E ")), "")
        failures.append(
            TestFailure(
                test_id=test_id,
                kind="failed" if word == "FAILED" else "error",
                location=_location(body) or _location(lines, test_id.split("::")[0]),
                message=message[:MAX_MESSAGE_CHARS],
            )
        )
    return failures


def _location(lines: list[str], file: str | None = None) -> str | None:
    """The last `path:line:` of a traceback, preferring paths inside the repo (relative ones)."""
    found = [m for m in map(_LOCATION.match, lines) if m and (file is None or m.group(1) == file)]
    inside = [m for m in found if not m.group(1).startswith("/")]
    best = (inside or found or [None])[-1]
    return f"{best.group(1)}:{best.group(2)}" if best else None


def failure_signature(run: TestRun) -> str:
    """A stable fingerprint of how a run failed: sorted failing ids + first message lines, no timings or addresses."""
    items = sorted(f"{f.kind} {f.test_id}: {(f.message.splitlines() or [''])[0]}" for f in run.failures)
    if not items and run.exit_code != 0:
        summary = re.sub(r" in [\d.]+s.*$", "", run.summary or "")
        items = [f"exit {run.exit_code}: {summary}"]
    text = "\n".join(items)
    text = re.sub(r"0x[0-9a-fA-F]+", "0x?", text)
    return re.sub(r"\b\d+(?:\.\d+)?s\b", "?s", text)
