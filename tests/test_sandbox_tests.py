"""`run_tests` in the sandbox: arguments cannot point pytest outside the repo, a real suite still runs,
and secret values are redacted from results, log lines and the ledger."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import anyio
import pytest

from _mcp import connect, error_text, stdio_params
from conftest import make_repo
from m2_mcp import ledger
from m2_mcp.errors import ToolError
from m2_mcp.repo import Repo
from m2_mcp.tools import testing

SUITE = {
    "calc.py": "def add(a, b):\n    return a + b\n",
    "tests/test_calc.py": (
        "import tempfile\nfrom calc import add\n\n\n"
        "def test_add(tmp_path):\n    (tmp_path / 'f.txt').write_text('x')\n    assert add(2, 3) == 5\n\n\n"
        "def test_tempfile():\n    with tempfile.NamedTemporaryFile() as f:\n        f.write(b'x')\n"
    ),
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", SUITE)


def run(root: Path, args: list[str]):
    return anyio.run(testing.run_test_command, Repo(root), args)


@pytest.mark.parametrize("args", [
    ["--basetemp=/tmp/outside"], ["--basetemp", "/tmp/outside"], ["--basetemp=."], ["--rootdir=/"],
    ["-c", "/etc/pytest.ini"], ["-c/etc/pytest.ini"], ["--config-file=../x.ini"], ["--confcutdir", "/"],
    ["--junitxml=/tmp/out.xml"], ["--log-file", "../log.txt"], ["--result-log=/tmp/r.log"], ["--debug=/tmp/d.log"],
    ["-p", "/tmp/evil.py"], ["-p../evil"], ["-o", "cache_dir=/tmp/cache"], ["--override-ini=log_file=/tmp/l"],
    ["-o", "addopts=--basetemp=/tmp/x"], ["/etc"], ["../other/test_x.py::test_y"], [".git/hooks"],
    ["--cov-report=html:/tmp/html"], ["@/etc/passwd"], ["@args.txt"],
])
def test_args_pointing_outside_are_refused(repo: Path, args: list[str]) -> None:
    with pytest.raises(ToolError) as info:
        run(repo, args)
    assert "\n" not in str(info.value) and str(info.value).startswith("refused run_tests argument")


def test_args_inside_the_repo_run(repo: Path) -> None:
    done = run(repo, ["tests/test_calc.py::test_add", "-k", "add", "--basetemp=pytmp", "-p", "no:warnings",
                      "-o", "cache_dir=.cache", "--junitxml", "build/junit.xml"])
    assert (done.passed, done.failed, done.exit_code) == (1, 0, 0), done.output
    assert (repo / "build" / "junit.xml").exists() and (repo / "pytmp").is_dir()


def test_a_projects_suite_runs_inside_the_sandbox(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pytest's cache and bytecode written into the repo, tmp_path and tempfile used
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    done = anyio.run(testing.run_test_command, Repo(repo), None)
    assert (done.passed, done.failed, done.errors, done.exit_code) == (2, 0, 0, 0), done.output
    assert done.note is None
    assert (repo / ".pytest_cache").is_dir() and list(repo.rglob("__pycache__/*.pyc"))


def test_run_tests_refusal_through_the_server(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep\n")

    async def main() -> None:
        async with connect(stdio_params(repo), mode="legacy") as client:
            result = await client.call_tool("run_tests", {"args": [f"--basetemp={outside}"]})
            assert result.is_error and "refused run_tests argument" in error_text(result)
            assert "\n" not in error_text(result).strip()
            ok = await client.call_tool("run_tests", {"args": ["tests/test_calc.py"]})
            assert not ok.is_error and ok.structured_content["passed"] == 2, error_text(ok)

    anyio.run(main)
    assert (outside / "keep.txt").read_text() == "keep\n"


SECRET = "sk-ledger-secret-0123456789"


def test_redacted_in_run_tests_output(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M2_API_KEY", SECRET)
    (repo / "tests" / "test_leak.py").write_text(f"def test_leak():\n    assert '{SECRET}' == ''\n")
    done = run(repo, ["tests/test_leak.py"])
    assert done.failed == 1 and SECRET not in done.model_dump_json() and "[redacted]" in done.output


def test_redacted_in_the_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)
    result = {"status": "fixed", "diff": f"+token = '{SECRET}'\n", "errors": [f"saw {SECRET}"], "usage": {}}
    path = tmp_path / "ledger.db"
    ledger.record_run(result, task=f"use {SECRET}", repo=str(tmp_path), source="cli", started_at=0, duration_s=1,
                      path=path)
    [row] = ledger.list_runs(with_result=True, path=path)
    assert SECRET not in json.dumps(row) and "[redacted]" in json.dumps(row)


def test_redacted_in_log_lines(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from m2_mcp.commands.serve import setup_logging

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    saved = logging.getLogger().handlers[:], logging.getLogger().level
    try:
        setup_logging(debug=False)
        try:
            raise RuntimeError(f"endpoint said {SECRET}")
        except RuntimeError:
            logging.getLogger("m2_mcp.test").exception("call failed with key %s", SECRET)
    finally:
        logging.getLogger().handlers[:], _ = saved
        logging.getLogger().setLevel(saved[1])
    err = capfd.readouterr().err
    assert "call failed with key [redacted]" in err and "endpoint said [redacted]" in err and SECRET not in err


def test_redacted_in_results_and_the_task_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The section-5 result (fix stdout, m2_task) and background task records on disk carry no secret values."""
    from m2_mcp.agent.result import RunResult
    from m2_mcp.taskstore import TaskStore

    monkeypatch.setenv("GITHUB_TOKEN", SECRET)
    result = RunResult(status="failed", diff=f"+key = '{SECRET}'\n", errors=[f"saw {SECRET}"], summary=SECRET)
    dumped = result.model_dump_json()
    assert SECRET not in dumped and dumped.count("[redacted]") == 3
    store = TaskStore(tmp_path / "tasks")
    record = store.create(tmp_path, f"use {SECRET}")
    store.update(record["id"], result=result.model_dump(mode="json") | {"summary": f"done {SECRET}"})
    on_disk = (tmp_path / "tasks" / f"{record['id']}.json").read_text()
    assert SECRET not in on_disk and "use [redacted]" in on_disk and "done [redacted]" in on_disk


@pytest.mark.parametrize("name, secret", [
    ("M2_API_KEY", True), ("GITHUB_TOKEN", True), ("AWS_PROFILE", True), ("MYSQL_PWD", True), ("DB_PASS", True),
    ("SENTRY_DSN", True), ("CI_JOB_JWT", True), ("DB_PASSWORD", True), ("PATH", False), ("PWD", False),
    ("OLDPWD", False), ("HOME", False), ("LANG", False), ("PYTHONPATH", False), ("CI_JOB_ID", False),
])
def test_which_variables_are_secret(name: str, secret: bool) -> None:
    from m2_mcp.redact import is_secret

    assert is_secret(name) is secret
