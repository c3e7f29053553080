"""One error style across subcommands, stdio `serve` says it is up, install hints match the README."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from _mcp import server_env
from conftest import ROOT, run_cli

BAD = [
    ("fix", "--max-steps", "x"),                  # argparse, in a subcommand
    ("fix", "--repo", "/no/such/dir"),            # UsageError from the command
    ("serve", "--transport", "carrier-pigeon"),
    ("serve", "--port", "70000"),
    ("model",),                                   # no sub-subcommand
    ("model", "serve", "--gpus", "3"),
    ("doctor", "--timeout", "0"),
    ("config", "emacs"),
    ("runs", "--limit", "0"),
    ("undo", "--repo", "/no/such/dir"),
    ("demo", "--no-such-flag"),
    ("no-such-command",),
]


@pytest.mark.parametrize("argv", BAD, ids=[" ".join(a) for a in BAD])
def test_every_usage_error_is_one_line_with_one_prefix(argv: tuple[str, ...]):
    proc = run_cli(*argv, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("m2-mcp: error: "), proc.stderr
    assert "Traceback" not in proc.stderr


def test_stdio_serve_says_it_is_waiting_for_a_client(git_repo: Path):
    proc = subprocess.Popen([sys.executable, "-m", "m2_mcp", "serve", "--repo", str(git_repo)], env=server_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()
    finally:
        proc.stdin.close()  # end of input: the server stops
        proc.wait(timeout=30)
    assert first == f"m2-mcp: serving {git_repo.resolve()} over stdio; waiting for an MCP client\n"
    assert proc.stdout.read() == ""  # nothing but the protocol on stdout


def test_stdio_serve_warns_once_outside_a_git_repository(tmp_path: Path):
    proc = subprocess.Popen([sys.executable, "-m", "m2_mcp", "serve", "--repo", str(tmp_path)], env=server_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        warning, first = proc.stderr.readline(), proc.stderr.readline()
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert warning.startswith(f"m2-mcp: warning: {tmp_path.resolve()} is not a git repository: ") and "git init" in warning
    assert first.startswith("m2-mcp: serving ")


def test_install_hints_are_the_readmes():
    from m2_mcp.serving import launch

    readme = (ROOT / "README.md").read_text()
    source = Path(launch.__file__).read_text()
    for hint in ("pip install 'm2-mcp[serve]'", "pip install 'sglang>=0.5.4.post3'"):
        assert hint in source and hint in readme, hint
