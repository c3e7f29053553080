"""Which Python runs a test command that starts with `python` or `python3`.

An IDE starts the server by absolute path, often with no virtualenv on `PATH`, so a bare
`python` may be missing or the wrong one. In order, the first that exists:

1. the repo's own virtualenv: `.venv/bin/python` or `venv/bin/python` (for a git worktree of
   the repo, the main checkout's too: a git-ignored venv is not copied into a worktree);
2. the active virtualenv (`$VIRTUAL_ENV/bin/python`);
3. `python3`, then `python`, on `PATH`;
4. the interpreter this server runs on (`sys.executable`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Mapping

PYTHON_WORDS = ("python", "python3")
VENV_DIRS = (".venv", "venv")


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def main_checkout(root: Path) -> Path | None:
    """For a linked git worktree, the main checkout it belongs to (read from its `.git` file)."""
    dot_git = root / ".git"
    if not dot_git.is_file():
        return None
    try:
        text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
        if not text.startswith("gitdir:"):
            return None
        gitdir = (root / text.removeprefix("gitdir:").strip()).resolve()
        common = gitdir / "commondir"
        common_dir = (gitdir / common.read_text().strip()).resolve() if common.is_file() else gitdir
    except OSError:
        return None
    return common_dir.parent if common_dir.name == ".git" else None


def find_python(root: Path, env: Mapping[str, str] | None = None) -> str:
    """The interpreter a `python ...` test command in `root` should run with (see the module doc)."""
    env = {**os.environ, **(env or {})}
    for base in (root, main_checkout(root)):
        for name in VENV_DIRS if base else ():
            candidate = base / name / "bin" / "python"
            if _executable(candidate):
                return str(candidate)
    venv = env.get("VIRTUAL_ENV")
    if venv and _executable(Path(venv) / "bin" / "python"):
        return str(Path(venv) / "bin" / "python")
    for word in ("python3", "python"):
        found = shutil.which(word, path=env.get("PATH"))
        if found:
            return found
    return sys.executable


def resolve_command(command: str, root: Path, env: Mapping[str, str] | None = None) -> str:
    """`command` with a leading `python`/`python3` replaced by the interpreter `find_python` picks."""
    head, sep, rest = command.lstrip().partition(" ")
    if head not in PYTHON_WORDS:
        return command
    return shlex.quote(find_python(root, env)) + sep + rest
