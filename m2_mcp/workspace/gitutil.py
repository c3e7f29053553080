"""Shared git helpers for the workspace layer: opening the repository, the identities and
pathspecs our commits use (checkpoints: m2-mcp's; commits made for the user: the user's,
with an m2-mcp trailer)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import git

from m2_mcp.errors import M2Error, UsageError

# Build artefacts that test runs leave behind: never part of a checkpoint, a diff or a commit.
NOT_SOURCE = (":(exclude,glob)**/__pycache__/**", ":(exclude,glob)**/*.pyc", ":(exclude,glob)**/.pytest_cache/**")

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



class GitError(M2Error):
    """A git command of the workspace layer failed: one line, naming the command and git's reason."""


def run_git(root: Path | str, *args: str, input: bytes | None = None, env: dict[str, str] | None = None,
            check: bool = True) -> bytes:
    """Run git in `root` with bytes in and out (paths are raw with -z); GitError on failure."""
    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    proc = subprocess.run(["git", *args], cwd=root, input=input, env=full_env, capture_output=True,
                          stdin=None if input is not None else subprocess.DEVNULL)
    if check and proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        raise GitError(f"git {args[0]} failed in {root}: {reason[-1][:300] if reason else f'exit {proc.returncode}'}")
    return proc.stdout


TRAILER = "Generated-by: m2-mcp"
_IDENTITY_ENV = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")


def user_author_env(g: git.Repo) -> dict[str, str]:
    """The identity for commits made for the user: the repo's configured user.name/user.email
    (git's own environment variables win, as with any git commit), else m2-mcp's."""
    reader = g.config_reader()
    name = reader.get_value("user", "name", "") or AUTHOR_ENV["GIT_AUTHOR_NAME"]
    email = reader.get_value("user", "email", "") or AUTHOR_ENV["GIT_AUTHOR_EMAIL"]
    values = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
              "GIT_COMMITTER_EMAIL": email}
    return {key: str(value) for key, value in values.items() if not os.environ.get(key)}


def with_trailer(message: str) -> str:
    """A commit message ending in the m2-mcp trailer paragraph."""
    return f"{message.rstrip()}\n\n{TRAILER}\n"
