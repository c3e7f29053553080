"""`m2-mcp doctor` against the M2 stand-in (parser on / off), a closed port, and real local tools."""

from __future__ import annotations

import json
import socket

import pytest

from conftest import make_repo, run_cli
from standin import start_standin

SECRET = "sk-doctor-secret-never-printed"
CALL = {"name": "get_time", "arguments": {"timezone": "UTC"}}


def _scenario(tool_parser: bool, think: str | None) -> dict:
    turn = {"text": "", "tool_calls": [CALL], **({"think": think} if think else {})}
    return {"tool_parser": tool_parser, "scripts": [{"turns": [turn], "repeat_last": True}]}


@pytest.fixture(scope="module")
def good_m2(tmp_path_factory):
    with start_standin(_scenario(True, "The check wants the time."), tmp_path_factory.mktemp("good")) as m2:
        yield m2


@pytest.fixture(scope="module")
def raw_xml_m2(tmp_path_factory):
    with start_standin(_scenario(False, None), tmp_path_factory.mktemp("xml")) as m2:
        yield m2


def _doctor(*args: str, repo=None):
    extra = ["--repo", str(repo)] if repo else []
    return run_cli("doctor", *args, *extra, env={"M2_API_KEY": SECRET, "M2_BASE_URL": "", "M2_MODEL": ""})


def _lines(stdout: str) -> dict[str, str]:
    """check name -> its line (fix lines attached)."""
    checks: dict[str, str] = {}
    name = None
    for line in stdout.splitlines()[1:]:
        if line.startswith("  fix: ") and name:
            checks[name] += "\n" + line
        else:
            name = line[2:14].strip()
            checks[name] = line
    return checks


def test_all_green_against_a_well_configured_server(good_m2, git_repo):
    out = _doctor("--base-url", good_m2.base_url, repo=git_repo)
    assert out.returncode == 0, out.stdout + out.stderr
    checks = _lines(out.stdout)
    for name in ("endpoint", "model", "tool call", "tool parser", "thinking", "git", "ripgrep", "tests",
                 "sandbox", "repo"):
        assert checks[name].startswith("✓ "), checks
    assert "clean" in checks["repo"] and "get_time" in checks["tool call"]
    assert SECRET not in out.stdout + out.stderr
    sent = good_m2.requests()[-1]
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_time"]


def test_json_output(good_m2, tmp_path):
    repo = make_repo(tmp_path / "dirty", {"a.py": "x = 1\n"})
    (repo / "a.py").write_text("x = 2\n")
    out = _doctor("--base-url", good_m2.base_url, "--json", repo=repo)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True and report["exit_code"] == 0
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["tool parser"]["status"] == "ok"
    assert "1 uncommitted change" in by_name["repo"]["detail"]
    assert SECRET not in out.stdout


def test_closed_port_is_unreachable_with_a_fix(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends
    out = _doctor("--base-url", f"http://127.0.0.1:{port}/v1", "--timeout", "2", repo=tmp_path)
    assert out.returncode == 3, out.stdout + out.stderr
    checks = _lines(out.stdout)
    assert checks["endpoint"].startswith("✗ ") and "fix: start the model (m2-mcp model serve)" in checks["endpoint"]
    assert checks["tool call"].startswith("- ")
    assert checks["repo"].startswith("! ") and "not a git repository" in checks["repo"]  # optional: a warning
    assert "Traceback" not in out.stderr


def test_raw_xml_means_the_tool_parser_is_off(raw_xml_m2, git_repo):
    out = _doctor("--base-url", raw_xml_m2.base_url, repo=git_repo)
    assert out.returncode == 1, out.stdout + out.stderr
    checks = _lines(out.stdout)
    assert checks["tool call"].startswith("✓ ")  # m2-mcp still reads the XML
    assert checks["tool parser"].startswith("✗ ") and "raw <minimax:tool_call> XML" in checks["tool parser"]
    assert "--enable-auto-tool-choice --tool-call-parser minimax_m2" in checks["tool parser"]
    # M2 always thinks: none at all is a misconfigured server; without /version the parser for the
    # newest tested vLLM is suggested
    assert checks["thinking"].startswith("✗ ") and "--reasoning-parser minimax_m2 " in checks["thinking"]


def test_unknown_model_names_the_served_one(good_m2, git_repo):
    out = _doctor("--base-url", good_m2.base_url, "--model", "nope", repo=git_repo)
    assert out.returncode == 1
    checks = _lines(out.stdout)
    assert checks["model"].startswith("✗ ") and f"fix: pass --model {good_m2.model}" in checks["model"]


def test_the_repos_own_python_is_probed_inside_the_sandbox(tmp_path):
    """A `.venv/bin/python` in the repo is a file whoever could write the repo chose: doctor runs it
    the way run_tests does, sandboxed, so it cannot touch anything outside the repo."""
    import subprocess
    import sys

    repo = tmp_path / "repo"
    (repo / ".venv" / "bin").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    marker = tmp_path / "escaped"
    python = repo / ".venv" / "bin" / "python"
    python.write_text(f"#!/bin/sh\nid > {marker}\nexec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    out = _doctor("--base-url", "http://127.0.0.1:9/v1", repo=repo)
    checks = _lines(out.stdout)
    assert checks["tests"].startswith("✓ ") and str(python) in checks["tests"] and "pytest" in checks["tests"]
    assert not marker.exists(), "doctor ran the repo's interpreter outside the sandbox"
