"""The test command runs with the repo's own Python: its .venv, else the active virtualenv, else
python3/python on PATH, else the server's interpreter; `doctor` checks that command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from _mcp import connect, stdio_params
from conftest import make_repo, run_cli
from m2_mcp.errors import ToolError
from m2_mcp.repo import Repo
from m2_mcp.tools import registry

PREFIX_TEST = ("import os, sys\n\ndef test_prefix():\n"
               "    print('PREFIX', sys.prefix)\n    assert sys.prefix == os.environ['WANT_PREFIX']\n")


def bin_without_python(tmp_path: Path) -> Path:
    """A PATH directory with what the server needs (bash, git) and no python at all."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("bash", "sh", "git", "env"):
        os.symlink(shutil.which(name), bindir / name)
    return bindir


@pytest.mark.anyio
async def test_run_tests_works_with_no_python_on_path(tmp_path: Path):
    repo = make_repo(tmp_path / "proj", {"calc.py": "def add(a, b):\n    return a + b\n",
                                         "tests/test_calc.py": "from calc import add\n\ndef test_add():\n"
                                                               "    assert add(2, 3) == 5\n",
                                         "pytest.ini": "[pytest]\npythonpath = .\n"})
    path = str(bin_without_python(tmp_path))
    assert shutil.which("python", path=path) is None and shutil.which("python3", path=path) is None
    # The way an IDE starts it: the server by absolute path, no virtualenv, a bare PATH.
    env = {"PATH": path, "VIRTUAL_ENV": ""}
    async with connect(stdio_params(repo, env=env), mode="legacy") as client:
        result = await client.call_tool("run_tests", {}, read_timeout_seconds=120)
        missing = await client.call_tool("shell", {"command": "python --version"}, read_timeout_seconds=60)
    assert not result.is_error, result.content
    out = result.structured_content
    assert out["passed"] == 1 and out["exit_code"] == 0, out
    assert out["command"].split(" ", 1)[0] == sys.executable  # the server's own interpreter, the last resort
    assert missing.structured_content["exit_code"] == 127  # the bare `python` really is missing here


def test_the_repos_own_venv_runs_the_tests(tmp_path: Path):
    repo = make_repo(tmp_path / "proj", {"tests/test_prefix.py": PREFIX_TEST})
    venv = repo / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    run = anyio.run(registry.call, Repo(repo, env={"WANT_PREFIX": str(venv)}), "run_tests", {"args": ["-s"]})
    assert run["passed"] == 1 and run["exit_code"] == 0, run["output"]
    assert f"PREFIX {venv}" in run["output"]
    assert run["command"].startswith(f"{venv}/bin/python -m pytest")
    # doctor reports the same command, and that pytest is importable there
    doctor = run_cli("doctor", "--base-url", "http://127.0.0.1:9/v1", "--repo", str(repo))
    line = next(x for x in doctor.stdout.splitlines() if x[2:14].strip() == "tests")
    assert line.startswith("✓ ") and f"{venv}/bin/python -m pytest -q" in line and "pytest" in line


def test_a_missing_test_command_is_a_tool_error(tmp_path: Path):
    repo = make_repo(tmp_path / "proj", {"a.py": "x = 1\n"})
    with pytest.raises(ToolError) as caught:
        anyio.run(registry.call, Repo(repo, test_cmd="no-such-runner-xyz -q"), "run_tests", {})
    message = str(caught.value)
    assert "exit 127" in message and "no-such-runner-xyz" in message and "\n" not in message


def test_doctor_names_the_interpreter_that_will_run_the_tests(tmp_path: Path):
    plain = make_repo(tmp_path / "plain", {"a.py": "x = 1\n"})
    env = {"PATH": str(bin_without_python(tmp_path)), "VIRTUAL_ENV": ""}
    doctor = run_cli("doctor", "--base-url", "http://127.0.0.1:9/v1", "--repo", str(plain), "--json", env=env)
    check = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "tests")
    # no python on PATH: the server's interpreter (this one) runs the tests, and it has pytest
    assert check["status"] == "ok" and check["detail"].startswith(f"{sys.executable} -m pytest -q"), check

    bare = make_repo(tmp_path / "bare", {"a.py": "x = 1\n"})  # its own .venv, without pytest
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare / ".venv")], check=True)
    doctor = run_cli("doctor", "--base-url", "http://127.0.0.1:9/v1", "--repo", str(bare), "--json")
    check = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "tests")
    assert check["status"] == "warn" and f"pytest is not installed for {bare}/.venv/bin/python" in check["detail"]
