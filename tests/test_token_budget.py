"""Budgets hold in real tokens: our estimate against a real BPE tokenizer (OpenAI's cl100k_base and
o200k_base, bundled offline by the `bpe-openai` test dependency), on the Python stdlib and its docs."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import anyio
import bpe_openai
import pytest

from conftest import make_repo
from m2_mcp.budget import estimate_tokens
from m2_mcp.repo import Repo
from m2_mcp.repomap import build_map
from m2_mcp.tools import registry

STDLIB = Path(sysconfig.get_path("stdlib"))
ENCODINGS = [bpe_openai.get_encoding(name) for name in ("cl100k_base", "o200k_base")]
SLACK = 1.10  # a budget may be exceeded by at most 10% in real tokens


def real_tokens(text: str) -> int:
    return max(len(e.encode(text)) for e in ENCODINGS)


def stdlib_code() -> list[Path]:
    files = sorted(p for p in STDLIB.rglob("*.py") if "site-packages" not in p.parts and p.stat().st_size > 300)
    return [p for p in files[::7] if p.name != "this.py"]  # this.py is rot13 text: random letters, not code


def test_estimate_is_never_more_than_10_percent_low_on_code_and_prose():
    from pydoc_data.topics import topics

    samples = [(str(p), p.read_text(encoding="utf-8", errors="replace")) for p in stdlib_code()]
    samples += [(f"docs:{name}", text) for name, text in topics.items() if len(text) > 300]
    ratios = {name: estimate_tokens(text) / real_tokens(text) for name, text in samples}
    low = {name: round(r, 3) for name, r in ratios.items() if r < 1 / SLACK}
    assert len(ratios) > 250 and low == {}
    assert sum(ratios.values()) / len(ratios) < 1.25  # conservative, not wasteful


def test_repo_map_max_tokens_holds_in_real_tokens(tmp_path: Path):
    for tree in ("email", "asyncio"):
        result = build_map(STDLIB / tree, max_tokens=1024, cache_dir=tmp_path / "cache")
        assert result.truncated and result.map
        assert 1024 * 0.6 < real_tokens(result.map) <= 1024 * SLACK, tree


@pytest.fixture
def big_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("M2_MCP_OUTPUT_TOKENS", "1000")
    repo = make_repo(tmp_path / "big", {"decimal.py": (STDLIB / "_pydecimal.py").read_text(),
                                        "numbers.txt": "".join(f"{i}\n" for i in range(100000))})
    shutil.copy(STDLIB / "typing.py", repo / "decimal.py")  # a big uncommitted change for git_diff
    return repo


@pytest.mark.parametrize("name, args, field", [
    ("read_file", {"path": "decimal.py", "limit": 100000}, "content"),
    ("read_file", {"path": "numbers.txt", "limit": 100000}, "content"),
    ("shell", {"command": "seq 1 200000"}, "stdout"),
    ("git_diff", {}, "diff"),
    ("repo_map", {"max_tokens": 1000}, "map"),
])
def test_tool_outputs_hold_the_output_budget_in_real_tokens(big_repo: Path, name: str, args: dict, field: str):
    result = anyio.run(registry.call, Repo(big_repo), name, args)
    text = result[field]
    # the budget is used, not just undershot (read_file keeps a part of it for the result's other fields)
    assert real_tokens(text) > 1000 * 0.45, (name, real_tokens(text))
    assert real_tokens(text) <= 1000 * SLACK, (name, real_tokens(text))
