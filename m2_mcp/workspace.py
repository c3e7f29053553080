"""The git side of an agent run, via GitPython: checkpoints, worktree branches, diffs, undo.

- A checkpoint is a commit of the whole working tree (tracked and untracked files that
  git does not ignore), made with a temporary index so neither the user's index nor
  files are touched, kept under `refs/m2-mcp/checkpoints/` so git never collects it.
  The user's real index tree is recorded alongside, so `undo` restores staging too.
- With a branch, the agent works in a separate worktree (inside `.git/m2-worktrees/`)
  on a new branch from HEAD; the user's checkout is never touched.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import git

from m2_mcp.errors import UsageError
from m2_mcp.repo import Repo
from m2_mcp.rg import list_files

CHECKPOINT_PREFIX = "refs/m2-mcp/checkpoints/"
# Build artefacts that test runs leave behind: never part of a checkpoint, a diff or a commit.
NOT_SOURCE = (":(exclude,glob)**/__pycache__/**", ":(exclude,glob)**/*.pyc", ":(exclude,glob)**/.pytest_cache/**")
# Checkpoints also keep git-ignored files up to these sizes, outside these directories.
IGNORED_FILE_MAX = 1 << 20
IGNORED_TOTAL_MAX = 64 << 20
BULKY_DIRS = {"node_modules", ".venv", "venv", "__pycache__", ".tox", ".nox", ".mypy_cache", ".pytest_cache",
              ".ruff_cache", ".cache", ".gradle"}
AUTHOR_ENV = {
    "GIT_AUTHOR_NAME": "m2-mcp", "GIT_AUTHOR_EMAIL": "m2-mcp@localhost",
    "GIT_COMMITTER_NAME": "m2-mcp", "GIT_COMMITTER_EMAIL": "m2-mcp@localhost",
}


def open_git(root: Path) -> git.Repo:
    try:
        g = git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise UsageError(f"not a git repository: {root}") from None
    if g.working_tree_dir is None or Path(g.working_tree_dir).resolve() != Path(root).resolve():
        raise UsageError(f"{root} is inside the git repository {g.working_tree_dir}: "
                         f"run at its top (--repo {g.working_tree_dir})")
    return g


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


class Workspace:
    """Where one agent run makes its changes: the user's tree, or a worktree on a new branch."""

    def __init__(self, user_root: Path, branch: str | None = None):
        self.user_root = Path(user_root).resolve()
        self.g = open_git(self.user_root)
        if Path(self.g.working_tree_dir).resolve() != self.user_root:
            raise UsageError(f"--repo must be the top of the git work tree: {self.g.working_tree_dir}")
        self.branch = branch
        self.checkpoint: Checkpoint | None = None
        self.worktree: Path | None = None
        self.base: str | None = None  # tree the agent's diff is measured against
        self._lock = None
        if branch is not None:
            self._check_branch_name(branch)
            if not self.g.head.is_valid():
                raise UsageError("--branch needs a repository with at least one commit")

    def _check_branch_name(self, branch: str) -> None:
        try:
            self.g.git.check_ref_format("--branch", branch)
        except git.GitCommandError:
            raise UsageError(f"invalid branch name: {branch}") from None
        if branch in [h.name for h in self.g.heads]:
            raise UsageError(f"branch already exists: {branch}")

    @property
    def root(self) -> Path:
        return self.worktree or self.user_root

    def start(self) -> None:
        """Checkpoint the user's state, or create the worktree on the new branch."""
        if self.branch is not None:
            digest = hashlib.sha1(self.branch.encode()).hexdigest()[:10]
            path = Path(self.g.git_dir) / "m2-worktrees" / digest
            try:
                self.g.git.worktree("add", "-q", "-b", self.branch, str(path), "HEAD")
            except git.GitCommandError as exc:
                raise UsageError(f"cannot create branch {self.branch}: {exc.stderr.strip().splitlines()[-1]}") from None
            self.worktree = path
            self.base = snapshot_tree(git.Repo(self.worktree))
        else:
            # one run at a time in a working tree: a second would checkpoint the first one's edits
            self._lock = open(Path(self.g.git_dir) / "m2-mcp.lock", "a")
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lock.close()
                self._lock = None
                raise UsageError("another m2-mcp run is changing this working tree; wait for it to end, "
                                 "or use --branch") from None
            self.checkpoint = create_checkpoint(self.user_root)
            self.base = self.g.commit(self.checkpoint.commit).tree.hexsha

    def changes(self) -> tuple[list[str], str]:
        """(files changed, unified diff) of what the run changed since start()."""
        g = git.Repo(self.root)
        now = snapshot_tree(g)
        if now == self.base:
            return [], ""
        names = g.git.diff("--name-only", self.base, now).splitlines()
        return names, g.git.diff(self.base, now) + "\n"

    def commit(self, message: str) -> list[str]:
        """In branch mode, commit the run's changes on the branch; returns new commit shas."""
        if not self.worktree:
            return []
        g = git.Repo(self.worktree)
        g.git.add("-A", "--", ".", *NOT_SOURCE)
        if not g.is_dirty(index=True, working_tree=False):
            return []
        g.git.commit("-q", "--no-verify", "--no-gpg-sign", "-m", message, env=AUTHOR_ENV)
        return [g.head.commit.hexsha]

    def finish(self, keep_branch: bool) -> None:
        """Release the working tree, or remove the worktree (the branch stays if keep_branch)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if not self.worktree:
            return
        self.g.git.worktree("remove", "--force", str(self.worktree))
        self.worktree = None
        if not keep_branch:
            self.g.git.branch("-D", self.branch)
            self.branch = None


SKIP_DIRS = {".git", "node_modules", "__pycache__", ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


class TestGuard:
    """Keeps tests and test configuration as they were: detects and reverts changes by any tool
    (shell included). It walks the tree itself, so a file hidden by a new .gitignore is still seen."""

    __test__ = False  # not a pytest class

    def __init__(self, repo: Repo):
        self.repo = repo
        self.saved = self._read()

    def _read(self) -> dict[str, bytes]:
        files = {}
        root = self.repo.root
        for dirpath, dirnames, filenames in os.walk(root):
            # skip tool caches and virtualenvs (environment tampering is beyond a file guard)
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS
                           and not os.path.exists(os.path.join(dirpath, d, "pyvenv.cfg"))]
            rel_dir = os.path.relpath(dirpath, root)
            for name in filenames:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                if Repo.is_protected(rel):
                    try:
                        files[rel] = (Path(dirpath) / name).read_bytes()
                    except OSError:
                        pass
        return files

    def revert_changes(self) -> list[str]:
        """Restore changed/deleted protected files and remove new ones; returns the paths touched."""
        now = self._read()
        touched = sorted(p for p in set(now) | set(self.saved) if now.get(p) != self.saved.get(p))
        for rel in touched:
            target = self.repo.root / rel
            try:
                if rel in self.saved:
                    if target.is_symlink() or target.is_dir():
                        target.unlink() if target.is_symlink() else shutil.rmtree(target)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(self.saved[rel])
                else:
                    target.unlink(missing_ok=True)
            except OSError:
                pass  # reported as touched; the final test run shows what it means
        return touched
