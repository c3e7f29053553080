"""Smoke test with a third-party client: the MCP Inspector CLI (node) against our server.

The inspector is installed once into a cache dir (`npm install --prefix ~/.cache/m2-mcp-test-npm
@modelcontextprotocol/inspector@0.15.0`; override the dir with M2_TEST_NPM_PREFIX). 0.15.0 is the
last version that runs on node 20. Skipped only when npm is missing or the install fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_repo

from _mcp import server_env, start_http_server
from m2_mcp.tools import registry

pytestmark = pytest.mark.slow

INSPECTOR = "@modelcontextprotocol/inspector@0.15.0"
PREFIX = Path(os.environ.get("M2_TEST_NPM_PREFIX", Path.home() / ".cache" / "m2-mcp-test-npm"))


@pytest.fixture(scope="module")
def inspector() -> str:
    binary = PREFIX / "node_modules" / ".bin" / "mcp-inspector"
    if binary.exists():
        return str(binary)
    if not shutil.which("npm") or not shutil.which("node"):
        pytest.skip("npm/node not installed: cannot run the MCP Inspector smoke test")
    try:
        proc = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(PREFIX), INSPECTOR],
                              capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm install {INSPECTOR} timed out")
    if proc.returncode != 0 or not binary.exists():
        pytest.skip(f"npm install {INSPECTOR} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return str(binary)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("insp") / "repo", {"notes.txt": "first line\nsecond line\n"})


def inspect_cli(inspector: str, target: list[str], *method: str) -> dict:
    proc = subprocess.run([inspector, "--cli", *target, *method], capture_output=True, text=True,
                          timeout=120, env=server_env(), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def stdio_target(repo: Path) -> list[str]:
    return [sys.executable, "-m", "m2_mcp", "serve", "--repo", str(repo)]


def test_inspector_lists_tools_over_stdio(inspector: str, repo: Path) -> None:
    tools = inspect_cli(inspector, stdio_target(repo), "--method", "tools/list")["tools"]
    assert set(registry.load_all()) <= {t["name"] for t in tools}
    assert all(t["description"] and t["inputSchema"]["type"] == "object" and t["outputSchema"] for t in tools)


def test_inspector_calls_read_file_over_stdio(inspector: str, repo: Path) -> None:
    result = inspect_cli(inspector, stdio_target(repo), "--method", "tools/call",
                         "--tool-name", "read_file", "--tool-arg", "path=notes.txt")
    assert result["isError"] is False
    assert "second line" in result["structuredContent"]["content"]


def test_inspector_tool_error_over_http(inspector: str, repo: Path) -> None:
    with start_http_server(repo, "http") as (url, _):
        result = inspect_cli(inspector, [url], "--method", "tools/call",
                             "--tool-name", "read_file", "--tool-arg", "path=../outside.txt")
    assert result["isError"] is True
    assert "outside the repository root" in result["content"][0]["text"]
