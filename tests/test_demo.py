"""`m2-mcp demo`: the real `fix` against the shipped scenario and the scripted stand-in, end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import run_cli


def test_demo_fixes_its_bug_and_says_the_model_is_a_stand_in(tmp_path: Path):
    home = tmp_path / "home"
    proc = run_cli("demo", env={"M2_MCP_HOME": str(home)}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert "SCRIPTED STAND-IN" in lines[0] and "MiniMax-M2" in lines[0]
    # the real fix's progress lines, against the local stand-in
    assert re.search(r"via http://127\.0\.0\.1:\d+/v1 \(scripted-stand-in\)", proc.stderr)
    assert "running the tests before the run:" in proc.stderr and "[step 2/10] edit_file" in proc.stderr
    diff = proc.stdout.split("the agent's diff:\n", 1)[1].split("\n\nresult:", 1)[0]
    assert "-    return subtotal - discount" in diff and "+    return round(subtotal * (1 - discount), 2)" in diff
    assert "result: fixed (tests before: 2 passed, 1 failed; after: 3 passed, 0 failed;" in proc.stdout
    # the temporary repo is gone, and the demo left no run in the user's ledger
    repo = Path(re.search(r"^buggy repo: (\S+)", proc.stdout, re.M).group(1))
    assert not repo.exists()
    runs = run_cli("runs", "--json", env={"M2_MCP_HOME": str(home)})
    assert json.loads(runs.stdout) == []
