"""Shared git helpers for the workspace layer: opening the repository, the identities and
pathspecs our commits use (checkpoints: m2-mcp's; commits made for the user: the user's,
with an m2-mcp trailer)."""

from __future__ import annotations

import os
from pathlib import Path

import git

from m2_mcp.errors import UsageError

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
