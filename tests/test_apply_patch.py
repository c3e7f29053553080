"""`apply_patch` through the real MCP server (SDK client over stdio) on real git repositories."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from _mcp import connect, error_text, stdio_params
from conftest import make_repo

pytestmark = pytest.mark.anyio

FILES = {
    "calc.py": "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n",
    "old_name.txt": "first\nsecond\nthird\n",
    "gone.txt": "delete me\n",
    "run.sh": "#!/bin/sh\necho hi\n",
    "lib/util.py": "".join(f"line {i}\n" for i in range(1, 21)),
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def tree_state(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root (not .git): bytes and mode, to compare byte for byte."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
            state[path.relative_to(root).as_posix()] = (data, stat.S_IMODE(st.st_mode))
    return state


def diff_of(tmp_path: Path, change) -> str:
    """A patch exactly as `git diff` writes it: make the change in a scratch copy and diff it."""
    scratch = make_repo(tmp_path / "scratch", FILES)
    change(scratch)
    git(scratch, "add", "-A")
    return git(scratch, "diff", "--cached", "-M")


def multi_change(r: Path) -> None:
    (r / "calc.py").write_text(FILES["calc.py"].replace("return a - b", "return a - b  # checked"))
    (r / "new_dir").mkdir()
    (r / "new_dir/new.txt").write_text("a new file\n")
    (r / "gone.txt").unlink()
    (r / "old_name.txt").rename(r / "new_name.txt")
    (r / "run.sh").chmod(0o755)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "proj", FILES)


async def test_multi_file_patch_with_new_file_deletion_rename_and_mode_change(repo: Path, tmp_path: Path):
    patch = diff_of(tmp_path, multi_change)
    assert "rename from old_name.txt" in patch and "new mode 100755" in patch and "deleted file" in patch
    before = tree_state(repo)
    async with connect(stdio_params(repo), mode="legacy") as client:
        listed = {t.name for t in (await client.list_tools()).tools}
        checked = await client.call_tool("apply_patch", {"patch": patch, "check": True})
        after_check = tree_state(repo)
        result = await client.call_tool("apply_patch", {"patch": patch})
    assert "apply_patch" in listed
    assert not checked.is_error and checked.structured_content["applied"] is False
    assert checked.structured_content["check"] is True
    assert after_check == before  # check: true changes nothing
    assert not result.is_error, error_text(result)
    out = result.structured_content
    assert out["applied"] is True and out["note"] is None
    assert set(out["files"]) == {"calc.py", "new_dir/new.txt", "gone.txt", "new_name.txt", "old_name.txt", "run.sh"}
    assert any(line.startswith("rename old_name.txt => new_name.txt") for line in out["summary"])
    assert (repo / "calc.py").read_text().endswith("return a - b  # checked\n")
    assert (repo / "new_dir/new.txt").read_text() == "a new file\n"
    assert not (repo / "gone.txt").exists() and not (repo / "old_name.txt").exists()
    assert (repo / "new_name.txt").read_text() == FILES["old_name.txt"]
    assert os.stat(repo / "run.sh").st_mode & stat.S_IXUSR
    assert git(repo, "diff", "--cached") == ""  # the index is not touched
    assert (repo / "lib/util.py").read_bytes() == before["lib/util.py"][0]


async def test_a_patch_whose_third_file_does_not_apply_changes_nothing(repo: Path, tmp_path: Path):
    def change(r: Path) -> None:
        (r / "a_new.txt").write_text("created\n")
        (r / "calc.py").write_text(FILES["calc.py"].replace("return a + b", "return b + a"))
        (r / "old_name.txt").write_text("first\n2nd\nthird\n")

    patch = diff_of(tmp_path, change)
    assert patch.index("a_new.txt") < patch.index("calc.py") < patch.index("old_name.txt")
    broken = patch.replace(" first\n", " 1st\n").replace(" third\n", " 3rd\n")  # the third file's context is wrong
    before = tree_state(repo)
    async with connect(stdio_params(repo), mode="legacy") as client:
        result = await client.call_tool("apply_patch", {"patch": broken})
        checked = await client.call_tool("apply_patch", {"patch": broken, "check": True})
    assert result.is_error and checked.is_error
    message = error_text(result)
    assert "old_name.txt" in message and "@@ -1,3 +1,3 @@" in message and "no file was changed" in message
    assert "\n" not in message.strip()
    assert tree_state(repo) == before  # every file byte-identical, no new file


async def test_escapes_are_refused(repo: Path, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("keep\n")
    (repo / "link").symlink_to(outside, target_is_directory=True)
    nested = make_repo(repo / "vendor" / "nested", {"n.txt": "nested\n"})

    def modify(path: str, old: str = "keep", new: str = "owned") -> str:
        return (f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n"
                f"@@ -1 +1 @@\n-{old}\n+{new}\n")

    patches = {
        "../": modify("../outside/secret.txt"),
        "absolute": f"--- {outside}/secret.txt\n+++ {outside}/secret.txt\n@@ -1 +1 @@\n-keep\n+owned\n",
        ".git": modify("vendor/nested/.git/HEAD", "ref: refs/heads/main", "ref: refs/heads/evil"),
        "top .git": modify(".git/HEAD", "ref: refs/heads/main", "ref: refs/heads/evil"),
        "symlink": modify("link/secret.txt"),
        "nested repo": modify("vendor/nested/n.txt", "nested", "owned"),
    }
    before, outside_before, nested_head = tree_state(repo), tree_state(outside), (nested / ".git/HEAD").read_bytes()
    async with connect(stdio_params(repo), mode="legacy") as client:
        results = {name: await client.call_tool("apply_patch", {"patch": p}) for name, p in patches.items()}
    for name, result in results.items():
        assert result.is_error, name
        assert "refused" in error_text(result) or "outside" in error_text(result) or ".git" in error_text(result), name
    assert "nested git repository" in error_text(results["nested repo"])
    assert tree_state(repo) == before and tree_state(outside) == outside_before
    assert (nested / ".git/HEAD").read_bytes() == nested_head


async def test_whitespace_damaged_hunks_are_placed(repo: Path, tmp_path: Path):
    def change(r: Path) -> None:
        (r / "lib/util.py").write_text(FILES["lib/util.py"].replace("line 10\n", "line TEN\n"))

    patch = diff_of(tmp_path, change)
    # what a model's copy of a diff often looks like: trailing spaces, wrong counts, no final newline
    damaged = patch.replace(" line 9\n", " line 9   \n").replace("@@ -7,7 +7,7 @@", "@@ -7,9 +7,9 @@").rstrip("\n")
    hopeless = patch.replace(" line 9\n", " line 99\n").replace(" line 11\n", " line 111\n").replace(
        " line 8\n", " line 88\n").replace(" line 12\n", " line 122\n")
    async with connect(stdio_params(repo), mode="legacy") as client:
        placed = await client.call_tool("apply_patch", {"patch": damaged})
        refused = await client.call_tool("apply_patch", {"patch": hopeless})
        # hand-written, without a/ b/ prefixes: the path is taken as written (not stripped to util.py)
        handwritten = await client.call_tool("apply_patch", {
            "patch": "--- lib/util.py\n+++ lib/util.py\n@@ -2,3 +2,3 @@\n line 2\n-line 3\n+line three\n line 4\n"})
    assert not placed.is_error, error_text(placed)
    assert placed.structured_content["note"] and "--recount" in placed.structured_content["note"]
    assert not handwritten.is_error, error_text(handwritten)
    assert handwritten.structured_content["files"] == ["lib/util.py"]
    assert (repo / "lib/util.py").read_text() == FILES["lib/util.py"].replace("line 10\n", "line TEN\n").replace(
        "line 3\n", "line three\n")
    assert refused.is_error and "lib/util.py" in error_text(refused)


def test_the_agent_gets_apply_patch_too():
    from m2_mcp.tools import registry

    names = [spec.name for spec in registry.agent_tools()]
    assert "apply_patch" in names


async def test_the_agent_cannot_patch_tests(repo: Path):
    import anyio

    from m2_mcp.errors import ToolError
    from m2_mcp.repo import Repo
    from m2_mcp.tools import registry

    (repo / "tests").mkdir()
    (repo / "tests/test_x.py").write_text("def test_x():\n    assert False\n")
    patch = ("--- a/tests/test_x.py\n+++ b/tests/test_x.py\n@@ -1,2 +1,2 @@\n def test_x():\n"
             "-    assert False\n+    assert True\n")
    guarded = Repo(repo, protect_tests=True)
    with pytest.raises(ToolError, match="test file"):
        await registry.call(guarded, "apply_patch", {"patch": patch})
    assert "assert False" in (repo / "tests/test_x.py").read_text()
    await anyio.sleep(0)


async def test_outside_a_git_repository_it_is_a_one_line_tool_error(tmp_path: Path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "calc.py").write_text("keep\n")
    patch = "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n@@ -1 +1 @@\n-keep\n+owned\n"
    async with connect(stdio_params(plain), mode="legacy") as client:
        result = await client.call_tool("apply_patch", {"patch": patch})
    assert result.is_error and error_text(result).endswith(f": not a git repository: {plain.resolve()}")
    assert "\n" not in error_text(result) and "internal error" not in error_text(result)
    assert (plain / "calc.py").read_text() == "keep\n"
