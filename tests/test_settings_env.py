"""Numeric settings from the environment (m2_mcp/envcheck.py): a bad value is one usage error naming
the variable when `serve` or `fix` starts (before any test run), and a ✗ line in `doctor`."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_repo, run_cli
from m2_mcp.envcheck import number
from m2_mcp.errors import UsageError


@pytest.mark.parametrize("name, raw, value", [
    ("M2_MCP_OUTPUT_TOKENS", "2000", 2000), ("M2_MCP_TASK_TIMEOUT", "0.5", 0.5), ("M2_PRICE_IN", "0", 0.0),
    ("M2_MCP_MAX_TASKS", "", 7), ("M2_MCP_CHECKPOINTS_MAX_DAYS", " 3 ", 3.0),
])
def test_good_values_and_the_default(name: str, raw: str, value: float):
    assert number(name, 7, {name: raw}) == value


@pytest.mark.parametrize("name, raw", [
    ("M2_MCP_OUTPUT_TOKENS", "abc"), ("M2_MCP_OUTPUT_TOKENS", "1.5"), ("M2_MCP_MAX_TASKS", "0"),
    ("M2_MCP_TASK_TIMEOUT", "0"), ("M2_MCP_TASK_TIMEOUT", "nan"), ("M2_PRICE_OUT", "inf"), ("M2_PRICE_IN", "-1"),
])
def test_bad_values_are_usage_errors_naming_the_variable(name: str, raw: str):
    with pytest.raises(UsageError, match=f"^{name} must be .*, not '{raw}'$"):
        number(name, 7, {name: raw})


def test_serve_fix_and_doctor_say_so_before_any_work(tmp_path: Path):
    repo = make_repo(tmp_path / "repo", {"calc.py": "X = 1\n", "tests/test_calc.py": "def test_x():\n    pass\n"})
    served = run_cli("serve", "--repo", str(repo), env={"M2_MCP_OUTPUT_TOKENS": "lots"})
    assert served.returncode == 2 and served.stderr.splitlines() == [
        "m2-mcp: error: M2_MCP_OUTPUT_TOKENS must be a whole number at least 1, not 'lots'"]
    fixed = run_cli("fix", "--repo", str(repo), "--base-url", "http://127.0.0.1:9/v1",
                    env={"M2_MCP_CHECKPOINTS_KEEP": "0"})
    assert fixed.returncode == 2 and "M2_MCP_CHECKPOINTS_KEEP must be" in fixed.stderr
    assert "running the tests" not in fixed.stderr and fixed.stdout == ""
    doctor = run_cli("doctor", "--repo", str(repo), "--base-url", "http://127.0.0.1:9/v1",
                     env={"M2_MCP_MAX_TASKS": "x"})
    [line] = [line for line in doctor.stdout.splitlines() if line[2:].startswith("settings")]
    assert line.startswith("✗ settings") and "M2_MCP_MAX_TASKS" in line
