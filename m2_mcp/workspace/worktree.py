"""Where one agent run makes its changes: the user's tree (after a checkpoint), or a git
worktree on a new branch (inside `.git/m2-worktrees/`), so the user's checkout is never touched."""

from __future__ import annotations

import fcntl
import hashlib
from pathlib import Path

import git

from m2_mcp.errors import UsageError
from m2_mcp.workspace.checkpoint import Checkpoint, create_checkpoint, snapshot_tree
from m2_mcp.workspace.gitutil import AUTHOR_ENV, NOT_SOURCE, open_git


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
