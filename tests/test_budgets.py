"""Every tool's output stays within the configured token budget, with a marker saying how to see more."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_repo
from m2_mcp.repo import Repo
from m2_mcp.tools import registry

pytestmark = pytest.mark.anyio
BUDGET_TOKENS = 1000
LIMIT = BUDGET_TOKENS * 4 * 1.5  # chars: the text budget plus room for the result's own fields


@pytest.fixture
def big_repo(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("M2_MCP_OUTPUT_TOKENS", str(BUDGET_TOKENS))
    files = {f"pkg/mod_{i:03d}.py": "".join(f"def func_{i}_{j}(x):\n    return needle + x  # {j}\n" for j in range(40))
             for i in range(60)}
    files["big.txt"] = "".join(f"line {i} with some text to make it long enough\n" for i in range(5000))
    files["tests/test_many.py"] = "".join(f"def test_{i}():\n    assert {i} == -1, 'x' * 200\n\n" for i in range(80))
    repo = make_repo(tmp_path / "big", files)
    for i in range(200):
        (repo / f"untracked_{i:03d}.txt").write_text("new\n")
    (repo / "big.txt").write_text("changed\n" * 5000)
    return repo


CALLS = [
    ("read_file", {"path": "big.txt"}),
    ("search", {"pattern": "needle", "max_results": 500}),
    ("search", {"pattern": "needle", "context": 5, "max_results": 500}),
    ("find_files", {"pattern": "*"}),
    ("shell", {"command": "seq 1 200000"}),
    ("shell", {"command": "seq 1 200000 >&2"}),
    ("run_tests", {}),
    ("git_status", {}),
    ("git_diff", {}),
    ("repo_map", {"max_tokens": BUDGET_TOKENS}),
    ("edit_file", {"path": "pkg/mod_000.py", "old_string": "needle", "new_string": "pin", "replace_all": True}),
    ("multi_edit", {"edits": [{"path": f"pkg/mod_{i:03d}.py", "old_string": "needle", "new_string": "pin",
                               "replace_all": True} for i in range(1, 30)]}),
    ("write_file", {"path": "out.txt", "content": "x\n" * 100000}),
    ("apply_patch", {"patch": "".join(f"diff --git a/new_{i:04d}.txt b/new_{i:04d}.txt\nnew file mode 100644\n"
                                      f"--- /dev/null\n+++ b/new_{i:04d}.txt\n@@ -0,0 +1 @@\n+x\n" for i in range(1000))}),
]


@pytest.mark.parametrize("name,args", CALLS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CALLS)])
async def test_tool_output_respects_the_budget(big_repo: Path, name: str, args: dict):
    result = await registry.call(Repo(big_repo), name, args)
    size = len(json.dumps(result, ensure_ascii=False))
    assert size <= LIMIT, f"{name} returned {size} chars"


def test_every_tool_is_covered():
    assert {name for name, _ in CALLS} == set(registry.load_all())
