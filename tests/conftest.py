"""Shared fixtures: real git repositories in temp dirs, and the CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def make_repo(path: Path, files: dict[str, str], commit: bool = True) -> Path:
    """Create a real git repo at `path` holding `files`, committed unless told otherwise."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "config", "user.email", "test@example.com"], check=True)
    subprocess.run(["git", "-C", str(path), "config", "user.name", "Test"], check=True)
    subprocess.run(["git", "-C", str(path), "config", "commit.gpgsign", "false"], check=True)
    for rel, text in files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    if commit and files:
        subprocess.run(["git", "-C", str(path), "add", "-A"], check=True)
        subprocess.run(["git", "-C", str(path), "commit", "-q", "-m", "initial"], check=True)
    return path


@pytest.fixture(autouse=True, scope="session")
def isolated_state(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Runs, tasks and caches made by the tests (and the CLIs they start) stay out of the user's home."""
    os.environ["M2_MCP_HOME"] = str(tmp_path_factory.mktemp("m2-mcp-home"))
    os.environ["M2_MCP_CACHE_DIR"] = str(tmp_path_factory.mktemp("m2-mcp-cache"))


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A small committed Python project with a passing test."""
    return make_repo(
        tmp_path / "repo",
        {
            "calc.py": "def add(a, b):\n    return a + b\n",
            "tests/test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
            ".gitignore": "ignored/\n*.log\n",
        },
    )


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m m2_mcp ARGS` as a real subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "m2_mcp", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
        input=input, stdin=None if input is not None else subprocess.DEVNULL,
    )


def pid_gone(pid: int) -> bool:
    """True when `pid` no longer runs (gone, or a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return True


def procs_with(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains `marker`: sandboxed commands have
    their own PID namespace, so their `$$` / `$!` mean nothing here; a unique marker does."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            if marker in cmdline and not pid_gone(int(entry)):
                found.append(int(entry))
    return found


def none_left(marker: str) -> bool:
    """True once no process carries `marker`; a SIGKILLed process may need a moment to finish exiting."""
    for _ in range(100):
        if not procs_with(marker):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
