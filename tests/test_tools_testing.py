"""The `run_tests` tool: real pytest runs in a real temp repo, parsed into counts and failures."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from conftest import none_left
from m2_mcp.repo import Repo
from m2_mcp.tools import registry, testing

FILES = {
    "calc.py": "def add(a, b):\n    return a - b\n",
    "tests/test_calc.py": """\
import pytest
from calc import add


def test_one():
    assert 1 + 1 == 2


def test_two():
    assert True


def test_add():
    assert add(2, 3) == 5


@pytest.fixture
def broken():
    raise RuntimeError("fixture exploded")


def test_uses_broken(broken):
    pass


@pytest.mark.skip(reason="not today")
def test_skipped():
    pass


@pytest.mark.xfail
def test_expected_to_fail():
    assert 0
""",
    "tests/test_imports.py": "import no_such_module_xyz\n\n\ndef test_never():\n    pass\n",
}


@pytest.fixture(scope="module", autouse=True)
def fast_pytest():
    """Skip third-party plugin autoload in the child pytest runs (hypothesis alone costs ~0.5 s each)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        yield


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    root = tmp_path_factory.mktemp("testing") / "repo"
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return Repo(root)


@pytest.fixture(scope="module")
def full_run(repo: Repo) -> dict:
    """One run over everything, past the import error (one extra pytest arg)."""
    return anyio.run(registry.call, repo, "run_tests", {"args": ["--continue-on-collection-errors"]})


def test_counts_and_exit_code(full_run: dict) -> None:
    assert (full_run["passed"], full_run["failed"], full_run["errors"], full_run["skipped"]) == (2, 1, 2, 2)
    assert full_run["exit_code"] == 1 and full_run["timed_out"] is False
    assert full_run["summary"].startswith("1 failed, 2 passed, 1 skipped, 1 xfailed, 2 errors in ")
    # `python` is the interpreter m2_mcp.tools.pyenv picked (here: this virtualenv's or PATH's), by full path
    python, rest = full_run["command"].split(" ", 1)
    assert os.path.isabs(python) and rest == "-m pytest -q --continue-on-collection-errors"
    assert "short test summary info" in full_run["output"]


def test_failures_have_ids_locations_and_messages(full_run: dict) -> None:
    by_id = {f["test_id"]: f for f in full_run["failures"]}
    assert set(by_id) == {
        "tests/test_calc.py::test_add", "tests/test_calc.py::test_uses_broken", "tests/test_imports.py"
    }
    assert by_id["tests/test_calc.py::test_add"] == {
        "test_id": "tests/test_calc.py::test_add", "kind": "failed",
        "location": "tests/test_calc.py:14", "message": "assert -1 == 5",
    }
    fixture = by_id["tests/test_calc.py::test_uses_broken"]
    assert fixture["kind"] == "error" and fixture["location"] == "tests/test_calc.py:19"
    assert fixture["message"] == "RuntimeError: fixture exploded"
    imports = by_id["tests/test_imports.py"]
    assert imports["kind"] == "error" and imports["location"] == "tests/test_imports.py:1"
    assert "No module named 'no_such_module_xyz'" in imports["message"]


def test_counts_and_signature_for_the_agent(repo: Repo, full_run: dict) -> None:
    run = testing.TestRun.model_validate(full_run)
    counts = testing.TestCounts.of(run)
    assert counts.model_dump() == {"passed": 2, "failed": 1, "errors": 2, "skipped": 2, "exit_code": 1}
    again = anyio.run(testing.run_test_command, repo, ["--continue-on-collection-errors"])
    assert testing.failure_signature(again) == testing.failure_signature(run)  # timings differ, it does not
    assert "tests/test_calc.py::test_add: assert -1 == 5" in testing.failure_signature(run)
    fewer = anyio.run(testing.run_test_command, repo, ["tests/test_calc.py", "-k", "not broken"])
    assert fewer.failed == 1 and fewer.errors == 0
    assert testing.failure_signature(fewer) != testing.failure_signature(run)


def test_import_error_stops_a_default_run(repo: Repo) -> None:
    run = anyio.run(testing.run_test_command, repo)
    assert (run.passed, run.failed, run.errors, run.skipped) == (0, 0, 1, 0)
    assert run.exit_code == 2
    assert [f.test_id for f in run.failures] == ["tests/test_imports.py"]


def test_args_are_quoted_and_a_passing_run_is_clean(repo: Repo) -> None:
    run = anyio.run(testing.run_test_command, repo, ["tests/test_calc.py", "-k", "test_one or test_two"])
    assert (run.passed, run.failed, run.errors, run.exit_code) == (2, 0, 0, 0)
    assert run.failures == [] and run.note is None


def test_no_tests_ran(repo: Repo) -> None:
    run = anyio.run(testing.run_test_command, repo, ["tests/test_calc.py", "-k", "nothing_matches_this"])
    assert run.exit_code == 5 and (run.passed, run.failed, run.errors) == (0, 0, 0)
    assert "no tests ran" in run.note


def test_hanging_test_command_times_out_and_is_killed(tmp_path: Path) -> None:
    marker = f"30{os.getpid():07d}"  # `sleep 30NNNNNNN`: unique to this test process
    repo = Repo(tmp_path, test_cmd=f"touch started; sleep {marker}")
    run = anyio.run(testing.run_test_command, repo, None, 1)
    assert run.timed_out and run.exit_code is None and "timed out" in run.note
    assert (tmp_path / "started").exists() and none_left(marker)  # the sandbox's PID namespace is gone
    assert testing.TestCounts.of(run).exit_code is None


def test_non_pytest_commands(tmp_path: Path) -> None:
    plain = anyio.run(testing.run_test_command, Repo(tmp_path, test_cmd="echo 'ran: 3 passed, 1 failed'; exit 1"))
    assert (plain.passed, plain.failed, plain.exit_code) == (3, 1, 1)
    opaque = anyio.run(testing.run_test_command, Repo(tmp_path, test_cmd="echo something broke; exit 2"))
    assert (opaque.passed, opaque.failed, opaque.errors, opaque.exit_code) == (0, 0, 0, 2)
    assert opaque.summary is None and "something broke" in opaque.output


def test_verbose_summary_line_folds_xpassed_and_ignores_warnings() -> None:
    run = testing.parse_output("stuff\n===== 1 failed, 2 passed, 1 xpassed, 3 warnings in 1.50s =====\n")
    assert (run.passed, run.failed, run.errors, run.skipped) == (3, 1, 0, 0)
    assert run.summary == "1 failed, 2 passed, 1 xpassed, 3 warnings in 1.50s"


def test_registered_for_the_agent() -> None:
    spec = registry.load_all()["run_tests"]
    assert spec.for_agent and list(spec.input_schema()["properties"]) == ["args", "timeout"]
