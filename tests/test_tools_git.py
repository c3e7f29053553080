"""`git_status` / `git_diff` on a real dirty git repo."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import make_repo
from m2_mcp.errors import ToolError
from m2_mcp.repo import Repo
from m2_mcp.tools import registry

pytestmark = pytest.mark.anyio


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Modified, staged, deleted (both ways), untracked and ignored files, all at once."""
    root = make_repo(
        tmp_path_factory.mktemp("git") / "repo",
        {
            "a.py": "a = 1\n",
            "b.py": "b = 1\n",
            "c.py": "c = 1\n",
            "d.py": "d = 1\n",
            "sub/e.py": "e = 1\n",
            ".gitignore": "*.log\nbuild/\n",
        },
    )
    (root / "a.py").write_text("a = 2\n")  # modified, unstaged
    (root / "b.py").write_text("b = 2\n")
    git(root, "add", "b.py")  # modified, staged
    (root / "c.py").unlink()  # deleted, unstaged
    git(root, "rm", "-q", "d.py")  # deleted, staged
    (root / "added.py").write_text("new = 1\n")
    git(root, "add", "added.py")  # new, staged
    (root / "sub" / "e.py").write_text("e = 2\n")
    (root / "new.py").write_text("untracked = 1\n")
    (root / "newdir").mkdir()
    (root / "newdir" / "x.py").write_text("x = 1\n")
    (root / "debug.log").write_text("ignored\n")
    (root / "build").mkdir()
    (root / "build" / "out.txt").write_text("ignored\n")
    return root


async def test_status_of_a_dirty_repo(dirty: Path) -> None:
    status = await registry.call(Repo(dirty), "git_status", {})
    assert status == {
        "branch": "main",
        "head": git(dirty, "rev-parse", "HEAD"),
        "detached": False,
        "staged": ["added.py", "b.py", "d.py"],
        "modified": ["a.py", "sub/e.py"],
        "deleted": ["c.py"],
        "untracked": ["new.py", "newdir/x.py"],
        "clean": False,
    }


async def test_status_limited_to_a_path_and_from_a_subdirectory_root(dirty: Path) -> None:
    only_sub = await registry.call(Repo(dirty), "git_status", {"path": "sub"})
    assert (only_sub["modified"], only_sub["staged"], only_sub["untracked"]) == (["sub/e.py"], [], [])
    inside = await registry.call(Repo(dirty / "sub"), "git_status", {})
    assert inside["modified"] == ["e.py"] and inside["staged"] == [] and inside["branch"] == "main"


async def test_clean_detached_and_unborn(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "clean", {"x.py": "x = 1\n"})
    status = await registry.call(Repo(root), "git_status", {})
    assert status["clean"] and status["branch"] == "main" and not status["detached"]
    git(root, "checkout", "-q", "--detach")
    detached = await registry.call(Repo(root), "git_status", {})
    assert detached["detached"] and detached["branch"] is None and detached["head"] == git(root, "rev-parse", "HEAD")
    empty = make_repo(tmp_path / "empty", {})
    (empty / "first.py").write_text("pass\n")
    unborn = await registry.call(Repo(empty), "git_status", {})
    assert unborn["head"] is None and unborn["branch"] == "main" and unborn["untracked"] == ["first.py"]


async def test_diff_unstaged_and_staged(dirty: Path) -> None:
    unstaged = await registry.call(Repo(dirty), "git_diff", {})
    assert unstaged["files"] == ["a.py", "c.py", "sub/e.py"]
    assert "-a = 1\n+a = 2\n" in unstaged["diff"] and "new.py" not in unstaged["diff"]
    assert not unstaged["truncated"] and unstaged["staged"] is False
    staged = await registry.call(Repo(dirty), "git_diff", {"staged": True})
    assert staged["files"] == ["added.py", "b.py", "d.py"]
    assert "+b = 2" in staged["diff"] and "+new = 1" in staged["diff"]
    one = await registry.call(Repo(dirty), "git_diff", {"path": "a.py"})
    assert one["files"] == ["a.py"] and "diff --git a/a.py b/a.py" in one["diff"]


async def test_big_diff_is_truncated_with_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_repo(tmp_path / "big", {"big.txt": "".join(f"line {i}\n" for i in range(2000))})
    (root / "big.txt").write_text("".join(f"changed {i}\n" for i in range(2000)))
    monkeypatch.setenv("M2_MCP_OUTPUT_TOKENS", "500")
    result = await registry.call(Repo(root), "git_diff", {})
    assert result["truncated"] and "path" in result["note"] and "truncated" in result["diff"]
    assert len(result["diff"]) < 3000 and result["files"] == ["big.txt"]


async def test_errors(tmp_path: Path, dirty: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(ToolError, match="not a git repository"):
        await registry.call(Repo(plain), "git_status", {})
    with pytest.raises(ToolError, match="not a git repository"):
        await registry.call(Repo(plain), "git_diff", {})
    with pytest.raises(ToolError, match="outside"):
        await registry.call(Repo(dirty), "git_diff", {"path": "../.."})
    with pytest.raises(ToolError, match="invalid arguments"):
        await registry.call(Repo(dirty), "git_status", {"staged": True})


def test_git_tools_are_mcp_only() -> None:
    tools = registry.load_all()
    assert not tools["git_status"].for_agent and not tools["git_diff"].for_agent
    assert {t.name for t in registry.agent_tools()}.isdisjoint({"git_status", "git_diff"})
