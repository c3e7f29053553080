"""Delegation over MCP: `m2_task` through real SDK clients (stdio, streamable HTTP) and the M2 stand-in."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import anyio
import pytest

from _mcp import connect, start_http_server, stdio_params
from conftest import make_repo, procs_with, run_cli
from standin import start_standin

pytestmark = pytest.mark.anyio

BUGGY = {
    "calc.py": "def add(a, b):\n    return a - b\n",
    "tests/test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    "pytest.ini": "[pytest]\npythonpath = .\n",
}
FIX = {"name": "edit_file", "arguments": {"path": "calc.py", "old_string": "return a - b", "new_string": "return a + b"}}


def turns(delay: float = 0.0) -> list[dict]:
    return [
        {"think": "Read the code.", "tool_calls": [{"name": "read_file", "arguments": {"path": "calc.py"}}], "delay": delay},
        {"think": "Fix the sign.", "tool_calls": [FIX], "delay": delay},
        {"think": "Verify.", "tool_calls": [{"name": "run_tests", "arguments": {}}], "delay": delay},
        {"think": "Done.", "text": "Fixed add().", "delay": delay},
    ]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = make_repo(tmp_path / "proj", BUGGY)
    (r / "notes.txt").write_text("the user's untracked work\n")
    return r


def env_for(m2, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"M2_BASE_URL": m2.base_url, "M2_MCP_HOME": str(tmp_path / "state"), **extra}


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_m2_task_reports_progress_and_applies_the_fix(repo: Path, tmp_path: Path, transport: str):
    status_before = git(repo, "status", "--porcelain")
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    with start_standin({"scripts": [{"turns": turns(delay=0.7)}]}, tmp_path) as m2:
        env = env_for(m2, tmp_path)
        if transport == "stdio":
            target, ctx = stdio_params(repo, env=env), None
        else:
            ctx = start_http_server(repo, "http", env=env)
            target, _ = ctx.__enter__()
        try:
            async with connect(target, mode="legacy") as client:
                result = await client.call_tool("m2_task", {"task": "make the failing tests pass"},
                                                progress_callback=on_progress, read_timeout_seconds=120)
                await anyio.sleep(0.3)  # progress callbacks are spawned; let the last ones land
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
    assert not result.is_error, result.content
    out = result.structured_content
    assert out["status"] == "fixed" and out["files_changed"] == ["calc.py"]
    assert out["applied"] is True and out["conflicts"] == [] and out["task_id"].startswith("t-")
    assert out["branch"] is None and git(repo, "branch", "--list", "m2/*") == ""  # applied: no branch left
    assert "+    return a + b" in Path(out["patch"]).read_text()
    assert (repo / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"  # the fix is in the working tree
    assert git(repo, "status", "--porcelain") == " M calc.py\n" + status_before
    assert len(progress) >= 4
    messages = [m for _, _, m in progress if m]
    assert any("M2 is thinking" in m for m in messages) and any("edit_file" in m for m in messages)
    assert all(total == 50 for _, total, _ in progress)
    # the run is in the ledger
    runs = run_cli("runs", "--json", env={"M2_MCP_HOME": str(tmp_path / "state")})
    listed = json.loads(runs.stdout)
    assert [r["status"] for r in listed] == ["fixed"] and listed[0]["source"] == "mcp"


async def test_cancel_stops_the_run_and_its_processes(repo: Path, tmp_path: Path):
    marker = f"sleep 30{os.getpid():07d}"  # the shell is sandboxed (own PID namespace): found by its command line
    slow = [{"think": "Run something slow.", "tool_calls": [
        {"name": "shell", "arguments": {"command": f"{marker} & wait", "timeout": 600}}]}]
    with start_standin({"scripts": [{"turns": slow}]}, tmp_path) as m2:
        env = env_for(m2, tmp_path)
        async with connect(stdio_params(repo, env=env), mode="legacy") as client:
            seen = False
            async with anyio.create_task_group() as tg:  # cancel the call once its shell runs
                tg.start_soon(client.call_tool, "m2_task", {"task": "make the failing tests pass"})
                for _ in range(900):  # a loaded machine may need a while for the first test run
                    if procs_with(marker):
                        seen = True
                        break
                    await anyio.sleep(0.1)
                tg.cancel_scope.cancel()
            started = time.monotonic()
            assert seen, "the shell never started"
            for _ in range(100):
                if not procs_with(marker):
                    break
                await anyio.sleep(0.1)
            assert not procs_with(marker), "the shell's child survived the cancellation"
            assert time.monotonic() - started < 15
            # the server still answers, and the task is recorded as cancelled
            after = await client.call_tool("read_file", {"path": "calc.py"})
            assert not after.is_error
            tasks = list((tmp_path / "state" / "tasks").glob("t-*.json"))
            for _ in range(50):
                records = [json.loads(p.read_text()) for p in tasks]
                if records and records[0]["status"] == "cancelled":
                    break
                await anyio.sleep(0.1)
            assert [r["status"] for r in records] == ["cancelled"]
    assert git(repo, "status", "--porcelain") == "?? notes.txt\n"
    assert "m2-worktrees" not in git(repo, "worktree", "list")


async def test_background_task_polled_to_completion_and_two_at_once(repo: Path, tmp_path: Path):
    scenario = {"scripts": [{"match": "first", "turns": turns(delay=0.3)},
                            {"match": "second", "turns": turns(delay=0.3)}]}
    with start_standin(scenario, tmp_path) as m2:
        with start_http_server(repo, "http", env=env_for(m2, tmp_path)) as (url, _):
            async with connect(url, mode="legacy") as client:
                started = [await client.call_tool("m2_task", {"task": f"{name}: make the failing tests pass",
                                                              "background": True})
                           for name in ("first", "second")]
                ids = [s.structured_content["task_id"] for s in started]
                assert [s.structured_content["status"] for s in started] == ["queued", "queued"]
                finals = []
                for task_id in ids:
                    for _ in range(30):
                        status = await client.call_tool("m2_task_status", {"task_id": task_id, "wait_seconds": 5})
                        if status.structured_content["status"] not in ("queued", "running"):
                            break
                    finals.append(status.structured_content)
                unknown = await client.call_tool("m2_task_status", {"task_id": "t-00000000"})
    assert unknown.is_error
    assert [f["status"] for f in finals] == ["fixed", "fixed"]
    for f in finals:
        assert f["result"]["status"] == "fixed" and f["result"]["files_changed"] == ["calc.py"]
        assert f["result"]["applied"] is True and f["result"]["branch"] is None and f["branch"] is None
    assert git(repo, "status", "--porcelain") == " M calc.py\n?? notes.txt\n"
    assert (repo / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"
    assert git(repo, "branch", "--list", "m2/*") == "" and "m2-worktrees" not in git(repo, "worktree", "list")
    runs = json.loads(run_cli("runs", "--json", env={"M2_MCP_HOME": str(tmp_path / "state")}).stdout)
    assert sorted(r["status"] for r in runs) == ["fixed", "fixed"]


async def test_killed_server_reports_interrupted_after_restart(repo: Path, tmp_path: Path):
    slow = [{"think": "Thinking for a long time.", "text": "...", "delay": 60}]
    with start_standin({"scripts": [{"turns": slow}]}, tmp_path) as m2:
        env = env_for(m2, tmp_path)
        with start_http_server(repo, "http", env=env) as (url, proc):
            async with connect(url, mode="legacy") as client:
                started = await client.call_tool("m2_task", {"task": "make the failing tests pass", "background": True})
                task_id = started.structured_content["task_id"]
                for _ in range(300):  # running, and past the test run before (its worktree exists)
                    running = await client.call_tool("m2_task_status", {"task_id": task_id})
                    if running.structured_content["progress"].get("message", "").startswith(("tests", "step")):
                        break
                    await anyio.sleep(0.1)
                assert running.structured_content["status"] == "running"
                assert "m2-worktrees" in git(repo, "worktree", "list")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        with start_http_server(repo, "http", env=env) as (url, _):
            async with connect(url, mode="legacy") as client:
                status = await client.call_tool("m2_task_status", {"task_id": task_id})
    assert status.structured_content["status"] == "interrupted"
    assert (repo / "notes.txt").read_text() == "the user's untracked work\n"
    assert git(repo, "status", "--porcelain") == "?? notes.txt\n"
    # the killed run's worktree and branch are gone, so nothing keeps the branch checked out
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert git(repo, "branch", "--list", "m2/*") == ""
    runs = json.loads(run_cli("runs", "--json", env={"M2_MCP_HOME": str(tmp_path / "state")}).stdout)
    assert [(r["id"], r["status"]) for r in runs] == [(task_id, "interrupted")]


async def test_sse_background_task_outlives_the_client_that_started_it(repo: Path, tmp_path: Path):
    with start_standin({"scripts": [{"turns": turns(delay=0.5)}]}, tmp_path) as m2:
        with start_http_server(repo, "sse", env=env_for(m2, tmp_path)) as (url, _):
            async with connect(url, mode="legacy") as client:
                started = await client.call_tool("m2_task", {"task": "make the failing tests pass", "background": True})
            task_id = started.structured_content["task_id"]  # the first client is gone now
            async with connect(url, mode="legacy") as client:
                for _ in range(30):
                    status = await client.call_tool("m2_task_status", {"task_id": task_id, "wait_seconds": 5})
                    if status.structured_content["status"] not in ("queued", "running"):
                        break
    assert status.structured_content["status"] == "fixed"
    assert status.structured_content["result"]["applied"] is True
