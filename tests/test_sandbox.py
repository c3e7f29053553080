"""The sandbox of `shell` and `run_tests`: real bwrap, real subprocesses, the real MCP server where it fits."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import anyio
import pytest

from _mcp import connect, error_text, stdio_params
from conftest import make_repo, none_left, procs_with, run_cli
from m2_mcp import sandbox
from m2_mcp.errors import ToolError
from m2_mcp.repo import Repo
from m2_mcp.tools import registry

pytestmark = pytest.mark.anyio
CLI = [sys.executable, "-m", "m2_mcp"]
SECRETS = {"M2_API_KEY": "sk-m2-key-0123456789", "OPENAI_API_KEY": "sk-openai-abcdefghij",
           "M2_MCP_TOKEN": "tok-mcp-0123456789", "GITHUB_TOKEN": "ghp_abcdefghijklmnop",
           "MY_DB_PASSWORD": "hunter2-but-longer"}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repo with a nested git repo (`vendor/lib`), a bare `.git` dir below (`sub/.git/hooks`) and a submodule."""
    root = make_repo(tmp_path / "repo", {"calc.py": "x = 1\n", "sub/code.py": "y = 2\n", "pkg/mod.py": "w = 0\n"})
    make_repo(root / "vendor" / "lib", {"lib.py": "z = 3\n"})
    (root / "sub" / ".git" / "hooks").mkdir(parents=True)
    (root / "sub" / ".git" / "hooks" / "x").write_text("#!/bin/sh\n")
    upstream = make_repo(tmp_path / "upstream", {"up.py": "u = 4\n"})
    subprocess.run(["git", "-C", str(root), "-c", "protocol.file.allow=always", "submodule", "add", "-q",
                    str(upstream), "mods/up"], check=True, capture_output=True)
    return root


async def sh(root: Path, command: str, **args) -> dict:
    return await registry.call(Repo(root), "shell", {"command": command, **args})


def writable(result: dict, name: str) -> bool:
    return f"{name}:ok" in result["stdout"]


def try_writes(*targets: str) -> str:
    return "; ".join(f"(echo x >> {t}) 2>/dev/null && echo {t}:ok || echo {t}:refused" for t in targets)


async def test_repo_writable_git_nested_repos_and_outside_read_only(repo: Path) -> None:
    targets = ["calc.py", "new.txt", "pkg/mod.py", ".git/config", "sub/.git/hooks/x", "sub/code.py", "vendor/lib/lib.py",
               "vendor/lib/.git/config", "mods/up/up.py", "mods/up/.git", f"{Path.home()}/m2-sandbox-probe",
               "/usr/m2-sandbox-probe"]
    result = await sh(repo, try_writes(*targets, f"{repo.parent}/outside.txt"))  # /tmp is private: lands nowhere
    assert writable(result, "calc.py") and writable(result, "new.txt") and writable(result, "pkg/mod.py")
    for target in targets[3:]:  # a directory holding a .git (sub/) is a nested repo: read-only whole
        assert f"{target}:refused" in result["stdout"], (target, result)
    assert (repo / "new.txt").read_text() == "x\n"  # the repo is the real one, not a copy
    assert "x" not in (repo / ".git" / "config").read_text().splitlines()
    assert (repo / "sub" / ".git" / "hooks" / "x").read_text() == "#!/bin/sh\n"
    assert not (repo.parent / "outside.txt").exists() and not Path.home().joinpath("m2-sandbox-probe").exists()


async def test_private_tmp_and_no_shadow(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "host-tmp.txt").write_text("host\n")
    result = await sh(repo, f"cat {tmp_path}/host-tmp.txt; echo t > /tmp/mine && cat /tmp/mine; cat /etc/shadow")
    assert "host" not in result["stdout"] and "t\n" in result["stdout"]
    assert "/etc/shadow" in result["stderr"] and "root:" not in result["stdout"]
    assert not Path("/tmp/mine").exists() or Path("/tmp/mine").read_text() != "t\n"


async def test_a_virtualenv_in_tmp_stays_usable(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server running from a venv under /tmp (a CI job, `m2-mcp demo` from a scratch venv) can still
    start its test command: the private /tmp shows that venv, read-only."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (tmp_path / "other.txt").write_text("not shown\n")
    monkeypatch.setenv("VIRTUAL_ENV", str(venv))
    result = await sh(repo, f"{venv}/bin/python -c 'print(41 + 1)'; cat {tmp_path}/other.txt; "
                            f"touch {venv}/probe && echo venv:writable")
    assert "42" in result["stdout"], result
    assert "not shown" not in result["stdout"] and "venv:writable" not in result["stdout"]
    assert not (venv / "probe").exists()


@pytest.fixture
def fake_home(monkeypatch: pytest.MonkeyPatch):
    """A $HOME outside /tmp (which is private anyway) holding ~/.ssh and ~/.netrc, plus a harmless file."""
    home = Path(tempfile.mkdtemp(prefix="m2-sandbox-home-", dir=Path.home()))
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_rsa").write_text("PRIVATE KEY\n")
    (home / ".netrc").write_text("machine x password NETRC-SECRET\n")
    (home / ".extra-secret").write_text("EXTRA\n")
    (home / "notes.txt").write_text("PUBLIC\n")
    monkeypatch.setenv("HOME", str(home))
    yield home
    shutil.rmtree(home, ignore_errors=True)


async def test_secret_files_in_home_are_masked(repo: Path, fake_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M2_MCP_SANDBOX_HIDE", str(fake_home / ".extra-secret"))
    result = await sh(repo, "cat ~/notes.txt; cat ~/.ssh/id_rsa; ls ~/.ssh; cat ~/.netrc; cat ~/.extra-secret")
    assert "PUBLIC" in result["stdout"]  # $HOME itself is readable (the interpreter may live there)
    for secret in ("PRIVATE KEY", "id_rsa", "NETRC-SECRET", "EXTRA"):
        assert secret not in result["stdout"], result


def listener() -> tuple[socket.socket, list[bytes]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    got: list[bytes] = []

    def accept() -> None:
        try:
            conn, _ = server.accept()
            got.append(conn.recv(100))
            conn.close()
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    return server, got


CONNECT = ("python -c \"import socket,sys; s=socket.create_connection(('127.0.0.1', {port}), 5); "
           "s.sendall(b'hello'); print('connected')\"; curl -s -m 5 -o /dev/null http://127.0.0.1:{port}/ "
           "&& echo curl-ok || echo curl-failed")


async def test_network_off_by_default(repo: Path) -> None:
    server, got = listener()
    with server:
        result = await sh(repo, CONNECT.format(port=server.getsockname()[1]))
    assert "connected" not in result["stdout"] and "curl-failed" in result["stdout"]
    assert "refused" in result["stderr"].lower() or "unreachable" in result["stderr"].lower()
    assert got == [] and result["note"] is None


async def test_network_on_when_allowed_with_a_note(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M2_MCP_SANDBOX_NETWORK", "1")
    server, got = listener()
    with server:
        result = await sh(repo, CONNECT.format(port=server.getsockname()[1]).split("; curl")[0])
        for _ in range(50):
            if got:
                break
            await anyio.sleep(0.05)
    assert "connected" in result["stdout"] and got == [b"hello"]
    assert "network was allowed (M2_MCP_SANDBOX_NETWORK=1)" in result["note"]


@pytest.mark.parametrize("how", ["setsid {s} &", "( ( {s} & ) & )", "nohup {s} > /dev/null 2>&1 &",
                                 "setsid nohup bash -c '( {s} & )' &"])
async def test_nothing_survives_the_call(repo: Path, how: str) -> None:
    marker = f"40{uuid.uuid4().int % 10**6:06d}"
    command = how.format(s=f"sleep {marker}") + f"\nsleep 0.3; ps -eo args | grep -c 'sleep {marker}' > seen"
    result = await sh(repo, command)
    assert result["exit_code"] == 0, result
    assert int((repo / "seen").read_text()) >= 2  # it ran (plus grep itself) while the call lasted
    assert none_left(marker), f"survivor after the call: {procs_with(marker)}"


async def test_a_cancel_while_the_sandbox_starts_leaves_nothing(repo: Path) -> None:
    """Cancelled at once, or a few milliseconds in (while bwrap sets up its namespaces): no survivor."""
    from m2_mcp import proc

    marker = f"41{uuid.uuid4().int % 10**6:06d}"
    for i in range(40):
        with anyio.move_on_after((i % 10) * 0.002):
            await proc.run(f"sleep {marker} & wait", cwd=repo, timeout=60, untrusted=True)
    assert none_left(marker), f"survivors of a cancelled start: {procs_with(marker)}"


async def test_secret_values_absent_from_every_environ_through_the_server(repo: Path) -> None:
    async with connect(stdio_params(repo, env=SECRETS), mode="legacy") as client:
        result = await client.call_tool("shell", {"command": "cat /proc/*/environ /proc/$PPID/environ | tr '\\0' '\\n'; env"})
        assert not result.is_error, error_text(result)
        out = result.structured_content["stdout"]
        assert "PATH=" in out and "HOME=" in out
        for name, value in SECRETS.items():
            assert value not in out and f"{name}=" not in out
        assert "[redacted]" not in out  # absent, not merely hidden
        # a secret value the command prints anyway is redacted from the result
        echoed = await client.call_tool("shell", {"command": f"echo {SECRETS['M2_API_KEY']}; echo {SECRETS['GITHUB_TOKEN']} >&2"})
        assert echoed.structured_content["stdout"] == "[redacted]\n"
        assert echoed.structured_content["stderr"] == "[redacted]\n"


async def test_opt_out_runs_unsandboxed_and_says_so(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M2_MCP_SANDBOX", "off")
    monkeypatch.setenv("M2_MCP_BWRAP", "/bin/false")  # not needed when off
    result = await sh(repo, f"echo out > {tmp_path}/outside.txt")
    assert result["exit_code"] == 0 and (tmp_path / "outside.txt").read_text() == "out\n"
    assert "ran unsandboxed (M2_MCP_SANDBOX=off)" in result["note"]


async def test_unavailable_sandbox_refuses_with_one_line(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "bwrap"
    broken.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("M2_MCP_BWRAP", str(broken))
    for tool, args in (("shell", {"command": f"touch {tmp_path}/ran"}), ("run_tests", {})):
        with pytest.raises(ToolError) as info:
            await registry.call(Repo(repo), tool, args)
        message = str(info.value)
        assert "\n" not in message and "M2_MCP_SANDBOX=off" in message and "No permissions" in message
    assert not (tmp_path / "ran").exists()
    assert sandbox.status()[0] == "unavailable"
    from m2_mcp.doctor import sandbox_check

    check = sandbox_check()
    assert check.status == "fail" and check.required and "M2_MCP_SANDBOX=off" in check.fix


def test_unavailable_sandbox_warns_at_serve_and_refuses_fix(repo: Path, tmp_path: Path) -> None:
    env = {"M2_MCP_BWRAP": "/bin/false"}
    fix = run_cli("fix", "--repo", str(repo), "--base-url", "http://127.0.0.1:9/v1", env=env)
    assert fix.returncode == 2 and fix.stderr.count("\n") == 1 and "M2_MCP_SANDBOX=off" in fix.stderr
    serve = subprocess.run([*CLI, "serve", "--repo", str(repo)], env={**os.environ, **env},
                           input="", capture_output=True, text=True, timeout=60)
    first = serve.stderr.splitlines()[0]
    assert first.startswith("m2-mcp: warning: sandbox unavailable") and "M2_MCP_SANDBOX=off" in first
    off = subprocess.run([*CLI, "serve", "--repo", str(repo)], env={**os.environ, "M2_MCP_SANDBOX": "off"},
                         input="", capture_output=True, text=True, timeout=60)
    assert off.stderr.splitlines()[0].startswith("m2-mcp: warning: sandbox off (M2_MCP_SANDBOX=off)")


async def test_bad_setting_is_a_one_line_error(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M2_MCP_SANDBOX_MEMORY_MB", "lots")
    with pytest.raises(ToolError, match="M2_MCP_SANDBOX_MEMORY_MB must be a positive whole number"):
        await sh(repo, "true")


async def test_resource_limits_apply(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M2_MCP_SANDBOX_FILE_MB", "1")
    monkeypatch.setenv("M2_MCP_SANDBOX_MEMORY_MB", "256")
    result = await sh(repo, "ulimit -d; ulimit -f; ulimit -t; ulimit -u; head -c 3000000 /dev/zero > big.bin; echo rc=$?; "
                            "python -c 'x = bytearray(600 * 1024 * 1024)' 2>&1 | tail -1")
    lines = result["stdout"].splitlines()
    assert lines[:4] == [str(256 * 1024), "1024", "3600", "1024"]  # data segment and file size in KB
    assert (repo / "big.bin").stat().st_size <= 1024 * 1024 and "rc=0" not in result["stdout"]
    assert "MemoryError" in result["stdout"]
