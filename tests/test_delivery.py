"""Where delegated work lands: `m2_task` starts from the user's working tree and merges its result
back (3-way, never clobbering), through the real MCP server, the stand-in and real git."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from _mcp import connect, server_env, start_http_server, stdio_params
from conftest import make_repo, run_cli
from standin import start_standin

pytestmark = pytest.mark.anyio

BASE = {
    "calc.py": "def add(a, b):\n    return a + b\n",
    "tests/test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    "pytest.ini": "[pytest]\npythonpath = .\n",
    "README.md": "readme\n",
    ".gitignore": "*.log\n",
}
SUB_BUG = "\n\ndef sub(a, b):\n    return b - a\n"
SUB_TEST = "from calc import sub\n\n\ndef test_sub():\n    assert sub(5, 3) == 2\n"
FIX_SUB = {"name": "edit_file", "arguments": {"path": "calc.py", "old_string": "return b - a",
                                              "new_string": "return a - b"}}


def turns(fix: dict, delay_after_fix: float = 0.0) -> list[dict]:
    return [
        {"think": "Read the code.", "tool_calls": [{"name": "read_file", "arguments": {"path": "calc.py"}}]},
        {"think": "Fix it.", "tool_calls": [fix]},
        {"think": "Verify.", "tool_calls": [{"name": "run_tests", "arguments": {}}], "delay": delay_after_fix},
        {"think": "Done.", "text": "Fixed it."},
    ]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def env_for(m2, tmp_path: Path) -> dict[str, str]:
    return {"M2_BASE_URL": m2.base_url, "M2_MCP_HOME": str(tmp_path / "state")}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """Committed code whose tests pass, plus the user's uncommitted work: a new buggy function and its
    untracked test, a staged-then-edited README, an untracked note and an ignored log."""
    r = make_repo(tmp_path / "proj", BASE)
    (r / "calc.py").write_text(BASE["calc.py"] + SUB_BUG)
    (r / "tests/test_sub.py").write_text(SUB_TEST)
    (r / "README.md").write_text("readme v2\n")
    git(r, "add", "README.md")
    (r / "README.md").write_text("readme v3, not staged\n")
    (r / "notes.txt").write_text("the user's untracked work\n")
    (r / "debug.log").write_bytes(b"ignored \x00 bytes\n")
    return r


def others(r: Path) -> dict[str, bytes]:
    return {name: (r / name).read_bytes() for name in ("tests/test_sub.py", "README.md", "notes.txt", "debug.log")}


async def test_task_starts_from_uncommitted_work_and_the_fix_lands_in_the_working_tree(repo: Path, tmp_path: Path):
    untouched, index, head = others(repo), git(repo, "ls-files", "-s"), git(repo, "rev-parse", "HEAD")
    staged = git(repo, "diff", "--cached")
    with start_standin({"scripts": [{"turns": turns(FIX_SUB)}]}, tmp_path) as m2:
        async with connect(stdio_params(repo, env=env_for(m2, tmp_path)), mode="legacy") as client:
            result = await client.call_tool("m2_task", {"task": "make the failing tests pass"},
                                            read_timeout_seconds=180)
    out = result.structured_content
    assert not result.is_error and out["status"] == "fixed", out
    # the task saw the uncommitted function and its untracked test: one failure before, none after
    assert (out["tests_before"]["failed"], out["tests_after"]["passed"]) == (1, 2)
    assert out["applied"] is True and out["conflicts"] == [] and out["branch"] is None
    assert (repo / "calc.py").read_text() == BASE["calc.py"] + SUB_BUG.replace("b - a", "a - b")
    assert others(repo) == untouched  # the user's other uncommitted, staged, untracked, ignored files
    assert git(repo, "ls-files", "-s") == index and git(repo, "diff", "--cached") == staged
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "branch", "--list", "m2/*") == "" and "m2-worktrees" not in git(repo, "worktree", "list")
    # `m2-mcp undo` takes the applied result back, and only it
    undo = run_cli("undo", "--repo", str(repo))
    assert undo.returncode == 0, undo.stderr
    assert (repo / "calc.py").read_text() == BASE["calc.py"] + SUB_BUG
    assert others(repo) == untouched and git(repo, "ls-files", "-s") == index


async def test_a_user_edit_to_the_same_lines_meanwhile_is_never_overwritten(repo: Path, tmp_path: Path):
    mine = BASE["calc.py"] + SUB_BUG.replace("return b - a", "return -(b - a)  # my own fix")
    with start_standin({"scripts": [{"turns": turns(FIX_SUB, delay_after_fix=5)}]}, tmp_path) as m2:
        with start_http_server(repo, "http", env=env_for(m2, tmp_path)) as (url, _):
            async with connect(url, mode="legacy") as client:
                started = await client.call_tool("m2_task", {"task": "make the failing tests pass", "background": True})
                task_id = started.structured_content["task_id"]
                for _ in range(600):  # once M2 has made its edit in its worktree, the user edits the same line
                    status = (await client.call_tool("m2_task_status", {"task_id": task_id})).structured_content
                    if (status["progress"].get("step") or 0) >= 3 or status["status"] != "running":  # turn 3: after it
                        break
                    await anyio.sleep(0.1)
                assert status["status"] == "running"
                (repo / "calc.py").write_text(mine)
                untouched = others(repo)
                for _ in range(60):
                    status = (await client.call_tool("m2_task_status",
                                                     {"task_id": task_id, "wait_seconds": 5})).structured_content
                    if status["status"] not in ("queued", "running"):
                        break
    result = status["result"]
    assert status["status"] == "fixed" and result["applied"] is False and result["conflicts"] == ["calc.py"]
    assert (repo / "calc.py").read_text() == mine and others(repo) == untouched  # nothing overwritten
    assert any("not applied" in e for e in result["errors"])
    # the change is kept twice: a patch file under the state dir, and the task branch
    patch = Path(result["patch"])
    assert patch.is_file() and (tmp_path / "state") in patch.parents
    assert "+    return a - b" in patch.read_text()
    assert result["branch"].startswith("m2/task-") and status["branch"] == result["branch"]
    assert "return a - b" in git(repo, "show", f"{result['branch']}:calc.py")
    assert "m2-worktrees" not in git(repo, "worktree", "list")
    # the command the error gives merges it by hand: both versions end up in the file, as conflict markers
    [error] = [e for e in result["errors"] if "not applied" in e]
    command = error.split("to merge it yourself: ", 1)[1]
    assert command == f"git add calc.py && git apply --3way {patch}"
    merged = subprocess.run(command, shell=True, cwd=repo, capture_output=True, text=True)
    assert "with conflicts" in merged.stderr, merged.stderr
    text = (repo / "calc.py").read_text()
    assert "<<<<<<< ours" in text and "my own fix" in text and "    return a - b" in text


async def test_with_a_branch_the_result_stays_there_with_the_users_identity(repo: Path, tmp_path: Path):
    porcelain, calc = git(repo, "status", "--porcelain"), (repo / "calc.py").read_bytes()
    with start_standin({"scripts": [{"turns": turns(FIX_SUB)}]}, tmp_path) as m2:
        async with connect(stdio_params(repo, env=env_for(m2, tmp_path)), mode="legacy") as client:
            result = await client.call_tool("m2_task", {"task": "make the failing tests pass", "branch": "m2/named"},
                                            read_timeout_seconds=180)
    out = result.structured_content
    assert out["status"] == "fixed" and out["branch"] == "m2/named"
    assert out["applied"] is None and out["patch"] is None and out["conflicts"] == []
    assert git(repo, "status", "--porcelain") == porcelain and (repo / "calc.py").read_bytes() == calc
    # two commits on top of HEAD: the user's working tree as the task found it, then the task's change
    log = git(repo, "log", "-2", "--format=%an <%ae>|%cn <%ce>|%B%x00", "m2/named").split("\0")
    for entry in log[:2]:
        author, committer, body = entry.strip().split("|", 2)
        assert author == committer == "Test <test@example.com>"
        assert body.rstrip().endswith("Generated-by: m2-mcp")
    assert git(repo, "rev-parse", "m2/named~2") == git(repo, "rev-parse", "HEAD")
    assert git(repo, "show", "m2/named~1:notes.txt") == "the user's untracked work\n"
    assert "return a - b" in git(repo, "show", "m2/named:calc.py")
    assert out["commits"] == [git(repo, "rev-parse", "m2/named").strip()]


async def test_a_cancelled_branch_run_reports_its_branch(tmp_path: Path):
    repo = make_repo(tmp_path / "buggy", {**BASE, "calc.py": "def add(a, b):\n    return a - b\n"})
    fix = {"name": "edit_file", "arguments": {"path": "calc.py", "old_string": "return a - b",
                                              "new_string": "return a + b"}}
    slow = [{"think": "Fix.", "tool_calls": [fix]}, {"think": "Wait.", "text": "...", "delay": 120}]
    with start_standin({"scripts": [{"turns": slow}]}, tmp_path) as m2:
        proc = subprocess.Popen(
            [sys.executable, "-m", "m2_mcp", "fix", "--repo", str(repo), "--branch", "m2/cancelled"],
            env=server_env(env_for(m2, tmp_path)), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            for line in proc.stderr:  # progress lines: cancel once the edit is made
                if "edit_file" in line:
                    break
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    result = json.loads(out)
    assert proc.returncode == 1 and result["status"] == "cancelled"
    assert result["branch"] == "m2/cancelled" and result["applied"] is None
    assert "return a + b" in git(repo, "show", "m2/cancelled:calc.py")
    assert (repo / "calc.py").read_text() == "def add(a, b):\n    return a - b\n"


def test_a_live_runs_worktree_is_not_removed_as_stale(repo: Path):
    from m2_mcp.workspace.worktree import Workspace, remove_stale_worktrees

    ws = Workspace(repo, "m2/live", from_snapshot=True)
    ws.start()
    try:
        assert remove_stale_worktrees(ws.g) == []  # owned by this (live) process
        assert ws.worktree.is_dir() and (ws.worktree / "notes.txt").read_text() == "the user's untracked work\n"
    finally:
        ws.finish(keep_branch=False)
    assert git(repo, "branch", "--list", "m2/*") == ""
