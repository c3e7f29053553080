"""`git_status` and `git_diff`: the working tree's state, for MCP clients (not offered to the agent)."""

from __future__ import annotations

import os

import git
from pydantic import BaseModel

from m2_mcp import budget
from m2_mcp.errors import ToolError
from m2_mcp.repo import Repo
from m2_mcp.tools.registry import tool


class GitStatus(BaseModel):
    branch: str | None  # null when HEAD is detached
    head: str | None  # commit sha; null before the first commit
    detached: bool
    staged: list[str]  # changes in the index (added, modified, deleted, renamed)
    modified: list[str]  # changed in the working tree, not staged
    deleted: list[str]  # deleted in the working tree, not staged
    untracked: list[str]  # new files git does not ignore
    clean: bool


class GitDiff(BaseModel):
    diff: str
    files: list[str]
    staged: bool
    truncated: bool
    note: str | None = None


@tool(for_agent=False)
def git_status(repo: Repo, path: str | None = None) -> GitStatus:
    """Show the branch, HEAD commit, and the staged, modified, deleted and untracked files
    (optionally only under `path`)."""
    g, prefix = _open(repo)
    with g:  # closes GitPython's helper processes
        return _status(g, prefix, _pathspec(repo, path))


def _status(g: git.Repo, prefix: str, spec: str) -> GitStatus:
    head = g.head
    detached = head.is_detached
    try:
        sha = head.commit.hexsha
    except ValueError:  # no commits yet
        sha = None
    branch = None if detached else head.ref.name
    out = _git(g.git.status, "--porcelain=v1", "-z", "--untracked-files=all", "--", spec)
    staged, modified, deleted, untracked = [], [], [], []
    entries = out.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        x, y, name = entry[0], entry[1], _rel(prefix, entry[3:])
        if x in "RC":
            i += 1  # the rename/copy source follows
        if x == "?":
            untracked.append(name)
            continue
        if x not in " !":
            staged.append(name)
        if y == "D":
            deleted.append(name)
        elif y not in " !":
            modified.append(name)
    return GitStatus(
        branch=branch,
        head=sha,
        detached=detached,
        staged=staged,
        modified=modified,
        deleted=deleted,
        untracked=untracked,
        clean=not (staged or modified or deleted or untracked),
    )


@tool(for_agent=False)
def git_diff(repo: Repo, path: str | None = None, staged: bool = False) -> GitDiff:
    """Show the unified diff of unstaged changes (or, with `staged`, of staged ones), optionally only for `path`.

    Untracked files are not in the diff; see git_status.
    """
    spec = _pathspec(repo, path)
    g, prefix = _open(repo)
    flags = ["--no-color", "--no-ext-diff"] + (["--cached"] if staged else [])
    with g:
        text = _git(g.git.diff, *flags, "--", spec)
        names = _git(g.git.diff, *flags, "--name-only", "-z", "--", spec)
    files = [_rel(prefix, n) for n in names.split("\0") if n]
    diff, cut = budget.truncate(text + "\n" if text else "", hint="pass `path` to see one file's diff")
    note = f"diff truncated ({len(files)} files); pass `path` to see one file at a time" if cut else None
    return GitDiff(diff=diff, files=files, staged=staged, truncated=cut, note=note)


def _open(repo: Repo) -> tuple[git.Repo, str]:
    """The git repo holding the root, and the root's path inside its work tree ('' at the top)."""
    try:
        g = git.Repo(repo.root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise ToolError(f"not a git repository: {repo.root}") from None
    if g.working_tree_dir is None:
        raise ToolError(f"not a git work tree: {repo.root}")
    prefix = os.path.relpath(repo.root, os.path.realpath(g.working_tree_dir))
    return g, "" if prefix == "." else prefix.replace(os.sep, "/") + "/"


def _pathspec(repo: Repo, path: str | None) -> str:
    """The root (or `path` inside it) as an absolute pathspec; refuses paths outside the root."""
    return str(repo.resolve(path) if path else repo.root)


def _rel(prefix: str, name: str) -> str:
    return name[len(prefix):] if prefix and name.startswith(prefix) else name


def _git(command, *args: str) -> str:
    try:
        return command(*args)
    except git.GitCommandError as exc:
        lines = [ln.strip() for ln in str(exc.stderr or exc).splitlines() if ln.strip()]
        reason = (lines[0] if lines else "git failed").removeprefix("stderr: ").strip("' ")
        raise ToolError(f"git failed: {reason}") from None
