"""The MCP server end to end: a real `m2-mcp serve` subprocess, the mcp SDK client, a real git repo.

Every transport (stdio, legacy SSE, streamable HTTP) in both client modes: `legacy` (the
initialize handshake the IDEs speak) and `auto` (the SDK's default).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from mcp.server.mcpserver import Context
from pydantic import BaseModel
from conftest import make_repo

from _mcp import connect, error_text, start_http_server, stdio_params
from m2_mcp.tools import registry

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

MODES = ["legacy", "auto"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(
        tmp_path_factory.mktemp("mcp") / "repo",
        {
            "calc.py": "def add(a, b):\n    return a + b\n",
            "tests/test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
        },
    )


@pytest.fixture(scope="module")
def http_url(repo: Path):
    with start_http_server(repo, "http") as (url, proc):
        yield url
    assert proc.returncode == 0, proc.stderr_text


@pytest.fixture(scope="module")
def sse_url(repo: Path):
    with start_http_server(repo, "sse") as (url, proc):
        yield url
    assert proc.returncode == 0, proc.stderr_text


@pytest.fixture(params=["stdio", "sse", "http"])
def target(request: pytest.FixtureRequest, repo: Path):
    if request.param == "stdio":
        return stdio_params(repo)
    return request.getfixturevalue(f"{request.param}_url")


@pytest.mark.parametrize("mode", MODES)
async def test_tools_over_every_transport(target, mode: str, repo: Path) -> None:
    tag = f"{'stdio' if not isinstance(target, str) else target.rsplit('/', 1)[1]}_{mode}"
    git_config = (repo / ".git" / "config").read_text()
    async with connect(target, mode=mode) as client:
        # Every registry tool is listed, described, with input and output schemas.
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(registry.load_all()) <= set(tools)  # every registry tool (plus the delegation tools)
        assert {"read_file", "write_file", "edit_file"} <= set(tools)
        for t in tools.values():
            assert t.description and "\n" not in t.description.strip()
            assert t.input_schema["type"] == "object"
            assert t.output_schema and t.output_schema["type"] == "object"
        assert tools["read_file"].annotations.read_only_hint is True
        assert tools["write_file"].annotations.read_only_hint is False
        assert "path" in tools["read_file"].input_schema["required"]

        # read: structured content (the client validates it against outputSchema).
        result = await client.call_tool("read_file", {"path": "calc.py"})
        assert not result.is_error, error_text(result)
        assert "return a + b" in result.structured_content["content"]
        assert result.structured_content["path"] == "calc.py"

        # write + edit land on disk.
        new = f"out/{tag}.txt"
        result = await client.call_tool("write_file", {"path": new, "content": "alpha\nbeta\n"})
        assert not result.is_error, error_text(result)
        assert (repo / new).read_text() == "alpha\nbeta\n"
        result = await client.call_tool("edit_file", {"path": new, "old_string": "beta", "new_string": "gamma"})
        assert not result.is_error, error_text(result)
        assert (repo / new).read_text() == "alpha\ngamma\n"

        # Errors are tool errors with a one-line reason, and the server keeps answering.
        for name, args, reason in [
            ("read_file", {"path": "../escape.txt"}, "outside the repository root"),
            ("write_file", {"path": ".git/config", "content": "pwned"}, ".git/"),
            ("read_file", {"offset": 2}, "path"),
            ("read_file", {"path": "calc.py", "offset": "many"}, "offset"),
        ]:
            result = await client.call_tool(name, args)
            assert result.is_error, (name, args)
            text = error_text(result)
            assert reason in text and "\n" not in text, text
        assert (repo / ".git" / "config").read_text() == git_config
        assert not (repo.parent / "escape.txt").exists()

        result = await client.call_tool("read_file", {"path": new})
        assert not result.is_error and "gamma" in result.structured_content["content"]


async def test_unknown_tool_is_an_error_not_a_crash(http_url: str) -> None:
    async with connect(http_url) as client:
        result = await client.call_tool("no_such_tool", {})
        assert result.is_error and "no_such_tool" in error_text(result)
        assert not (await client.call_tool("read_file", {"path": "calc.py"})).is_error


def test_stdio_stdout_is_protocol_only(repo: Path) -> None:
    """A raw session over stdio, as an IDE drives it: every stdout line is a JSON-RPC message,
    and closing stdin ends the server cleanly."""
    params = stdio_params(repo)
    proc = subprocess.Popen(
        [params.command, *params.args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=params.env, cwd=params.cwd,
    )

    def send(message: dict) -> None:
        proc.stdin.write(json.dumps(message) + "\n")
        proc.stdin.flush()

    try:
        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}})
        init = json.loads(proc.stdout.readline())
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
              "params": {"name": "read_file", "arguments": {"path": "nope/../../x"}}})
        send({"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
        replies = {r["id"]: r for r in (json.loads(proc.stdout.readline()) for _ in range(2))}
        proc.stdin.close()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert init["result"]["serverInfo"]["name"] == "m2-mcp"
    assert "repository root" in init["result"]["instructions"]
    assert replies[2]["result"]["isError"] is True
    assert set(registry.load_all()) <= {t["name"] for t in replies[3]["result"]["tools"]}
    assert proc.stdout.read() == ""
    assert "Traceback" not in proc.stderr.read()


# --- in-process: the hooks the delegation tools use, and a crashing tool --------------------

class CrashOut(BaseModel):
    ok: bool


@pytest.fixture
def crashing_tool():
    """A real registry tool that raises an unexpected exception (removed again afterwards)."""

    @registry.tool(for_agent=False)
    def explode_for_test(repo, depth: int = 1) -> CrashOut:
        """Raise an unexpected error."""
        raise RuntimeError("kaboom\nwith a second line")

    yield "explode_for_test"
    registry.REGISTRY.pop("explode_for_test", None)


async def test_crash_is_one_line_tool_error(crashing_tool: str, repo: Path, caplog: pytest.LogCaptureFixture) -> None:
    from mcp import Client

    from m2_mcp.repo import Repo
    from m2_mcp.server import build_server

    async with Client(build_server(Repo(repo)), mode="legacy") as client:
        result = await client.call_tool(crashing_tool, {})
        assert result.is_error
        assert error_text(result).endswith("internal error: RuntimeError: kaboom with a second line")
        assert not (await client.call_tool("read_file", {"path": "calc.py"})).is_error
    assert any("explode_for_test crashed" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_extra_tools_hook_and_lifespan(repo: Path) -> None:
    from contextlib import asynccontextmanager

    from mcp import Client

    from m2_mcp.repo import Repo
    from m2_mcp.server import build_server

    events: list[str] = []

    @asynccontextmanager
    async def lifespan(server):
        events.append("start")
        try:
            yield {"runner": "state"}
        finally:
            events.append("stop")

    def register(server) -> None:
        @server.tool(name="m2_task_status")
        async def status(task_id: str, ctx: Context) -> dict[str, str]:
            """State of a background task."""
            return {"task_id": task_id, "runner": ctx.request_context.lifespan_context["runner"]}

    server = build_server(Repo(repo), extra_tools=[register], lifespan=lifespan)
    async with Client(server, mode="legacy") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == set(registry.load_all()) | {"m2_task_status"}
        result = await client.call_tool("m2_task_status", {"task_id": "t1"})
        assert result.structured_content == {"task_id": "t1", "runner": "state"}
    assert events == ["start", "stop"]
