"""Checkpoints: a commit of the user's whole working tree (tracked and untracked files that
git does not ignore), made with a temporary index so neither the user's index nor files are
touched, kept under `refs/m2-mcp/checkpoints/` so git never collects it. The user's real
index tree is recorded alongside, so `undo` restores staging too.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import git

from m2_mcp.errors import UsageError
from m2_mcp.rg import list_files
from m2_mcp.workspace.gitutil import AUTHOR_ENV, NOT_SOURCE, open_git

CHECKPOINT_PREFIX = "refs/m2-mcp/checkpoints/"
# Checkpoints also keep git-ignored files up to these sizes, outside these directories.
IGNORED_FILE_MAX = 1 << 20
IGNORED_TOTAL_MAX = 64 << 20
BULKY_DIRS = {"node_modules", ".venv", "venv", "__pycache__", ".tox", ".nox", ".mypy_cache", ".pytest_cache",
              ".ruff_cache", ".cache", ".gradle"}


def snapshot_tree(g: git.Repo) -> str:
    """The tree of the working tree as it is (tracked + untracked, not ignored), via a temp index."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        if g.head.is_valid():
            g.git.read_tree("HEAD", env=env)
        g.git.add("-A", "--", ".", *NOT_SOURCE, env=env)
        return g.git.write_tree(env=env)


def _ignored_files(g: git.Repo) -> list[str]:
    """Small git-ignored files (.env, local config...): a run could change them, so checkpoints keep
    them too. Not kept: files over IGNORED_FILE_MAX, dependency/tool/virtualenv directories, and
    anything past IGNORED_TOTAL_MAX."""
    root = Path(g.working_tree_dir)
    listed = g.git.ls_files("--others", "--ignored", "--exclude-standard", "--directory", "-z").split("\0")
    picked, total = [], 0

    def candidates(path: Path):
        if path.is_symlink():
            return
        if path.is_file():
            yield path
        elif path.is_dir() and path.name not in BULKY_DIRS and not (path / "pyvenv.cfg").exists():
            for child in sorted(path.iterdir()):
                yield from candidates(child)

    for entry in filter(None, listed):
        for path in candidates(root / entry):
            size = path.stat().st_size
            if size <= IGNORED_FILE_MAX and total + size <= IGNORED_TOTAL_MAX:
                picked.append(path.relative_to(root).as_posix())
                total += size
    return picked


def _ignored_commit(g: git.Repo) -> str | None:
    files = _ignored_files(g)
    if not files:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index"), "GIT_LITERAL_PATHSPECS": "1"}
        listing = Path(tmp, "paths")
        listing.write_bytes(b"\0".join(f.encode() for f in files))
        g.git.add("-f", f"--pathspec-from-file={listing}", "--pathspec-file-nul", env=env)
        tree = g.git.write_tree(env=env)
    return g.git.commit_tree("--no-gpg-sign", tree, "-m", "m2-mcp checkpoint: ignored files", env=AUTHOR_ENV)


@dataclass
class Checkpoint:
    ref: str
    commit: str  # snapshot commit of the working tree
    index_tree: str | None  # the user's staged tree at checkpoint time


def create_checkpoint(root: Path, label: str = "before m2-mcp run") -> Checkpoint:
    """Record the user's full state without changing anything; returns the checkpoint."""
    g = open_git(root)
    tree = snapshot_tree(g)
    try:
        index_tree = g.git.write_tree()
    except git.GitCommandError:  # unmerged index
        index_tree = None
    parents = ["-p", g.head.commit.hexsha] if g.head.is_valid() else []
    ignored = _ignored_commit(g)
    if ignored:  # a parent, so git keeps it as long as the checkpoint
        parents += ["-p", ignored]
    message = f"m2-mcp checkpoint: {label}\n\nindex-tree: {index_tree or '-'}\nignored-files: {ignored or '-'}\n"
    commit = g.git.commit_tree("--no-gpg-sign", tree, *parents, "-m", message, env=AUTHOR_ENV)
    ref = f"{CHECKPOINT_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}-{commit[:8]}"
    g.git.update_ref(ref, commit)
    return Checkpoint(ref=ref, commit=commit, index_tree=index_tree)


def list_checkpoints(root: Path) -> list[dict]:
    g = open_git(root)
    out = g.git.for_each_ref(CHECKPOINT_PREFIX, "--sort=-refname",
                             "--format=%(refname)%09%(objectname)%09%(committerdate:iso8601)%09%(subject)")
    rows = []
    for line in out.splitlines():
        ref, sha, date, subject = line.split("\t", 3)
        rows.append({"ref": ref, "commit": sha, "date": date, "label": subject.removeprefix("m2-mcp checkpoint: ")})
    return rows


def restore_checkpoint(root: Path, ref: str | None = None) -> dict:
    """Put the working tree (and index) back as the checkpoint recorded them.

    Without `ref`, the newest checkpoint taken before a run. The current state is
    checkpointed first, so a restore can itself be undone.
    """
    g = open_git(root)
    checkpoints = list_checkpoints(root)
    if not checkpoints:
        raise UsageError(f"no m2-mcp checkpoints in {root}")
    runs = [c for c in checkpoints if not c["label"].startswith("before undo")]
    chosen = (runs or checkpoints)[0] if ref is None else next(
        (c for c in checkpoints if ref in (c["ref"], c["commit"], c["ref"].removeprefix(CHECKPOINT_PREFIX))), None)
    if chosen is None:
        raise UsageError(f"no such checkpoint: {ref} (see 'm2-mcp undo --list')")
    safety = create_checkpoint(root, f"before undo to {chosen['ref'].removeprefix(CHECKPOINT_PREFIX)}")
    commit = g.commit(chosen["commit"])
    wanted = {item.path for item in commit.tree.traverse() if item.type == "blob"}
    removed = []
    for path in list_files(Path(g.working_tree_dir)):
        rel = path.relative_to(g.working_tree_dir).as_posix()
        if rel not in wanted:
            path.unlink()
            removed.append(rel)
    trees = [commit.tree.hexsha]
    ignored = re.search(r"^ignored-files: ([0-9a-f]+)$", commit.message, re.M)
    if ignored:
        trees.append(g.commit(ignored.group(1)).tree.hexsha)
    for tree in trees:
        with tempfile.TemporaryDirectory() as tmp:
            env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
            g.git.read_tree(tree, env=env)
            g.git.checkout_index("-a", "-f", env=env)
    match = re.search(r"^index-tree: ([0-9a-f]+)$", commit.message, re.M)
    if match:
        g.git.read_tree(match.group(1))
    return {"restored": chosen["ref"], "removed": removed, "safety_checkpoint": safety.ref}

