"""Issue 11 over the real HTTP server: Host checked on every route, an idle-connection flood
neither exhausts descriptors nor floods stderr, reads of huge files stay in bounded memory,
and a directory swapped for a symlink during writes never lets a file land outside the repo."""

from __future__ import annotations

import http.client
import os
import resource
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import pytest

from _mcp import connect, error_text, start_http_server
from conftest import make_repo

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"calc.py": "def add(a, b):\n    return a + b\n", "d/keep.txt": "k\n"})


def get(url: str, path: str, host: str | None = None) -> int:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": host} if host else {})
        return conn.getresponse().status
    finally:
        conn.close()


def vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_host_is_checked_on_every_route(repo: Path) -> None:
    with start_http_server(repo, "http") as (url, _):
        port = urlsplit(url).port
        for path in ("/metrics", "/health", "/mcp"):
            assert get(url, path, host="evil.example") == 421, path
            assert get(url, path, host=f"evil.example:{port}") == 421, path
        assert get(url, "/metrics", host=f"127.0.0.1:{port}") == 200
        assert get(url, "/health", host=f"localhost:{port}") == 200


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


async def test_idle_connection_flood_is_capped_and_quiet(repo: Path) -> None:
    with start_http_server(repo, "http", preexec_fn=_low_fd_limit) as (url, proc):
        parts = urlsplit(url)
        idle = []
        for _ in range(600):  # more than the server's descriptors
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect((parts.hostname, parts.port))
            except OSError:
                s.close()
                continue
            idle.append(s)
        time.sleep(1)
        assert proc.poll() is None
        deadline = time.monotonic() + 60  # idle connections are dropped after IDLE_TIMEOUT_S
        status = None
        while time.monotonic() < deadline and status != 200:
            try:
                status = get(url, "/health")
            except OSError:
                time.sleep(0.5)
        assert status == 200
        for s in idle:
            s.close()
        with anyio.fail_after(60):
            async with connect(url) as client:
                result = await client.call_tool("read_file", {"path": "calc.py"})
                assert not result.is_error, error_text(result)
    assert proc.returncode == 0
    assert len(proc.stderr_text) < 20_000, proc.stderr_text[-2000:]
    assert "Traceback" not in proc.stderr_text


async def test_huge_one_line_file_and_big_edits_stay_in_bounded_memory(repo: Path) -> None:
    chunk = b"a" * (4 << 20)
    with open(repo / "huge.txt", "wb") as f:
        for _ in range(64):  # 256 MB, one line
            f.write(chunk)
    (repo / "big.py").write_bytes(b"x = 1\n" * (3 << 20))  # 18 MB: over the edit cap
    with start_http_server(repo, "http") as (url, proc):
        with anyio.fail_after(300):
            async with connect(url) as client:
                result = await client.call_tool("read_file", {"path": "calc.py"})
                assert not result.is_error, error_text(result)
                baseline = vm_hwm_kb(proc.pid)
                result = await client.call_tool("read_file", {"path": "huge.txt"})
                assert not result.is_error, error_text(result)
                out = result.structured_content
                assert out["total_lines"] == 1 and "line cut" in out["content"]
                for name, args in (
                    ("edit_file", {"path": "big.py", "old_string": "x = 1\nx = 1\nx = 1\n", "new_string": "y"}),
                    ("multi_edit", {"edits": [{"path": "big.py", "old_string": "x", "new_string": "y",
                                               "replace_all": True}]}),
                ):
                    result = await client.call_tool(name, args)
                    assert result.is_error and "limit" in error_text(result) and "write_file" in error_text(result)
                grown_mb = (vm_hwm_kb(proc.pid) - baseline) / 1024
    assert grown_mb < 120, f"server peak memory grew by {grown_mb:.0f} MB"


async def test_a_directory_swapped_for_a_symlink_never_leaks_writes(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    d, parked = repo / "d", repo / "d_parked"
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            try:
                os.rename(d, parked)
                os.symlink(outside, d)
                time.sleep(0.0005)
                os.unlink(d)
                os.rename(parked, d)
            except OSError:
                pass

    with start_http_server(repo, "http") as (url, _):
        flipper = threading.Thread(target=flip, daemon=True)
        with anyio.fail_after(300):
            async with connect(url) as client:
                flipper.start()
                outcomes = []
                try:
                    for i in range(150):
                        path = f"d/f{i}.txt" if i % 2 else f"d/sub{i}/g.txt"
                        result = await client.call_tool("write_file", {"path": path, "content": "payload"})
                        outcomes.append(result.is_error)
                        if result.is_error:
                            assert "\n" not in error_text(result)
                finally:
                    stop.set()
                    flipper.join(10)
    assert list(outside.iterdir()) == []
    assert not list(repo.rglob("*.m2tmp"))
    assert False in outcomes  # the race did not simply refuse everything
    if d.is_symlink():
        d.unlink()
    if parked.exists() and not d.exists():
        os.rename(parked, d)
    shutil.rmtree(outside)


def test_request_headers_that_trickle_in_are_cut_off(repo: Path) -> None:
    """Slowloris: a byte every second keeps a connection from looking idle, but the headers have a deadline."""
    from m2_mcp.transport import HEADERS_TIMEOUT_S

    with start_http_server(repo, "http") as (url, proc):
        parts = urlsplit(url)
        s = socket.create_connection((parts.hostname, parts.port), timeout=5)
        s.sendall(b"GET /health HTTP/1.1\r\n")
        started, closed = time.monotonic(), False
        try:
            while time.monotonic() - started < HEADERS_TIMEOUT_S + 30:
                time.sleep(1)
                s.sendall(b"X")
        except OSError:  # reset or broken pipe: the server closed it
            closed = True
        finally:
            s.close()
        assert closed, "a trickling request was never cut off"
        assert time.monotonic() - started >= HEADERS_TIMEOUT_S - 1  # by the deadline, not at once
        assert get(url, "/health") == 200 and proc.poll() is None
