"""The `search` tool: real ripgrep and the pure-Python fallback over a real git repo."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_repo
from m2_mcp import rg
from m2_mcp.errors import ToolError
from m2_mcp.repo import Repo
from m2_mcp.tools import registry

pytestmark = pytest.mark.anyio

APP = """\
import os


def foo(x):
    return x + 1


class Foo:
    def bar(self):
        return foo.bar(2)  # FOO marker
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    root = make_repo(
        tmp_path_factory.mktemp("search") / "repo",
        {
            "src/app.py": APP,
            "src/util.js": "function foo() { return 'needle'; }\n",
            "src/deep/more.py": "value = 42  # needle\n",
            "docs/readme.md": "Use foo to do things.\n",
            ".github/ci.yml": "run: needle\n",
            ".gitignore": "build/\n*.log\n",
            "big.py": "".join(f"needle = {i}\n" for i in range(300)),
        },
    )
    (root / "build").mkdir()
    (root / "build" / "out.py").write_text("SECRET_IGNORED = 1\n")
    (root / "debug.log").write_text("SECRET_IGNORED\n")
    (root / "data.bin").write_bytes(b"\0\1needle\0SECRET_BINARY\n")
    (root / "untracked.py").write_text("needle_untracked = True\n")
    outside = root.parent / "outside.txt"
    outside.write_text("SECRET_OUTSIDE\n")
    (root / "link.txt").symlink_to(outside)
    return Repo(root)


@pytest.fixture(params=["rg", "python"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with real ripgrep and again with the pure-Python fallback."""
    if request.param == "python":
        monkeypatch.setenv("M2_MCP_RG", "none")
    else:
        monkeypatch.delenv("M2_MCP_RG", raising=False)
        assert rg.find_rg(), "ripgrep must be installed for these tests"
    rg.find_rg.cache_clear()
    yield request.param
    rg.find_rg.cache_clear()


async def search(repo: Repo, **args) -> dict:
    return await registry.call(repo, "search", args)


def where(result: dict) -> list[tuple[str, int]]:
    return [(m["path"], m["line"]) for m in result["matches"]]


async def test_regex_finds_lines_with_paths_and_numbers(repo: Repo, engine: str) -> None:
    result = await search(repo, pattern=r"def \w+\(")
    assert where(result) == [("src/app.py", 4), ("src/app.py", 9)]
    assert result["matches"][0]["text"] == "def foo(x):"
    assert result["total_matches"] == 2 and result["files"] == 1 and not result["truncated"]


async def test_literal_and_bad_regex(repo: Repo, engine: str) -> None:
    result = await search(repo, pattern="foo.bar(", literal=True)
    assert where(result) == [("src/app.py", 10)]
    with pytest.raises(ToolError, match="regex parse error") as info:
        await search(repo, pattern="foo.bar(")
    assert "\n" not in str(info.value)


async def test_case_sensitivity(repo: Repo, engine: str) -> None:
    assert where(await search(repo, pattern="FOO")) == [("src/app.py", 10)]
    insensitive = await search(repo, pattern="FOO", case_sensitive=False, glob="*.py")
    assert where(insensitive) == [("src/app.py", 4), ("src/app.py", 8), ("src/app.py", 10)]


async def test_glob_and_path_narrow_the_search(repo: Repo, engine: str) -> None:
    assert [m["path"] for m in (await search(repo, pattern="needle", glob="*.js"))["matches"]] == ["src/util.js"]
    assert where(await search(repo, pattern="needle", glob="src/**/*.py")) == [("src/deep/more.py", 1)]
    excluded = await search(repo, pattern="needle", glob="!*.py")
    assert {m["path"] for m in excluded["matches"]} == {".github/ci.yml", "src/util.js"}
    assert where(await search(repo, pattern="needle", path="src/deep")) == [("src/deep/more.py", 1)]
    assert where(await search(repo, pattern="needle", path="src/util.js")) == [("src/util.js", 1)]


async def test_context_lines(repo: Repo, engine: str) -> None:
    result = await search(repo, pattern="^class", context=2)
    (match,) = result["matches"]
    assert match["line"] == 8
    assert match["before"] == ["", ""]
    assert match["after"] == ["    def bar(self):", "        return foo.bar(2)  # FOO marker"]
    top = (await search(repo, pattern="^import", context=3))["matches"][0]
    assert top["before"] == [] and top["after"] == ["", "", "def foo(x):"]


async def test_gitignore_binary_and_git_dir_are_skipped(repo: Repo, engine: str) -> None:
    assert (await search(repo, pattern="SECRET_IGNORED"))["matches"] == []
    assert (await search(repo, pattern="SECRET_BINARY"))["total_matches"] == 0
    assert (await search(repo, pattern="repositoryformatversion"))["matches"] == []  # lives in .git/config
    assert (await search(repo, pattern="SECRET_OUTSIDE"))["matches"] == []  # behind a symlink out of the repo
    assert where(await search(repo, pattern="needle_untracked")) == [("untracked.py", 1)]
    with pytest.raises(ToolError, match=".git"):
        await search(repo, pattern="core", path=".git")
    with pytest.raises(ToolError, match="outside"):
        await search(repo, pattern="x", path="..")


async def test_no_match_is_an_empty_result(repo: Repo, engine: str) -> None:
    result = await search(repo, pattern="zzz_not_here_zzz")
    assert result == {"matches": [], "total_matches": 0, "files": 0, "truncated": False, "note": None}


async def test_max_results_caps_matches_but_reports_the_real_total(repo: Repo, engine: str, monkeypatch) -> None:
    monkeypatch.setenv("M2_MCP_OUTPUT_TOKENS", "100000")  # 304 matches' JSON is over the default budget
    result = await search(repo, pattern="needle", max_results=10)
    assert len(result["matches"]) == 10
    assert result["total_matches"] == 304 and result["files"] == 5
    assert result["truncated"] and "max_results" in result["note"] and "304" in result["note"]
    everything = await search(repo, pattern="needle", max_results=100_000)
    assert len(everything["matches"]) == 304 and not everything["truncated"]
    capped = await search(repo, pattern="needle = ", max_results=100_000, glob="big.py")
    assert len(capped["matches"]) == 300


async def test_max_results_is_capped_at_500(tmp_path: Path, engine: str, monkeypatch) -> None:
    monkeypatch.setenv("M2_MCP_OUTPUT_TOKENS", "100000")  # 500 matches' JSON is over the default budget
    root = make_repo(tmp_path / "r", {"many.txt": "hit\n" * 600})
    result = await search(Repo(root), pattern="hit", max_results=10_000)
    assert len(result["matches"]) == 500 and result["total_matches"] == 600 and result["truncated"]


async def test_output_budget_limits_matches(repo: Repo, engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M2_MCP_OUTPUT_TOKENS", "500")  # 2000 characters
    result = await search(repo, pattern="needle", max_results=500)
    assert 0 < len(result["matches"]) < 100
    assert result["truncated"] and "output budget" in result["note"]


QUERIES = [
    {"pattern": "needle"},
    {"pattern": "foo", "case_sensitive": False, "context": 1},
    {"pattern": r"^\s+return", "context": 2},
    {"pattern": "foo.bar(", "literal": True},
    {"pattern": "[[:digit:]]{2}", "glob": "*.py"},
    {"pattern": r"(?<word>nee)dle", "path": "src"},
    {"pattern": r"\bneedle\b", "glob": "!big.py"},
    {"pattern": "o", "glob": "*.{md,yml}"},
    {"pattern": "needle", "glob": "!deep"},
    {"pattern": "needle", "glob": "src/**"},
    {"pattern": "needle", "glob": "/src/*.js"},
]


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: q["pattern"])
async def test_fallback_matches_ripgrep(repo: Repo, query: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("M2_MCP_RG", raising=False)
    rg.find_rg.cache_clear()
    with_rg = await search(repo, max_results=500, **query)
    monkeypatch.setenv("M2_MCP_RG", "none")
    rg.find_rg.cache_clear()
    without = await search(repo, max_results=500, **query)
    rg.find_rg.cache_clear()
    assert with_rg["total_matches"] > 0
    assert without == with_rg


async def test_a_huge_line_hides_no_match(tmp_path: Path, engine: str) -> None:
    """A 600 KB minified line is more than rg's JSON fits in the capture: every match is still shown."""
    root = make_repo(tmp_path / "big", {"a.min.js": "x" * 600_000 + "needle\n", "b.py": "needle = 1\n"})
    result = await search(Repo(root), pattern="needle")
    assert where(result) == [("a.min.js", 1), ("b.py", 1)]
    assert result["total_matches"] == 2 and result["files"] == 2
    assert len(result["matches"][0]["text"]) < 1000 and result["matches"][1]["text"] == "needle = 1"
