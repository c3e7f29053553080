"""Where one agent run makes its changes: the user's tree (after a checkpoint), or a git
worktree on a new branch (inside `.git/m2-worktrees/`), so the user's checkout is never touched.

A worktree starts from HEAD (`fix --branch`) or from a snapshot of the user's working tree
(`m2_task`: tracked, staged and untracked non-ignored files, committed on top of HEAD).
Each worktree is locked with the owning process's pid; a worktree whose owner died (a killed
server or CLI) is removed, with its branch, by the next run or server start in that repo.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

import git

from m2_mcp.errors import UsageError
from m2_mcp.workspace.checkpoint import Checkpoint, create_checkpoint, load_record, snapshot_tree
from m2_mcp.workspace.snapshot import scan_tree, write_tree
from m2_mcp.workspace.gitutil import NOT_SOURCE, open_git, user_author_env, with_trailer

WORKTREES_DIR = "m2-worktrees"
LOCK_TAG = "m2-mcp run"


def _lock_reason() -> str:
    from m2_mcp.taskstore import pid_start

    return f"{LOCK_TAG} pid={os.getpid()} start={pid_start(os.getpid()) or '-'}"


def _owner_alive(reason: str) -> bool:
    from m2_mcp.taskstore import process_alive

    fields = dict(part.split("=", 1) for part in reason.split() if "=" in part)
    try:
        pid = int(fields.get("pid", ""))
    except ValueError:
        return False
    start = fields.get("start")
    return process_alive(pid, None if start in (None, "-") else start)


def _worktrees(g: git.Repo) -> list[dict]:
    """`git worktree list --porcelain` as dicts: worktree, branch, locked (reason or None)."""
    rows, row = [], {}
    for line in g.git.worktree("list", "--porcelain").splitlines() + [""]:
        if not line:
            if row:
                rows.append(row)
            row = {}
            continue
        key, _, value = line.partition(" ")
        row[key] = value
    return rows


def remove_stale_worktrees(g: git.Repo) -> list[str]:
    """Remove our worktrees whose run is gone (its process died), and their branches; returns the branches.

    A stale worktree keeps its branch checked out, so without this the branch could never be
    reused or deleted. Worktrees of live runs (this process's included) are left alone."""
    ours = Path(g.git_dir).resolve() / WORKTREES_DIR
    removed = []
    g.git.worktree("prune")
    for row in _worktrees(g):
        path = Path(row.get("worktree", ""))
        if path.resolve().parent != ours:
            continue
        reason = row.get("locked")
        if reason is not None and reason.startswith(LOCK_TAG) and _owner_alive(reason):
            continue
        try:
            g.git.worktree("remove", "--force", "--force", str(path))
        except git.GitCommandError:  # its directory is gone: unlock so prune can drop it
            g.git.worktree("unlock", str(path))
            g.git.worktree("prune")
        branch = row.get("branch", "").removeprefix("refs/heads/")
        if branch:
            try:
                g.git.branch("-D", branch)
                removed.append(branch)
            except git.GitCommandError:
                pass
    return removed


class Workspace:
    """Where one agent run makes its changes: the user's tree, or a worktree on a new branch.

    `from_snapshot`: the worktree starts from the user's current state rather than HEAD."""

    def __init__(self, user_root: Path, branch: str | None = None, from_snapshot: bool = False):
        self.user_root = Path(user_root).resolve()
        self.g = open_git(self.user_root)
        if Path(self.g.working_tree_dir).resolve() != self.user_root:
            raise UsageError(f"--repo must be the top of the git work tree: {self.g.working_tree_dir}")
        self.branch = branch
        self.from_snapshot = from_snapshot and branch is not None
        self.checkpoint: Checkpoint | None = None
        self.worktree: Path | None = None
        self.base: str | None = None  # tree the agent's diff is measured against
        self.result_tree: str | None = None  # tree of the run's result, set by changes()
        self._lock = None
        if branch is not None:
            remove_stale_worktrees(self.g)
            self._check_branch_name(branch)
            if not self.from_snapshot and not self.g.head.is_valid():
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

    def _snapshot_commit(self) -> str:
        """HEAD if the working tree matches it, else a commit of the working tree on top of HEAD."""
        tree = snapshot_tree(self.g)
        head = self.g.head.commit if self.g.head.is_valid() else None
        if head is not None and head.tree.hexsha == tree:
            return head.hexsha
        message = with_trailer("m2-mcp: your working tree when the task started\n\n"
                               "Uncommitted and untracked files as they were; the task's changes follow.")
        parents = ["-p", head.hexsha] if head is not None else []
        return self.g.git.commit_tree("--no-gpg-sign", tree, *parents, "-m", message, env=user_author_env(self.g))

    def start(self) -> None:
        """Checkpoint the user's state, or create the worktree on the new branch."""
        if self.branch is not None:
            start = self._snapshot_commit() if self.from_snapshot else "HEAD"
            digest = hashlib.sha1(self.branch.encode()).hexdigest()[:10]
            path = Path(self.g.git_dir) / WORKTREES_DIR / digest
            try:
                self.g.git.worktree("add", "-q", "--lock", "--reason", _lock_reason(), "-b", self.branch,
                                    str(path), start)
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
        now = self.result_tree = write_tree(g, scan_tree(g, self._ignored_at_start()).entries)
        if now == self.base:
            return [], ""
        plain = ("--no-ext-diff", "--no-textconv", "--no-color")  # the user's diff settings do not apply
        names = g.git.diff("--name-only", *plain, self.base, now).splitlines()
        return names, g.git.diff(*plain, self.base, now) + "\n"

    def _ignored_at_start(self) -> set[str]:
        """Files git ignored when the run started (`.env`...): never part of the run's diff or
        result, even if the run changed `.gitignore`."""
        loaded = load_record(self.g, self.checkpoint.ref) if self.checkpoint is not None else None
        return set(loaded[1].get("ignored") or ()) | set(loaded[1].get("private") or ()) if loaded else set()

    def save_patch(self, target: Path) -> Path:
        """Write the run's changes as a patch `git apply` takes (binary files and modes included)."""
        patch = self.g.git.diff("--binary", "--full-index", self.base, self.result_tree, stdout_as_string=False,
                             strip_newline_in_stdout=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(patch)
        return target

    def commit(self, message: str) -> list[str]:
        """In branch mode, commit the run's changes on the branch (the user's identity, an m2-mcp
        trailer); returns new commit shas."""
        if not self.worktree:
            return []
        g = git.Repo(self.worktree)
        g.git.add("-A", "--", ".", *NOT_SOURCE)
        if not g.is_dirty(index=True, working_tree=False):
            return []
        g.git.commit("-q", "--no-verify", "--no-gpg-sign", "-m", with_trailer(message), env=user_author_env(g))
        return [g.head.commit.hexsha]

    def finish(self, keep_branch: bool) -> None:
        """Release the working tree, or remove the worktree (the branch stays if keep_branch)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if not self.worktree:
            return
        self.g.git.worktree("remove", "--force", "--force", str(self.worktree))
        self.worktree = None
        if not keep_branch:
            self.g.git.branch("-D", self.branch)
            self.branch = None
