"""`fix` and `m2_task` look at the endpoint before any work: dead -> exit 3, wrong model -> exit 2,
no tests -> exit 2; in none of these cases does the test suite run long or the model get a request."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from _mcp import connect, stdio_params
from conftest import make_repo, run_cli
from standin import start_standin
from test_fix_e2e import BUGGY, fixing_turns

DEAD = "http://127.0.0.1:9/v1"


def slow_repo(tmp_path: Path) -> tuple[Path, Path]:
    """A repo whose suite would write a marker, then sleep longer than the CLI is given."""
    marker = tmp_path / "suite-ran"
    slow = (f"import time\n\ndef test_slow():\n    open({str(marker)!r}, 'w').close()\n    time.sleep(90)\n")
    return make_repo(tmp_path / "slow", {**BUGGY, "tests/test_slow.py": slow}), marker


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("m2-mcp: error:")]


def test_dead_endpoint_exits_3_before_the_suite_runs(tmp_path: Path):
    repo, marker = slow_repo(tmp_path)
    out = tmp_path / "result.json"
    proc = run_cli("fix", "--repo", str(repo), "--base-url", DEAD, "--json-out", str(out), timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert not marker.exists(), "the test suite ran although the endpoint was down"
    [line] = error_lines(proc.stderr)
    assert "cannot reach the model endpoint" in line and "127.0.0.1:9" in line
    result = json.loads(proc.stdout)
    assert result["status"] == "error" and "127.0.0.1:9" in result["errors"][0]
    assert json.loads(out.read_text()) == result
    assert "running the tests" not in proc.stderr and "Traceback" not in proc.stderr
    status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True)
    assert status.stdout == ""


def test_wrong_model_name_exits_2_with_the_served_names(tmp_path: Path):
    repo, marker = slow_repo(tmp_path)
    with start_standin({"scripts": [{"turns": fixing_turns()}]}, tmp_path) as m2:
        proc = run_cli("fix", "--repo", str(repo), "--base-url", m2.base_url, "--model", "MiniMax-M2", timeout=60)
        requests = m2.requests()
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc.stderr)
    assert "'MiniMax-M2' is not served" in line and "served: MiniMaxAI/MiniMax-M2" in line
    assert proc.stdout == "" and requests == [] and not marker.exists()


def test_base_url_without_v1_exits_2_before_the_suite_runs(tmp_path: Path):
    repo, marker = slow_repo(tmp_path)
    with start_standin({"scripts": [{"turns": fixing_turns()}]}, tmp_path) as m2:
        root = m2.base_url.removesuffix("/v1")
        proc = run_cli("fix", "--repo", str(repo), "--base-url", root, timeout=60)
        requests = m2.requests()
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc.stderr)
    assert "HTTP 404" in line and f"should end in /v1 (e.g. {root}/v1)" in line
    assert proc.stdout == "" and requests == [] and not marker.exists()


def test_a_dead_first_endpoint_is_skipped_from_the_start(tmp_path: Path):
    repo = make_repo(tmp_path / "buggy", BUGGY)
    with start_standin({"scripts": [{"turns": fixing_turns()}]}, tmp_path) as m2:
        proc = run_cli("fix", "--repo", str(repo), "--base-url", f"{DEAD},{m2.base_url}", timeout=180)
        requests = m2.requests()
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "fixed" and len(requests) >= 2
    assert "model request failed" not in proc.stderr  # no retries against the endpoint the check found dead


def test_no_tests_exits_2_without_a_model_call(tmp_path: Path):
    repo = make_repo(tmp_path / "empty", {"calc.py": "def add(a, b):\n    return a - b\n"})
    with start_standin({"scripts": [{"turns": fixing_turns()}]}, tmp_path) as m2:
        proc = run_cli("fix", "--repo", str(repo), "--base-url", m2.base_url, timeout=120)
        requests = m2.requests()
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc.stderr)
    assert "found no tests" in line and "python -m pytest -q" in line
    assert "running the tests before the run:" in proc.stderr  # the progress line while the suite starts
    assert requests == []


@pytest.mark.anyio
async def test_m2_task_with_a_dead_endpoint_is_a_one_line_tool_error(tmp_path: Path):
    repo, marker = slow_repo(tmp_path)
    env = {"M2_BASE_URL": DEAD, "M2_MCP_HOME": str(tmp_path / "state")}
    async with connect(stdio_params(repo, env=env), mode="legacy") as client:
        result = await client.call_tool("m2_task", {"task": "make the failing tests pass"}, read_timeout_seconds=60)
        listed = await client.call_tool("m2_task", {"task": "again", "background": True}, read_timeout_seconds=60)
    assert result.is_error and listed.is_error
    text = result.content[0].text
    assert "cannot reach the model endpoint" in text and "127.0.0.1:9" in text and "\n" not in text.strip()
    assert not marker.exists()
