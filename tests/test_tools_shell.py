"""The `shell` tool: real bash subprocesses (sandboxed by default), timeouts, cancellation, no orphans."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import anyio
import pytest

from conftest import none_left, procs_with
from m2_mcp.repo import Repo
from m2_mcp.errors import ToolError
from m2_mcp.tools import registry

pytestmark = pytest.mark.anyio


def hang() -> tuple[str, str]:
    """(command, marker): a background grandchild and the shell itself hang on a uniquely marked sleep,
    after writing `started` (so the test knows they ran)."""
    marker = f"30{uuid.uuid4().int % 10**6:06d}"  # `sleep 30NNNNNN` is unique on this machine
    return f"(sleep {marker} & echo up > started; wait) & sleep {marker}", marker


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    (tmp_path / "hello.txt").write_text("hi there\n")
    return Repo(tmp_path)


async def shell(repo: Repo, command: str, **args) -> dict:
    return await registry.call(repo, "shell", {"command": command, **args})


def started(repo: Repo) -> bool:
    for _ in range(100):
        if (repo.root / "started").exists():
            return True
        time.sleep(0.05)
    return False


async def test_runs_in_repo_root_with_exit_code_and_streams(repo: Repo) -> None:
    result = await shell(repo, "cat hello.txt; echo oops >&2; exit 3")
    assert result["exit_code"] == 3
    assert result["stdout"] == "hi there\n"
    assert result["stderr"] == "oops\n"
    assert result["timed_out"] is False and result["note"] is None
    assert (await shell(repo, "pwd"))["stdout"].strip() == str(repo.root)


async def test_no_stdin(repo: Repo) -> None:
    result = await shell(repo, "cat", timeout=30)
    assert result["exit_code"] == 0 and result["stdout"] == "" and not result["timed_out"]


async def test_huge_output_is_truncated_with_a_marker(repo: Repo) -> None:
    result = await shell(repo, "yes | head -c 5000000; echo THE-END")
    assert result["exit_code"] == 0
    assert len(result["stdout"]) < 50_000
    assert "truncated" in result["stdout"] and result["stdout"].rstrip().endswith("THE-END")
    assert result["stdout"].startswith("y\ny\n")
    assert "redirect" in result["note"]


async def test_timeout_kills_the_whole_process_group(repo: Repo) -> None:
    command, marker = hang()
    result = await shell(repo, command, timeout=5)  # long enough to start under load
    assert result["timed_out"] is True and result["exit_code"] is None
    assert "timed out" in result["note"]
    assert started(repo) and none_left(marker)


async def test_cancellation_kills_the_whole_process_group(repo: Repo) -> None:
    command, marker = hang()
    finished = []

    async def call() -> None:
        finished.append(await shell(repo, command, timeout=60))

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        with anyio.fail_after(60):  # cancel once the command runs (a loaded machine starts it late)
            while not (repo.root / "started").exists():
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert finished == []  # cancelled, not run to its 60 s timeout
    assert none_left(marker)


async def test_unsandboxed_timeout_kills_the_whole_process_group(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M2_MCP_SANDBOX", "off")
    command, marker = hang()
    result = await shell(repo, command, timeout=5)  # long enough to start under load
    assert result["timed_out"] is True and "ran unsandboxed (M2_MCP_SANDBOX=off)" in result["note"]
    assert started(repo) and none_left(marker) and not procs_with(marker)


async def test_timeout_is_clamped_and_said(repo: Repo) -> None:
    result = await shell(repo, "true", timeout=100_000)
    assert result["exit_code"] == 0 and "clamped to 600s" in result["note"]
    spec = registry.load_all()["shell"]
    assert "600" in spec.description and spec.for_agent


async def test_empty_command_is_a_tool_error(repo: Repo) -> None:
    with pytest.raises(ToolError):
        await shell(repo, "   ")


async def test_our_secrets_are_not_in_the_environment(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M2_API_KEY", "sk-test-secret-1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-2")
    monkeypatch.setenv("SOME_SETTING", "visible")
    result = await shell(repo, "env")
    assert "SOME_SETTING=visible" in result["stdout"]
    assert "sk-test-secret" not in result["stdout"] and "[redacted]" not in result["stdout"]  # absent, not hidden
