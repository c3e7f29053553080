"""Shared helpers: our MCP server as a real subprocess, and real SDK clients connected to it.

    with start_http_server(repo, "http") as (url, proc):       # url ends in /mcp (or /sse)
        async with connect(url, mode="legacy") as client: ...
    async with connect(stdio_params(repo), mode="legacy") as client: ...
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parent.parent
PATHS = {"http": "/mcp", "sse": "/sse"}


def server_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: ours, minus a stray token, plus `env`, with the checkout importable."""
    full = {k: v for k, v in os.environ.items() if k != "M2_MCP_TOKEN"}
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full.get("PYTHONPATH")]))
    full.update(env or {})
    return full


def stdio_params(repo: Path | str, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> StdioServerParameters:
    """How an IDE launches us: `python -m m2_mcp serve --repo REPO` over stdio."""
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "m2_mcp", "serve", "--repo", str(repo), *args],
        env=server_env(env),
        cwd=str(repo),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def start_http_server(
    repo: Path | str,
    transport: str = "http",
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    args: tuple[str, ...] = (),
    timeout: float = 30,
    preexec_fn: Any = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run `m2-mcp serve --transport sse|http` on a free port; yields (endpoint URL, process).

    The URL always uses 127.0.0.1 (so it works for a 0.0.0.0 bind too). On exit the server
    gets SIGTERM and must be gone within 10 s; its stderr is kept in `proc.stderr_text`.
    """
    port = free_port()
    errlog = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "m2_mcp", "serve", "--transport", transport, "--host", host,
         "--port", str(port), "--repo", str(repo), *args],
        env=server_env(env), cwd=str(repo), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errlog,
        preexec_fn=preexec_fn,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, errlog, timeout)
        yield base + PATHS[transport], proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        errlog.seek(0)
        proc.stderr_text = errlog.read().decode(errors="replace")  # type: ignore[attr-defined]
        errlog.close()


def wait_healthy(base: str, proc: subprocess.Popen[bytes], errlog: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            errlog.seek(0)
            raise RuntimeError(f"server exited with {proc.returncode}: {errlog.read().decode(errors='replace')}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server at {base} did not become healthy within {timeout} s")


@asynccontextmanager
async def connect(target: str | StdioServerParameters, mode: str = "legacy", headers: dict[str, str] | None = None,
                  **kwargs: Any) -> AsyncIterator[Client]:
    """A connected SDK client for a stdio server (params) or an endpoint URL (`.../mcp` or `.../sse`).

    `mode="legacy"` speaks the initialize handshake (what IDEs use); "auto" lets the SDK pick.
    """
    async with AsyncExitStack() as stack:
        if isinstance(target, StdioServerParameters):
            transport: Any = target
        elif target.endswith("/sse"):
            transport = sse_client(target, headers=headers)
        else:
            http_client = await stack.enter_async_context(
                httpx2.AsyncClient(headers=headers or {}, timeout=httpx2.Timeout(30, read=300))
            )
            transport = streamable_http_client(target, http_client=http_client)
        yield await stack.enter_async_context(Client(transport, mode=mode, **kwargs))


def error_text(result: Any) -> str:
    """The text of a tool result's first content block."""
    return result.content[0].text if result.content else ""
