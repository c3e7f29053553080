"""`shell`: run one bash command in the repo root, bounded in time and output."""

from __future__ import annotations

from pydantic import BaseModel

from m2_mcp import budget, proc
from m2_mcp.errors import ToolError
from m2_mcp.repo import Repo
from m2_mcp.tools.registry import tool

DEFAULT_TIMEOUT_S = 120
MAX_TIMEOUT_S = 600


class ShellResult(BaseModel):
    exit_code: int | None  # null when the command was killed on timeout
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float
    note: str | None = None


@tool(read_only=False)
async def shell(repo: Repo, command: str, timeout: int = DEFAULT_TIMEOUT_S) -> ShellResult:
    """Run one bash command in the repository root (no stdin) and return its exit code, stdout
    and stderr. It runs sandboxed: the repo is writable (not .git or nested repos), the rest of
    the filesystem is read-only, /tmp is private, there is no network, and nothing it starts
    outlives it. `timeout` is in seconds (default 120, at most 600); on timeout the command and
    all its children are killed. Long output is cut in the middle with a marker: redirect it
    to a file and read or search that file to see everything.
    """
    if not command.strip():
        raise ToolError("command must not be empty")
    notes = []
    seconds = max(1, min(timeout, MAX_TIMEOUT_S))
    if seconds != timeout:
        notes.append(f"timeout clamped to {seconds}s (allowed: 1 to {MAX_TIMEOUT_S})")
    result = await proc.run(command, cwd=repo.root, timeout=seconds, env=repo.env, untrusted=True)
    if result.note:
        notes.append(result.note)
    stdout, stderr, cut = split_budget(result.stdout, result.stderr)
    if result.timed_out:
        notes.append(f"timed out after {seconds}s: the command and its process group were killed")
    if cut:
        notes.append("output truncated; redirect it to a file (`cmd > out.txt 2>&1`) and read or search that file")
    return ShellResult(
        exit_code=result.exit_code,
        stdout=stdout,
        stderr=stderr,
        timed_out=result.timed_out,
        duration_s=result.duration_s,
        note="; ".join(notes) or None,
    )


def split_budget(stdout: str, stderr: str) -> tuple[str, str, bool]:
    """Truncate stdout and stderr (head+tail) to share one output budget; a short stream leaves room to the other."""
    total = budget.output_chars()
    half = total // 2
    err_limit = max(half, total - len(stdout))
    out_limit = max(half, total - len(stderr))
    hint = "redirect to a file and read it in pages"
    stdout, cut_out = budget.truncate(stdout, out_limit, hint)
    stderr, cut_err = budget.truncate(stderr, err_limit, hint)
    return stdout, stderr, cut_out or cut_err
