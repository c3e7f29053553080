"""Shared git helpers for the workspace layer: opening the repository, the identity and
pathspecs every commit of ours uses."""

from __future__ import annotations

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

