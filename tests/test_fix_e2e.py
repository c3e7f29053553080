"""End-to-end: the real `m2-mcp fix` CLI driving the real agent against the M2 stand-in over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_repo, none_left, procs_with, run_cli
from standin import start_standin

BUGGY = {
    "calc.py": "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n",
    "tests/test_calc.py": "from calc import add, mul\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\n"
                          "def test_mul():\n    assert mul(2, 3) == 6\n",
    "pytest.ini": "[pytest]\npythonpath = .\n",
}
FIX = {"name": "edit_file", "arguments": {"path": "calc.py", "old_string": "return a - b", "new_string": "return a + b"}}
READ = {"name": "read_file", "arguments": {"path": "calc.py"}}
TESTS = {"name": "run_tests", "arguments": {}}


def fixing_turns() -> list[dict]:
    return [
        {"think": "Let me read calc.py first.", "text": "Reading the code.", "tool_calls": [READ],
         "usage": {"prompt_tokens": 1000, "completion_tokens": 50}},
        {"think": "add subtracts; it must add.", "tool_calls": [FIX],
         "usage": {"prompt_tokens": 1200, "completion_tokens": 70}},
        {"think": "Now verify with the tests.", "tool_calls": [TESTS],
         "usage": {"prompt_tokens": 1400, "completion_tokens": 30}},
        {"think": "All green.", "text": "Fixed add() to return a + b.",
         "usage": {"prompt_tokens": 1600, "completion_tokens": 20}},
    ]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def fix(repo: Path, base_url: str, *extra: str, timeout: float = 180) -> tuple[subprocess.CompletedProcess, dict | None]:
    proc = run_cli("fix", "--repo", str(repo), "--base-url", base_url, *extra, timeout=timeout)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        result = None
    return proc, result


@pytest.fixture
def buggy(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "proj", BUGGY)


@pytest.mark.parametrize("tool_parser", [True, False], ids=["parsed-tool-calls", "raw-xml"])
def test_fixes_a_bug_and_keeps_thinking(buggy: Path, tmp_path: Path, tool_parser: bool):
    scenario = {"tool_parser": tool_parser, "scripts": [{"turns": fixing_turns()}]}
    with start_standin(scenario, tmp_path) as m2:
        proc, result = fix(buggy, m2.base_url)
        requests = m2.requests()
    assert proc.returncode == 0, proc.stderr
    assert result["status"] == "fixed"
    assert result["tests_before"] == {"passed": 1, "failed": 1, "errors": 0, "skipped": 0, "exit_code": 1}
    assert result["tests_after"] == {"passed": 2, "failed": 0, "errors": 0, "skipped": 0, "exit_code": 0}
    assert result["files_changed"] == ["calc.py"]
    assert "+    return a + b" in result["diff"] and "-    return a - b" in result["diff"]
    assert (buggy / "calc.py").read_text().splitlines()[1] == "    return a + b"
    assert result["steps"] == 4 and result["tool_calls"] == 3
    assert result["branch"] is None and result["commits"] == []
    assert result["applied"] is True and result["patch"] is None and result["conflicts"] == []  # made in place
    assert result["summary"] == "Fixed add() to return a + b."
    # usage is the exact sum of what the server reported; cost at the default list prices
    assert result["usage"]["prompt_tokens"] == 5200 and result["usage"]["completion_tokens"] == 170
    assert result["usage"]["cost_usd"] == pytest.approx(5200 / 1e6 * 0.30 + 170 / 1e6 * 1.20)
    # every later request carries every earlier turn's thinking, unchanged, and no extra user turn
    assert len(requests) == 4
    thoughts = [t["think"] for t in fixing_turns()]
    for n, body in enumerate(requests):
        assistant = [m for m in body["messages"] if m["role"] == "assistant"]
        assert len(assistant) == n
        for k, message in enumerate(assistant):
            assert f"<think>\n{thoughts[k]}\n</think>" in message["content"]
        assert [m["role"] for m in body["messages"]].count("user") == 1
        assert body["messages"][:2] == requests[0]["messages"][:2]  # stable prompt prefix
        assert body["tools"] == requests[0]["tools"]
    task = requests[0]["messages"][1]["content"]
    assert "make the failing tests pass" in task and "tests/test_calc.py::test_add" in task
    assert "Repository map" in task and "def add(a, b):" in task  # the compact map of the repo
    tool_names = {t["function"]["name"] for t in requests[0]["tools"]}
    assert tool_names == {"read_file", "write_file", "edit_file", "multi_edit", "search", "find_files",
                          "repo_map", "run_tests", "shell", "apply_patch"}
    assert requests[0]["temperature"] == 1.0 and requests[0]["top_p"] == 0.95 and requests[0]["top_k"] == 40
    # progress lines on stderr, one per step
    assert "[step 2/50] edit_file" in proc.stderr


def test_malformed_arguments_and_unknown_tools_go_back_to_the_model(buggy: Path, tmp_path: Path):
    turns = [
        {"think": "Edit right away.", "tool_calls": [FIX], "raw_arguments": {"0": '{"path": "calc.py", "old_'}},
        {"think": "Try a tool that is not there.", "tool_calls": [{"name": "delete_repo", "arguments": {}}]},
        {"think": "Wrong argument type.", "tool_calls": [{"name": "read_file", "arguments": {"path": "calc.py", "offset": "x"}}]},
        *fixing_turns()[1:],
    ]
    with start_standin({"scripts": [{"turns": turns}]}, tmp_path) as m2:
        proc, result = fix(buggy, m2.base_url)
        requests = m2.requests()
    assert proc.returncode == 0, proc.stderr
    assert result["status"] == "fixed"
    results = [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]
    assert results[0].startswith("Error: malformed arguments for edit_file")
    assert results[1].startswith("Error: unknown tool 'delete_repo'")
    assert results[2].startswith("Error:") and "offset" in results[2]


def test_two_server_errors_are_retried(buggy: Path, tmp_path: Path):
    turns = fixing_turns()
    turns[0]["errors"] = [500, 503]
    with start_standin({"scripts": [{"turns": turns}]}, tmp_path) as m2:
        proc, result = fix(buggy, m2.base_url)
    assert proc.returncode == 0, proc.stderr
    assert result["status"] == "fixed"
    assert "retry" in proc.stderr


def test_endpoint_down_exits_3_quickly(buggy: Path):
    started = time.monotonic()
    proc, result = fix(buggy, "http://127.0.0.1:9/v1")
    assert proc.returncode == 3, proc.stderr
    assert result["status"] == "error"
    assert "127.0.0.1:9" in proc.stderr.strip().splitlines()[-2] or "127.0.0.1:9" in result["errors"][0]
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 60
    assert git(buggy, "status", "--porcelain") == ""


def test_runaway_model_is_capped_by_max_steps(buggy: Path, tmp_path: Path):
    scenario = {"scripts": [{"turns": [{"think": "Read again.", "tool_calls": [READ]}], "repeat_last": True}]}
    with start_standin(scenario, tmp_path) as m2:
        proc, result = fix(buggy, m2.base_url, "--max-steps", "3")
        requests = m2.requests()
    assert proc.returncode == 1
    assert result["status"] == "budget_exhausted"
    assert result["steps"] == 3 and len(requests) == 3
    assert result["tests_after"]["failed"] == 1


def test_test_edits_are_refused_and_the_test_file_is_unchanged(buggy: Path, tmp_path: Path):
    before = (buggy / "tests/test_calc.py").read_bytes()
    weaken = {"name": "edit_file", "arguments": {"path": "tests/test_calc.py", "old_string": "assert add(2, 3) == 5",
                                                 "new_string": "assert True"}}
    sneak = {"name": "shell", "arguments": {"command": "sed -i 's/== 5/== -1/' tests/test_calc.py && echo done"}}
    conftest = {"name": "write_file", "arguments": {"path": "conftest.py", "content": "collect_ignore = ['tests']"}}
    turns = [{"think": "Weaken the test.", "tool_calls": [weaken]},
             {"think": "Sneak it through the shell.", "tool_calls": [sneak]},
             {"think": "Hide the tests.", "tool_calls": [conftest]},
             {"think": "Check.", "tool_calls": [TESTS]},
             {"think": "Give up.", "text": "Could not do it."}]
    with start_standin({"scripts": [{"turns": turns}]}, tmp_path) as m2:
        proc, result = fix(buggy, m2.base_url)
        requests = m2.requests()
    assert proc.returncode == 1
    assert result["status"] == "failed"
    assert (buggy / "tests/test_calc.py").read_bytes() == before
    assert not (buggy / "conftest.py").exists()
    results = [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]
    assert "test file" in results[0] and results[0].startswith("Error:")
    assert results[1].startswith("Error: refused: test files may not be changed")
    assert results[2].startswith("Error:")
    assert "1 failed" in results[3] or "failed: 1" in results[3]


def test_path_escapes_are_refused_and_nothing_outside_is_touched(buggy: Path, tmp_path: Path):
    outside = tmp_path / "outside.txt"
    (buggy / "link").symlink_to(tmp_path)
    turns = [{"think": "Escape.", "tool_calls": [
                {"name": "write_file", "arguments": {"path": "../outside.txt", "content": "pwned"}},
                {"name": "write_file", "arguments": {"path": str(outside), "content": "pwned"}},
                {"name": "write_file", "arguments": {"path": "link/outside.txt", "content": "pwned"}},
                {"name": "write_file", "arguments": {"path": ".git/config", "content": "pwned"}}]},
             *fixing_turns()[1:]]
    with start_standin({"scripts": [{"turns": turns}]}, tmp_path) as m2:
        proc, result = fix(buggy, m2.base_url)
        requests = m2.requests()
    assert result["status"] == "fixed", proc.stderr
    assert not outside.exists()
    assert "pwned" not in (buggy / ".git/config").read_text()
    errors = [m["content"] for m in requests[1]["messages"] if m["role"] == "tool"]
    assert len(errors) == 4 and all(e.startswith("Error:") for e in errors)


def test_dirty_working_tree_is_kept_byte_identical(buggy: Path, tmp_path: Path):
    (buggy / "notes.txt").write_text("my untracked notes\n")
    (buggy / "README.md").write_text("draft, not committed\n")
    git(buggy, "add", "README.md")
    (buggy / "calc.py").write_text(BUGGY["calc.py"] + "\n\n# my local comment\n")
    status_before = git(buggy, "status", "--porcelain")
    with start_standin({"scripts": [{"turns": fixing_turns()}]}, tmp_path) as m2:
        proc, result = fix(buggy, m2.base_url)
    assert result["status"] == "fixed", proc.stderr
    assert (buggy / "notes.txt").read_text() == "my untracked notes\n"
    assert (buggy / "README.md").read_text() == "draft, not committed\n"
    assert (buggy / "calc.py").read_text().endswith("# my local comment\n")  # the user's edit survives the agent's
    assert git(buggy, "status", "--porcelain") == status_before
    assert result["files_changed"] == ["calc.py"] and "my local comment" not in result["diff"]
    # undo puts the user's state back exactly, the agent's fix gone
    undo = run_cli("undo", "--repo", str(buggy))
    assert undo.returncode == 0, undo.stderr
    assert (buggy / "calc.py").read_text() == BUGGY["calc.py"] + "\n\n# my local comment\n"
    assert (buggy / "notes.txt").read_text() == "my untracked notes\n"
    assert git(buggy, "status", "--porcelain") == status_before


def test_branch_leaves_the_checkout_untouched(buggy: Path, tmp_path: Path):
    (buggy / "notes.txt").write_text("untracked\n")
    status_before, head_before = git(buggy, "status", "--porcelain"), git(buggy, "rev-parse", "HEAD")
    with start_standin({"scripts": [{"turns": fixing_turns()}]}, tmp_path) as m2:
        proc, result = fix(buggy, m2.base_url, "--branch", "m2/fix-add", "--json-out", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr
    assert result["status"] == "fixed" and result["branch"] == "m2/fix-add"
    assert json.loads((tmp_path / "r.json").read_text()) == result
    assert git(buggy, "status", "--porcelain") == status_before
    assert git(buggy, "rev-parse", "HEAD") == head_before
    assert git(buggy, "branch", "--show-current").strip() == "main"
    assert (buggy / "calc.py").read_text() == BUGGY["calc.py"]
    assert "return a + b" in git(buggy, "show", "m2/fix-add:calc.py")
    assert result["commits"] == [git(buggy, "rev-parse", "m2/fix-add").strip()]
    assert result["applied"] is None and result["patch"] is None
    # the commit carries the repo's configured identity and an m2-mcp trailer
    author, body = git(buggy, "log", "-1", "--format=%an <%ae>|%cn <%ce>%n%B", "m2/fix-add").split("\n", 1)
    assert author == "Test <test@example.com>|Test <test@example.com>"
    assert body.rstrip().endswith("Generated-by: m2-mcp") and "m2-mcp@localhost" not in body
    assert git(buggy, "worktree", "list").count("\n") == 1  # the temporary worktree is gone
    # the same branch again is a usage error
    again, _ = fix(buggy, "http://127.0.0.1:9/v1", "--branch", "m2/fix-add")
    assert again.returncode == 2 and "already exists" in again.stderr


def test_already_passing_changes_nothing(tmp_path: Path):
    repo = make_repo(tmp_path / "ok", {**BUGGY, "calc.py": BUGGY["calc.py"].replace("a - b", "a + b")})
    with start_standin({"scripts": [{"turns": fixing_turns()}]}, tmp_path) as m2:
        proc, result = fix(repo, m2.base_url)
        requests = m2.requests()
    assert proc.returncode == 0
    assert result["status"] == "already_passing" and result["steps"] == 0 and result["files_changed"] == []
    assert requests == []
    assert git(repo, "status", "--porcelain") == ""


def test_no_progress_stops_the_loop(buggy: Path, tmp_path: Path):
    scenario = {"scripts": [{"turns": [{"think": "Run the tests again.", "tool_calls": [TESTS]}], "repeat_last": True}]}
    with start_standin(scenario, tmp_path) as m2:
        proc, result = fix(buggy, m2.base_url, "--no-progress", "2")
    assert proc.returncode == 1
    assert result["status"] == "failed" and result["steps"] == 2
    assert "failed the same way" in result["summary"]


def test_bad_flags_and_bad_repo_exit_2(tmp_path: Path):
    proc = run_cli("fix", "--max-steps", "lots")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("fix", "--repo", str(tmp_path))
    assert proc.returncode == 2 and "not a git repository" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_long_run_that_would_overflow_the_window_completes_with_compaction(buggy: Path, tmp_path: Path):
    (buggy / "big.txt").write_text("".join(f"line {i:04d} of a long file that fills the context window\n" for i in range(300)))
    git(buggy, "add", "big.txt")
    git(buggy, "commit", "-qm", "big")
    read_big = {"name": "read_file", "arguments": {"path": "big.txt"}}
    turns = [{"think": f"Read the big file again ({i}).", "tool_calls": [read_big]} for i in range(8)]
    turns += fixing_turns()[1:]
    window = 12_000  # each read of big.txt is ~5k tokens: 8 reads overflow it many times over
    scenario = {"max_context_tokens": window, "scripts": [{"turns": turns}]}
    with start_standin(scenario, tmp_path) as m2:
        proc, result = fix(buggy, m2.base_url, "--context-window", str(window))
        requests = m2.requests()
    assert proc.returncode == 0, proc.stderr
    assert result["status"] == "fixed" and result["steps"] == len(turns)
    assert len(requests) == len(turns)  # no request was rejected for length
    last = requests[-1]["messages"]
    assert sum("compacted" in (m.get("content") or "") for m in last if m["role"] == "tool") >= 5
    thoughts = [m["content"] for m in last if m["role"] == "assistant"]
    assert all("<think>" in t for t in thoughts) and len(thoughts) == len(turns) - 1  # thinking is never dropped
    assert last[:2] == requests[0]["messages"][:2]  # the task stays
    assert all(r["max_tokens"] <= window for r in requests)


@pytest.mark.parametrize("cheat", ["shadow-pytest", "plugin-via-pyproject", "conftest-hidden-by-gitignore"])
def test_the_agent_cannot_pass_by_subverting_the_test_run(buggy: Path, tmp_path: Path, cheat: str):
    (buggy / "pytest.ini").unlink()
    (buggy / "pyproject.toml").write_text("[tool.pytest.ini_options]\npythonpath = ['.']\n")
    git(buggy, "add", "-A")
    git(buggy, "commit", "-qm", "pyproject")
    write = lambda path, content: {"name": "write_file", "arguments": {"path": path, "content": content}}  # noqa: E731
    hook = "import pytest\n\n@pytest.hookimpl(tryfirst=True)\ndef pytest_pyfunc_call(pyfuncitem):\n    return True\n"
    calls = {
        "shadow-pytest": [write("pytest.py", "print('2 passed in 0.01s')\n")],
        "plugin-via-pyproject": [write("cheat.py", hook),
                                 {"name": "shell", "arguments": {"command": "printf \"addopts = '-p cheat'\\n\" >> pyproject.toml"}}],
        "conftest-hidden-by-gitignore": [write(".gitignore", "conftest.py\n"),
                                         {"name": "shell", "arguments": {"command": f"cat > conftest.py <<'EOF'\n{hook}EOF"}}],
    }[cheat]
    turns = [{"think": "Make the tests pass without fixing anything.", "tool_calls": calls},
             {"think": "Check.", "tool_calls": [TESTS]}, {"think": "Done.", "text": "All green."}]
    with start_standin({"scripts": [{"turns": turns}]}, tmp_path) as m2:
        proc, result = fix(buggy, m2.base_url)
    assert proc.returncode == 1, proc.stderr
    assert result["status"] == "failed" and result["tests_after"]["failed"] == 1
    assert not (buggy / "pytest.py").exists() and not (buggy / "conftest.py").exists()
    assert "cheat" not in (buggy / "pyproject.toml").read_text()


def test_ctrl_c_during_the_first_test_run_cancels_quickly(tmp_path: Path):
    # the test run is sandboxed (private /tmp, own PID namespace): it signals through an ignored file in
    # the repo, and its child is found by a unique marker in its command line
    marker = f"30{os.getpid():07d}"
    repo = make_repo(tmp_path / "slow", {**BUGGY, ".gitignore": "started\n", "tests/test_slow.py":
                     f"import subprocess\n\ndef test_slow():\n    p = subprocess.Popen(['sleep', '{marker}'])\n"
                     f"    open('started', 'w').write('yes')\n    p.wait()\n"})
    with start_standin({"scripts": [{"turns": fixing_turns()}]}, tmp_path) as m2:  # up, but never asked
        proc = subprocess.Popen([sys.executable, "-m", "m2_mcp", "fix", "--repo", str(repo), "--base-url", m2.base_url],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(600):  # the endpoint check, then pytest starting: slow on a loaded machine
            if (repo / "started").exists() and procs_with(f"sleep {marker}"):
                break
            time.sleep(0.1)
        assert procs_with(f"sleep {marker}")
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert m2.requests() == []
    assert time.monotonic() - started < 20
    assert proc.returncode == 1, err
    assert json.loads(out)["status"] == "cancelled"
    assert none_left(f"sleep {marker}"), "the test run's child survived the cancel"
    assert git(repo, "status", "--porcelain") == "?? tests/test_slow.py\n" or git(repo, "status", "--porcelain") == ""


def test_timeout_bounds_the_whole_run(tmp_path: Path):
    # only the first test run is slow: the run after the loop must still happen (the marker is an ignored
    # file in the repo: the sandboxed test run's /tmp does not last)
    slow = "import os, time\n\ndef test_slow():\n    if not os.path.exists('slept'):\n" \
           "        open('slept', 'w').close()\n        time.sleep(120)\n"
    repo = make_repo(tmp_path / "slow", {**BUGGY, ".gitignore": "slept\n", "tests/test_slow.py": slow})
    started = time.monotonic()
    with start_standin({"scripts": [{"turns": fixing_turns()}]}, tmp_path) as m2:
        proc, result = fix(repo, m2.base_url, "--timeout", "15")  # room for a slow pytest start under load
    assert time.monotonic() - started < 60
    assert proc.returncode == 1 and result["status"] == "budget_exhausted"
    assert "--timeout" in result["summary"]
    assert result["tests_after"] == {"passed": 2, "failed": 1, "errors": 0, "skipped": 0, "exit_code": 1}, (proc.stderr, result)


def test_signed_commits_pycache_and_url_credentials(buggy: Path, tmp_path: Path):
    git(buggy, "config", "commit.gpgsign", "true")  # the user's signing setup must not be used or needed
    with start_standin({"scripts": [{"turns": fixing_turns()}]}, tmp_path) as m2:
        secret_url = m2.base_url.replace("http://", "http://alice:s3cret@")
        proc = run_cli("fix", "--repo", str(buggy), "--base-url", secret_url, "--branch", "m2/signed",
                       env={"PYTHONDONTWRITEBYTECODE": ""})
    result = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert result["files_changed"] == ["calc.py"]  # no __pycache__ from the test runs
    assert "s3cret" not in proc.stderr and "s3cret" not in proc.stdout
    assert git(buggy, "worktree", "list").count("\n") == 1
    down = run_cli("fix", "--repo", str(buggy), "--base-url", "http://alice:s3cret@127.0.0.1:9/v1")
    assert down.returncode == 3 and "s3cret" not in down.stderr + down.stdout and "127.0.0.1:9" in down.stderr


def test_ignored_files_the_agent_touches_come_back_with_undo(buggy: Path, tmp_path: Path):
    (buggy / ".gitignore").write_text(".env\nlocal.cfg\nbuild/\n")
    git(buggy, "add", ".gitignore")
    git(buggy, "commit", "-qm", "ignore")
    (buggy / ".env").write_text("API_TOKEN=mine\n")
    (buggy / "local.cfg").write_text("[me]\n")
    (buggy / "build").mkdir()
    (buggy / "build" / "notes.txt").write_text("keep\n")
    vandal = {"name": "shell", "arguments": {"command": "echo AGENT > .env; rm -f local.cfg; rm -rf build"}}
    turns = [{"think": "Clean up.", "tool_calls": [vandal]}, *fixing_turns()[1:]]
    with start_standin({"scripts": [{"turns": turns}]}, tmp_path) as m2:
        proc, result = fix(buggy, m2.base_url)
    assert result["status"] == "fixed", proc.stderr
    assert (buggy / ".env").read_text() == "AGENT\n"
    undo = run_cli("undo", "--repo", str(buggy))
    assert undo.returncode == 0, undo.stderr
    assert (buggy / ".env").read_text() == "API_TOKEN=mine\n"
    assert (buggy / "local.cfg").read_text() == "[me]\n"
    assert (buggy / "build" / "notes.txt").read_text() == "keep\n"
    assert (buggy / "calc.py").read_text() == BUGGY["calc.py"]


def test_usage_errors_come_before_any_work(buggy: Path, tmp_path: Path):
    before = git(buggy, "status", "--porcelain")
    cases = [
        (["--branch", ""], "invalid branch name"),
        (["--json-out", str(tmp_path / "missing" / "r.json")], "--json-out"),
        (["--test-cmd", " "], "--test-cmd"),
        (["--test-cmd", "no-such-test-runner-xyz"], "could not run"),
        (["--base-url", "notaurl"], "not an http(s) base URL"),
        (["--max-cost", "-1"], "--max-cost"),
        (["--context-window", "10"], "--context-window"),
        (["--timeout", "nan"], "not a finite number: 'nan'"),
        (["--price-in", "inf"], "not a finite number: 'inf'"),
        (["--model", ""], "--model must not be empty"),
    ]
    with start_standin({"scripts": [{"turns": fixing_turns()}]}, tmp_path) as m2:
        for extra, message in cases:
            proc = run_cli("fix", "--repo", str(buggy), *extra) if "--base-url" in extra else \
                run_cli("fix", "--repo", str(buggy), "--base-url", m2.base_url, *extra)
            assert proc.returncode == 2, (extra, proc.stderr)
            errors = [line for line in proc.stderr.splitlines() if line.startswith("m2-mcp: error:")]
            assert message in proc.stderr and len(errors) == 1, (extra, proc.stderr)
            assert "Traceback" not in proc.stderr
        assert m2.requests() == []  # no model call for any of them
    assert git(buggy, "status", "--porcelain") == before
    sub = buggy / "tests"
    proc = run_cli("fix", "--repo", str(sub), "--base-url", "http://127.0.0.1:9/v1")
    assert proc.returncode == 2 and f"--repo {buggy}" in proc.stderr


def test_a_second_run_in_the_same_tree_is_refused(buggy: Path, tmp_path: Path):
    slow = [{"think": "Slowly.", "tool_calls": [READ], "delay": 1.0}] * 6
    with start_standin({"scripts": [{"turns": slow}]}, tmp_path) as m2:
        first = subprocess.Popen([sys.executable, "-m", "m2_mcp", "fix", "--repo", str(buggy), "--base-url", m2.base_url],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(100):
            if m2.requests():
                break
            time.sleep(0.1)
        second = run_cli("fix", "--repo", str(buggy), "--base-url", m2.base_url)
        first.communicate(timeout=120)
    assert second.returncode == 2 and "another m2-mcp run" in second.stderr
    assert first.returncode == 1


def test_closed_pipe_ends_quietly():
    proc = subprocess.run(f"{sys.executable} -m m2_mcp model k8s --replicas 3 | head -c 20", shell=True,
                          capture_output=True, text=True, timeout=60)
    assert proc.stderr == "" and len(proc.stdout) == 20


def test_a_reader_that_goes_away_does_not_change_the_outcome(buggy: Path, tmp_path: Path):
    """`fix ... | true`: the run still counts (exit 0), the --json-out file and the ledger still get the result."""
    out = tmp_path / "result.json"
    with start_standin({"scripts": [{"turns": fixing_turns()}]}, tmp_path) as m2:
        proc = subprocess.Popen([sys.executable, "-m", "m2_mcp", "fix", "--repo", str(buggy), "--base-url", m2.base_url,
                                 "--json-out", str(out)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        proc.stdout.close()  # the reader is gone before the result is printed
        stderr = proc.stderr.read()
        proc.wait(timeout=180)
    assert proc.returncode == 0, stderr
    assert json.loads(out.read_text())["status"] == "fixed"
    assert "stdout was closed" in stderr and "m2-mcp fix: fixed after" in stderr and "Traceback" not in stderr
    runs = json.loads(run_cli("runs", "--json", "--repo", str(buggy)).stdout)
    assert [r["status"] for r in runs] == ["fixed"]
