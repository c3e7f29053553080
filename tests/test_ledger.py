"""The run ledger (m2_mcp/ledger.py) and `m2-mcp runs`, against real SQLite files and the real CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from m2_mcp import ledger
from tests.conftest import run_cli

TODAY = date.today()


def at(days_ago: int, hour: int = 12) -> float:
    """A timestamp at `hour` local time, `days_ago` days before today."""
    return datetime.combine(TODAY - timedelta(days=days_ago), datetime.min.time()).replace(hour=hour).timestamp()


def result(status: str, prompt: int = 0, completion: int = 0, cost: float = 0.0, steps: int = 1, **extra) -> dict:
    return {"status": status, "steps": steps, "tool_calls": steps * 2, "branch": extra.pop("branch", None),
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "cost_usd": cost},
            "summary": "done", **extra}


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    home = tmp_path / "m2home"
    monkeypatch.setenv("M2_MCP_HOME", str(home))
    return home


def test_record_and_list(home: Path, tmp_path: Path):
    repo_a, repo_b = tmp_path / "a", tmp_path / "b"
    first = ledger.record_run(result("failed", 100, 10, 0.01), task="fix a", repo=str(repo_a), source="cli",
                              started_at=at(1), duration_s=12.5)
    second = ledger.record_run(result("fixed", 200, 20, 0.02, branch="m2/x", files_changed=["calc.py"]),
                               task="fix b", repo=str(repo_b), source="mcp", started_at=at(0), duration_s=3)
    assert (home / "runs.sqlite").is_file()

    runs = ledger.list_runs()
    assert [r["id"] for r in runs] == [second, first]  # newest first
    assert runs[0] == {
        "id": second, "started_at": at(0), "repo": str(repo_b.resolve()), "task": "fix b", "status": "fixed",
        "steps": 1, "tool_calls": 2, "prompt_tokens": 200, "completion_tokens": 20, "cost_usd": 0.02,
        "duration_s": 3.0, "branch": "m2/x", "source": "mcp",
    }
    assert [r["id"] for r in ledger.list_runs(repo=str(repo_a))] == [first]
    assert [r["id"] for r in ledger.list_runs(limit=1)] == [second]
    full = ledger.list_runs(with_result=True)[0]["result"]
    assert full["files_changed"] == ["calc.py"] and full["usage"]["cost_usd"] == 0.02
    assert ledger.record_run({}, task="t", repo=".", source="cli", started_at=at(0), duration_s=0, run_id="r-mine") == "r-mine"
    assert ledger.list_runs()[0]["status"] == "error"  # a result without status counts as an error
    with pytest.raises(ValueError):
        ledger.record_run({}, task="t", repo=".", source="web", started_at=at(0), duration_s=0)


def test_summary_over_several_days(home: Path):
    rows = [  # (days ago, status, prompt, completion, cost)
        (0, "fixed", 1000, 100, 0.10), (0, "failed", 500, 50, 0.05), (0, "already_passing", 10, 1, 0.001),
        (2, "fixed", 2000, 200, 0.20), (2, "budget_exhausted", 3000, 300, 0.30),
        (6, "error", 0, 0, 0.0), (7, "fixed", 9999, 999, 9.99),  # 7 days ago is outside a 7-day window
    ]
    for days_ago, status, prompt, completion, cost in rows:
        ledger.record_run(result(status, prompt, completion, cost), task="t", repo=".", source="cli",
                          started_at=at(days_ago), duration_s=1)

    report = ledger.summary(days=7)
    day = lambda n: (TODAY - timedelta(days=n)).isoformat()  # noqa: E731
    assert report["since"] == day(6)
    assert [d["day"] for d in report["days"]] == [day(6), day(2), day(0)]
    today = report["days"][-1]
    assert today == report["today"]
    assert today == {"day": day(0), "runs": 3, "fixed": 1, "already_passing": 1, "success_rate": 0.667,
                     "prompt_tokens": 1510, "completion_tokens": 151, "cost_usd": pytest.approx(0.151)}
    assert report["days"][1]["success_rate"] == 0.5 and report["days"][0]["success_rate"] == 0.0
    totals = report["totals"]
    assert (totals["runs"], totals["fixed"], totals["already_passing"]) == (6, 2, 1)
    assert totals["success_rate"] == 0.5
    assert (totals["prompt_tokens"], totals["completion_tokens"]) == (6510, 651)
    assert totals["cost_usd"] == pytest.approx(0.651)

    assert ledger.summary(days=1)["totals"]["runs"] == 3
    assert ledger.summary(days=8)["totals"]["runs"] == 7


def test_empty_and_schema_version(home: Path):
    assert ledger.list_runs() == []
    assert ledger.summary()["totals"]["runs"] == 0
    assert not (home / "runs.sqlite").exists()  # reading does not create the ledger
    ledger.record_run(result("fixed"), task="t", repo=".", source="cli", started_at=at(0), duration_s=1)
    with sqlite3.connect(home / "runs.sqlite") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == ledger.SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


WRITER = """
import sys, time
from m2_mcp import ledger
for i in range(int(sys.argv[1])):
    ledger.record_run({"status": "fixed", "usage": {"prompt_tokens": 1, "cost_usd": 0.001}},
                      task=f"{sys.argv[2]}-{i}", repo=".", source="cli", started_at=time.time(), duration_s=0)
"""


def test_concurrent_writers(home: Path):
    """Two processes create the ledger and write to it at the same time; no row is lost."""
    env = {"M2_MCP_HOME": str(home), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, "60", name], env={**os.environ, **env},
                              stderr=subprocess.PIPE, text=True) for name in ("p1", "p2")]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    runs = ledger.list_runs(limit=1000)
    assert len(runs) == 120 and len({r["id"] for r in runs}) == 120
    assert {r["task"] for r in runs} == {f"{n}-{i}" for n in ("p1", "p2") for i in range(60)}
    assert ledger.summary(days=1)["today"]["prompt_tokens"] == 120


# --- the CLI -------------------------------------------------------------------------------------------


def cli(home: Path, *args: str):
    return run_cli("runs", *args, env={"M2_MCP_HOME": str(home)})


def test_cli_empty_ledger(tmp_path: Path):
    home = tmp_path / "empty"
    for args in ([], ["--summary"], ["--summary", "--budget-usd", "0"]):
        proc = cli(home, *args)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("No runs") and "Traceback" not in proc.stderr
    assert json.loads(cli(home, "--json").stdout) == []


def test_cli_lists_runs(home: Path, tmp_path: Path):
    repo = tmp_path / "proj"
    repo.mkdir()
    ledger.record_run(result("failed", 1500, 200, 0.0123, steps=7), task="older task", repo=str(tmp_path),
                      source="cli", started_at=at(1), duration_s=65)
    ledger.record_run(result("fixed", 12000, 800, 0.5, steps=4, branch="m2/autofix-1"),
                      task="make the failing tests pass " * 5, repo=str(repo), source="mcp", started_at=at(0),
                      duration_s=9)

    proc = cli(home)
    assert proc.returncode == 0, proc.stderr
    header, newest, older = proc.stdout.splitlines()
    assert header.split() == ["WHEN", "STATUS", "STEPS", "TOKENS", "COST", "TIME", "BRANCH", "TASK"]
    assert newest.split()[2:9] == ["fixed", "4", "12.8k", "$0.5000", "9s", "m2/autofix-1", "make"]
    assert newest.endswith("…") and len(newest) < 160  # long task text is cut
    assert older.split()[2:8] == ["failed", "7", "1.7k", "$0.0123", "1m05s", "-"]

    data = json.loads(cli(home, "--json", "--limit", "1").stdout)
    assert len(data) == 1 and data[0]["status"] == "fixed" and data[0]["result"]["usage"]["cost_usd"] == 0.5

    only = json.loads(cli(home, "--json", "--repo", str(repo)).stdout)
    assert [r["repo"] for r in only] == [str(repo.resolve())]

    bad = cli(home, "--limit", "0")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--limit" in bad.stderr


def test_cli_summary_and_budget(home: Path):
    ledger.record_run(result("fixed", 1000, 100, 0.30), task="t", repo=".", source="cli", started_at=at(0),
                      duration_s=1)
    ledger.record_run(result("failed", 1000, 100, 0.20), task="t", repo=".", source="cli", started_at=at(0),
                      duration_s=1)
    ledger.record_run(result("fixed", 1000, 100, 5.00), task="t", repo=".", source="cli", started_at=at(3),
                      duration_s=1)

    proc = cli(home, "--summary", "--days", "7")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["DAY", "RUNS", "FIXED", "SUCCESS", "PROMPT", "COMPLETION", "COST"]
    assert lines[-2].split() == [TODAY.isoformat(), "2", "1", "50%", "2.0k", "200", "$0.5000"]
    assert lines[-1].split()[-5:] == ["2", "67%", "3.0k", "300", "$5.5000"] and lines[-1].startswith("total")

    report = json.loads(cli(home, "--summary", "--json").stdout)
    assert report["today"]["cost_usd"] == pytest.approx(0.5) and report["totals"]["runs"] == 3

    under = cli(home, "--summary", "--budget-usd", "0.75")  # today's $0.50 is within budget
    assert under.returncode == 0 and under.stderr == ""
    over = cli(home, "--summary", "--budget-usd", "0.40")
    assert over.returncode == 1
    assert over.stderr.splitlines() == ["m2-mcp: budget exceeded: today's cost $0.5000 > budget $0.4000"]
    assert cli(home, "--budget-usd", "0.40").returncode == 1  # --budget-usd implies --summary
    assert cli(home, "--summary", "--days", "0").returncode == 2

