"""HTTP/SSE transport rules on a real server: Origin and Host checks, bearer token, /health,
/metrics, bind refusal, bad flags, clean shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import pytest
from conftest import make_repo, run_cli

from _mcp import connect, error_text, start_http_server, stdio_params

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOKEN = "s3cret-token-for-tests"
INIT = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("sec") / "repo", {"hello.py": "print('hi')\n"})


@pytest.fixture(scope="module")
def open_http(repo: Path):
    with start_http_server(repo, "http") as (url, proc):
        yield url


@pytest.fixture(scope="module")
def token_http(repo: Path):
    with start_http_server(repo, "http", env={"M2_MCP_TOKEN": TOKEN}) as (url, proc):
        yield url, proc
    assert TOKEN not in proc.stderr_text


@pytest.fixture(scope="module")
def token_sse(repo: Path):
    with start_http_server(repo, "sse", env={"M2_MCP_TOKEN": TOKEN}) as (url, proc):
        yield url


def post_init(url: str, **headers: str) -> httpx2.Response:
    return httpx2.post(url, content=json.dumps(INIT), headers={**MCP_HEADERS, **headers}, timeout=10)


def sse_status(url: str, **headers: str) -> int:
    """Status of GET /sse (the stream itself is closed right away)."""
    with httpx2.stream("GET", url, headers=headers, timeout=10) as response:
        return response.status_code


def base(url: str) -> str:
    return url.rsplit("/", 1)[0]


# --- Origin / Host (DNS rebinding) ---------------------------------------------------------

def test_http_refuses_foreign_origin(open_http: str) -> None:
    assert post_init(open_http, Origin="http://evil.example").status_code == 403
    assert post_init(open_http, Origin="http://localhost.evil.example:8765").status_code == 403
    assert post_init(open_http, Origin="null").status_code == 403
    assert httpx2.get(base(open_http) + "/health", headers={"Origin": "https://evil.example"}).status_code == 403
    assert post_init(open_http, Host="evil.example").status_code == 421  # loopback bind: Host is checked too
    port = urlsplit(open_http).port
    assert post_init(open_http, Host=f"127.0.0.1:{port}@evil.example").status_code == 421  # not a port


def test_http_accepts_local_origin(open_http: str) -> None:
    for origin in ("http://localhost:3000", "http://127.0.0.1:6274", "https://[::1]:443", "http://localhost"):
        response = post_init(open_http, Origin=origin)
        assert response.status_code == 200, (origin, response.text)
    assert post_init(open_http).status_code == 200  # no Origin: a non-browser client


def test_health(open_http: str) -> None:
    response = httpx2.get(base(open_http) + "/health")
    assert response.status_code == 200 and response.text.strip() == "ok"


def test_sse_refuses_foreign_origin(token_sse: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert sse_status(token_sse, Origin="http://evil.example", **auth) == 403
    assert sse_status(token_sse, Origin="http://localhost:5173", **auth) == 200


# --- bearer token ---------------------------------------------------------------------------

def test_http_token_required(token_http) -> None:
    url, _ = token_http
    assert post_init(url).status_code == 401
    assert post_init(url, Authorization="Bearer wrong").status_code == 401
    assert post_init(url, Authorization=TOKEN).status_code == 401
    assert post_init(url, Authorization=f"Bearer {TOKEN}x").status_code == 401
    assert post_init(url, Authorization=f"Bearer {TOKEN}").status_code == 200
    assert post_init(url, Authorization=f"bearer {TOKEN}").status_code == 200
    assert httpx2.get(base(url) + "/health").status_code == 200  # health stays open for probes
    assert httpx2.get(base(url) + "/metrics").status_code == 401


def test_sse_token_required(token_sse: str) -> None:
    assert sse_status(token_sse) == 401
    assert sse_status(token_sse, Authorization="Bearer nope") == 401
    assert httpx2.post(base(token_sse) + "/messages/?session_id=x", content="{}").status_code == 401


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_sdk_client_with_bearer(transport: str, mode: str, token_http, token_sse) -> None:
    url = token_http[0] if transport == "http" else token_sse
    async with connect(url, mode=mode, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "read_file" in names
        result = await client.call_tool("read_file", {"path": "hello.py"})
        assert not result.is_error, error_text(result)
        assert "print('hi')" in result.structured_content["content"]


async def test_metrics_count_tool_calls(token_http) -> None:
    url, _ = token_http
    async with connect(url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        await client.call_tool("read_file", {"path": "hello.py"})
        await client.call_tool("find_files", {"pattern": "*.py"})
        assert (await client.call_tool("read_file", {"path": "../nope"})).is_error
    response = httpx2.get(base(url) + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'm2mcp_tool_calls_total{outcome="ok",tool="read_file"}' in text
    assert 'm2mcp_tool_calls_total{outcome="error",tool="read_file"}' in text
    assert 'tool="find_files"' in text
    assert "m2mcp_tool_seconds_bucket" in text


# --- binding ----------------------------------------------------------------------------------

def test_non_loopback_bind_without_token_is_refused(repo: Path) -> None:
    for transport in ("http", "sse"):
        proc = run_cli("serve", "--transport", transport, "--host", "0.0.0.0", "--repo", str(repo),
                       env={"M2_MCP_TOKEN": ""}, timeout=60)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "M2_MCP_TOKEN" in lines[0], proc.stderr


def test_non_loopback_bind_with_a_short_token_or_an_empty_host_is_refused(repo: Path) -> None:
    short = run_cli("serve", "--transport", "http", "--host", "0.0.0.0", "--repo", str(repo),
                    env={"M2_MCP_TOKEN": "a"}, timeout=60)
    empty = run_cli("serve", "--transport", "http", "--host", "", "--repo", str(repo), timeout=60)
    for proc, message in ((short, "1-character M2_MCP_TOKEN"), (empty, "--host must not be empty")):
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr


def test_non_loopback_bind_with_token_still_checks_origin(repo: Path) -> None:
    with start_http_server(repo, "http", host="0.0.0.0", env={"M2_MCP_TOKEN": TOKEN}) as (url, proc):
        auth = f"Bearer {TOKEN}"
        assert post_init(url).status_code == 401
        assert post_init(url, Authorization=auth, Origin="http://evil.example").status_code == 403
        assert post_init(url, Authorization=auth).status_code == 200
    assert proc.returncode == 0


def test_busy_port_is_one_line(repo: Path, open_http: str) -> None:
    port = open_http.rsplit(":", 1)[1].split("/")[0]
    proc = run_cli("serve", "--transport", "http", "--port", port, "--repo", str(repo), timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and f":{port}" in proc.stderr, proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["--transport", "websocket"], "--transport"),
    (["--port", "eighty"], "--port"),
    (["--port", "70000"], "--port"),
    (["--repo", "/no/such/dir"], "/no/such/dir"),
    (["--bogus"], "--bogus"),
])
def test_bad_flags_exit_2_one_line(args: list[str], needle: str) -> None:
    proc = run_cli("serve", *args, timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_repo_from_env(tmp_path: Path) -> None:
    """M2_REPO is used when --repo is absent; a non-directory there is a usage error too."""
    proc = run_cli("serve", env={"M2_REPO": str(tmp_path / "missing")}, timeout=60)
    assert proc.returncode == 2 and "missing" in proc.stderr


# --- shutdown ---------------------------------------------------------------------------------

def test_http_ctrl_c_is_clean_exit(repo: Path) -> None:
    """(SIGTERM is what every start_http_server fixture ends with; they check for exit 0.)"""
    with start_http_server(repo, "sse") as (url, proc):
        with httpx2.stream("GET", url, timeout=10) as stream:  # an open SSE stream must not block shutdown
            assert stream.status_code == 200
            proc.send_signal(signal.SIGINT)
            assert proc.wait(15) == 0
    assert "Traceback" not in proc.stderr_text


def test_stdio_sigterm_is_clean_exit(repo: Path) -> None:
    """SIGTERM while the client keeps stdin open (SIGINT takes the same path)."""
    sig = signal.SIGTERM
    params = stdio_params(repo)
    proc = subprocess.Popen([params.command, *params.args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=params.env, cwd=params.cwd)
    try:
        proc.stdin.write((json.dumps(INIT) + "\n").encode())
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["id"] == 1  # serving
        proc.send_signal(sig)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"Traceback" not in proc.stderr.read()
