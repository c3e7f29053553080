"""The 3-way merge of a task's result into the user's working tree (workspace/patch.py), on real git repos."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import make_repo
from m2_mcp.workspace import list_checkpoints, snapshot_tree
from m2_mcp.workspace.gitutil import open_git
from m2_mcp.workspace.patch import merge_into_worktree

LINES = "".join(f"line {i}\n" for i in range(1, 21))


def git(repo: Path, *args: str, input: str | None = None) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                          input=input).stdout.strip()


def task_result(repo: Path, change) -> tuple[str, str]:
    """(base, result) trees: the working tree now, and after `change` made in a scratch worktree."""
    base = snapshot_tree(open_git(repo))
    scratch = repo.parent / "scratch"
    git(repo, "worktree", "add", "-q", "--detach", str(scratch), "HEAD")
    git(scratch, "read-tree", "-u", "--reset", base)
    change(scratch)
    result = snapshot_tree(open_git(scratch))
    git(repo, "worktree", "remove", "--force", str(scratch))
    return base, result


def test_clean_merge_keeps_the_users_other_edits_in_the_same_file(tmp_path: Path):
    repo = make_repo(tmp_path / "r", {"a.txt": LINES, "gone.txt": "x\n", "run.sh": "echo\n"})
    base, result = task_result(repo, lambda s: (
        (s / "a.txt").write_text(LINES.replace("line 2\n", "line TWO\n")),
        (s / "new/b.txt").parent.mkdir(), (s / "new/b.txt").write_text("new\n"),
        (s / "gone.txt").unlink(), os.chmod(s / "run.sh", 0o755)))
    (repo / "a.txt").write_text(LINES.replace("line 19\n", "line nineteen (mine)\n"))  # the user, meanwhile
    index = git(repo, "ls-files", "-s")
    outcome = merge_into_worktree(repo, base, result, "before applying test")
    assert outcome.applied and outcome.conflicts == []
    assert (repo / "a.txt").read_text() == LINES.replace("line 2\n", "line TWO\n").replace(
        "line 19\n", "line nineteen (mine)\n")
    assert (repo / "new/b.txt").read_text() == "new\n" and not (repo / "gone.txt").exists()
    assert os.access(repo / "run.sh", os.X_OK)
    assert git(repo, "ls-files", "-s") == index  # the index is not touched
    assert list_checkpoints(repo)[0]["ref"] == outcome.checkpoint  # undo takes it back


def test_any_collision_means_nothing_is_written(tmp_path: Path):
    repo = make_repo(tmp_path / "r", {"a.txt": LINES, "b.txt": LINES})
    base, result = task_result(repo, lambda s: (
        (s / "a.txt").write_text(LINES.replace("line 5\n", "line FIVE\n")),
        (s / "b.txt").write_text(LINES.replace("line 5\n", "line FIVE\n")),
        (s / "c.txt").write_text("task's new file\n")))
    (repo / "b.txt").write_text(LINES.replace("line 5\n", "line 5, mine\n"))
    (repo / "c.txt").write_text("the user's own c.txt\n")
    outcome = merge_into_worktree(repo, base, result, "before applying test")
    assert not outcome.applied and outcome.conflicts == ["b.txt", "c.txt"]
    assert (repo / "a.txt").read_text() == LINES  # a.txt would merge cleanly, but all or nothing
    assert (repo / "b.txt").read_text() == LINES.replace("line 5\n", "line 5, mine\n")
    assert (repo / "c.txt").read_text() == "the user's own c.txt\n"
    assert list_checkpoints(repo) == []
