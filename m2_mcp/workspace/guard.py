"""The test guard: tests and test configuration stay as they were during a run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from m2_mcp.repo import Repo

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
