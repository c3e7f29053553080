"""The CI bot examples: the workflow files' structure, and examples/ci/m2-fix.sh run for real
against a temp git repo with a failing test, the real `m2-mcp fix` and the M2 stand-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from m2_mcp import ledger
from tests.conftest import make_repo
from tests.standin import start_standin

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SCRIPT = EXAMPLES / "ci" / "m2-fix.sh"


def test_github_actions_workflow():
    wf = yaml.safe_load((EXAMPLES / "github-actions" / "m2-autofix.yml").read_text())
    triggers = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as True
    assert triggers["workflow_run"]["types"] == ["completed"] and triggers["workflow_run"]["workflows"]
    assert "workflow_dispatch" in triggers
    assert wf["permissions"] == {"contents": "write", "pull-requests": "write"}

    job = wf["jobs"]["autofix"]
    assert "workflow_run.conclusion == 'failure'" in job["if"]
    assert "head_repository.full_name == github.repository" in job["if"]  # no secrets for fork code
    steps = job["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/checkout@") for u in uses)
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert "workflow_run.head_sha" in checkout["with"]["ref"]
    assert any(u.startswith("actions/setup-python@") for u in uses)
    assert any("pip install m2-mcp" in s.get("run", "") for s in steps)

    fix = next(s for s in steps if s.get("id") == "fix")
    assert "M2_FIX_SCRIPT" in fix["run"] and job["env"]["M2_FIX_SCRIPT"].endswith("m2-fix.sh")
    assert fix["env"]["M2_BASE_URL"] == "${{ secrets.M2_BASE_URL }}"
    assert fix["env"]["M2_API_KEY"] == "${{ secrets.M2_API_KEY }}"
    assert fix["env"]["M2_BRANCH"].startswith("m2/autofix-")
    secrets_elsewhere = [s for s in steps if s is not fix and "secrets." in json.dumps(s)]
    assert secrets_elsewhere == []  # the M2 key reaches only the fix step

    pr = next(s for s in steps if "gh pr create" in s.get("run", ""))
    assert pr["if"] == "steps.fix.outputs.push == 'true'"
    assert 'git push origin "$BRANCH"' in pr["run"] and "--body-file m2-summary.md" in pr["run"]
    assert pr["env"]["BRANCH"] == "${{ steps.fix.outputs.branch }}" and "GH_TOKEN" in pr["env"]


def test_gitlab_ci():
    ci = yaml.safe_load((EXAMPLES / "gitlab" / ".gitlab-ci.yml").read_text())
    assert ci["stages"] == ["test", "autofix"] and ci["test"]["stage"] == "test"
    job = ci["m2-autofix"]
    assert job["stage"] == "autofix"
    assert [r["when"] for r in job["rules"]] == ["on_failure"] and "m2\\/autofix-" in job["rules"][0]["if"]
    script = "\n".join(job["script"])
    assert "pip install m2-mcp" in script and "bash ci/m2-fix.sh" in script
    assert "m2-outcome.env" in script and '"$push" != true' in script
    assert 'git push "https://oauth2:${M2_GITLAB_TOKEN}@' in script
    assert "/merge_requests" in script and "PRIVATE-TOKEN: $M2_GITLAB_TOKEN" in script
    assert job["variables"]["M2_BRANCH"] == "m2/autofix-$CI_PIPELINE_ID" and job["variables"]["GIT_DEPTH"] == "0"
    assert set(job["artifacts"]["paths"]) == {"m2-result.json", "m2-summary.md"}


def test_ci_examples_use_the_contract_flags():
    text = SCRIPT.read_text()
    assert "fix --repo . --branch" in text and "--json-out" in text and "jq" not in text
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert os.access(SCRIPT, os.X_OK)


# --- the script, for real -------------------------------------------------------------------------------

BUGGY = {
    "calc.py": "def add(a, b):\n    return a - b\n",
    "tests/test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    "conftest.py": "",
}
FIX_SCENARIO = {"scripts": [{"turns": [
    {"think": "The test expects 5 from add(2, 3); calc.add subtracts.",
     "tool_calls": [{"name": "edit_file", "arguments": {"path": "calc.py", "old_string": "return a - b",
                                                         "new_string": "return a + b"}}]},
    {"think": "Edited; the test should pass now.", "text": "Fixed: add() returned a - b instead of a + b."},
]}]}
GIVE_UP_SCENARIO = {"scripts": [{"turns": [{"think": "I do not see the problem.", "text": "I could not fix it."}]}]}


def run_script(repo: Path, base_url: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "CI_", "M2_"))}
    full.update(M2_BASE_URL=base_url, M2_API_KEY="test-key-not-logged", M2_MCP_HOME=str(home),
                M2_MCP=f"{sys.executable} -m m2_mcp", GITHUB_OUTPUT=str(repo.parent / "gh-output"),
                GITHUB_RUN_ID="4242", M2_MAX_STEPS="6", M2_TIMEOUT="120", PYTHONPATH=str(ROOT), **env)
    return subprocess.run(["bash", str(SCRIPT)], cwd=repo, env=full, capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL)


def outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def test_script_fixes_and_writes_the_summary(tmp_path: Path):
    repo = make_repo(tmp_path / "proj", BUGGY)
    base = git(repo, "rev-parse", "HEAD").strip()
    with start_standin(FIX_SCENARIO, tmp_path) as m2:
        proc = run_script(repo, m2.base_url, tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    assert "test-key-not-logged" not in proc.stdout + proc.stderr

    out = outputs(repo / "m2-outcome.env")
    assert out == {"push": "true", "status": "fixed", "branch": "m2/autofix-4242"}
    assert outputs(tmp_path / "gh-output") == out  # the GitHub step outputs

    # The fix is committed on the branch; the checkout is left as it was.
    assert git(repo, "rev-parse", "HEAD").strip() == base
    assert "return a - b" in (repo / "calc.py").read_text()
    assert "return a + b" in git(repo, "show", "m2/autofix-4242:calc.py")
    assert git(repo, "diff", "--name-only", base, "m2/autofix-4242").split() == ["calc.py"]

    summary = (repo / "m2-summary.md").read_text()
    assert summary.startswith("## m2-mcp autofix: `fixed`")
    assert "| before | 0 | 1 | 0 | 0 |" in summary and "| after | 1 | 0 | 0 | 0 |" in summary
    assert "calc.py | 2 +-" in summary and "1 file changed" in summary
    assert "**tokens**" in summary and "**cost** $" in summary
    assert "Fixed: add() returned a - b instead of a + b." in summary
    assert summary in proc.stdout  # printed to the job log too
    result = json.loads((repo / "m2-result.json").read_text())
    assert result["status"] == "fixed" and result["branch"] == "m2/autofix-4242"

    home = tmp_path / "home"
    runs = ledger.list_runs(path=home / "runs.sqlite")
    assert [(r["status"], r["branch"], r["source"]) for r in runs] == [("fixed", "m2/autofix-4242", "cli")]


def test_script_not_fixed_prints_summary_but_no_push(tmp_path: Path):
    repo = make_repo(tmp_path / "proj", BUGGY)
    with start_standin(GIVE_UP_SCENARIO, tmp_path) as m2:
        proc = run_script(repo, m2.base_url, tmp_path / "home", M2_BRANCH="m2/try")
    assert proc.returncode == 0, proc.stderr  # not fixed is not a CI failure: there is just no PR
    out = outputs(repo / "m2-outcome.env")
    assert out["push"] == "false" and out["branch"] == "m2/try" and out["status"] in ("failed", "budget_exhausted")
    assert "tests are still failing" in proc.stderr
    summary = (repo / "m2-summary.md").read_text()
    assert summary.startswith(f"## m2-mcp autofix: `{out['status']}`") and "I could not fix it." in summary
    assert "(no changes)" in summary and summary in proc.stdout


@pytest.mark.parametrize("case", ["unreachable", "not_a_repo"])
def test_script_fails_the_job_on_errors(tmp_path: Path, case: str):
    if case == "not_a_repo":
        repo = tmp_path / "plain"
        repo.mkdir()
        proc = run_script(repo, "http://127.0.0.1:9/v1", tmp_path / "home")
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines()[-1] == "m2-fix: not inside a git repository"
        return
    repo = make_repo(tmp_path / "proj", BUGGY)
    proc = run_script(repo, "http://127.0.0.1:9/v1", tmp_path / "home")
    assert proc.returncode == 3, proc.stderr
    assert "m2-fix: error: the M2 endpoint is unreachable" in proc.stderr
    assert outputs(repo / "m2-outcome.env")["push"] == "false"
    assert "Traceback" not in proc.stderr
