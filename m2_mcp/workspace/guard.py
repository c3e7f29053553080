"""The test guard: tests and test configuration stay as they were during a run."""

from __future__ import annotations

import os
import shutil
import stat

from m2_mcp.repo import Repo
from m2_mcp.workspace.snapshot import read_regular

SKIP_DIRS = {".git", "node_modules", "__pycache__", ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
FILE_MAX = 8 << 20  # protected files kept in memory up to this size each...
TOTAL_MAX = 256 << 20  # ...and this much in all; larger ones are watched by size and mtime only


class TestGuard:
    """Keeps tests and test configuration as they were: detects and reverts changes by any tool
    (shell included). It walks the tree itself, so a file hidden by a new .gitignore is still seen.
    Only regular files are read (size-capped); symlinks are recorded as links, never followed;
    FIFOs, sockets and devices are never opened."""

    __test__ = False  # not a pytest class

    def __init__(self, repo: Repo):
        self.repo = repo
        self.saved = self._read()

    def _read(self) -> dict[str, tuple]:
        """path -> ("file", bytes, perm) | ("big", size, mtime_ns, perm) | ("link", target) | ("other", type)"""
        files, total = {}, 0
        root = self.repo.root
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            rels = {name: name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                    for name in [*dirnames, *filenames]}
            links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            # skip tool caches and virtualenvs (environment tampering is beyond a file guard)
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and d not in links
                           and not os.path.exists(os.path.join(dirpath, d, "pyvenv.cfg"))]
            for name in [*filenames, *links]:
                rel = rels[name]
                if not Repo.is_protected(rel):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                    if stat.S_ISLNK(st.st_mode):
                        files[rel] = ("link", os.readlink(path))
                    elif not stat.S_ISREG(st.st_mode):
                        files[rel] = ("other", stat.S_IFMT(st.st_mode))
                    elif st.st_size <= FILE_MAX and total + st.st_size <= TOTAL_MAX \
                            and (data := read_regular(path, FILE_MAX)) is not None:
                        files[rel], total = ("file", data, stat.S_IMODE(st.st_mode)), total + len(data)
                    else:
                        files[rel] = ("big", st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))
                except OSError:
                    pass
        return files

    def revert_changes(self) -> list[str]:
        """Restore changed/deleted protected files and remove new ones; returns the paths touched.
        Files too large to keep are reported, not restored."""
        now = self._read()
        touched = sorted(p for p in set(now) | set(self.saved) if now.get(p) != self.saved.get(p))
        for rel in touched:
            target = self.repo.root / rel
            saved = self.saved.get(rel)
            try:
                if saved is None:
                    target.unlink(missing_ok=True)
                elif saved[0] in ("file", "link"):
                    self._make_parents(rel)
                    if target.is_dir() and not target.is_symlink():
                        shutil.rmtree(target)
                    elif os.path.lexists(target):
                        target.unlink()
                    if saved[0] == "link":
                        os.symlink(saved[1], target)
                    else:
                        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                        with os.fdopen(fd, "wb") as f:
                            f.write(saved[1])
                            os.fchmod(f.fileno(), saved[2])
            except OSError:
                pass  # reported as touched; the final test run shows what it means
        return touched

    def _make_parents(self, rel: str) -> None:
        """Real directories above `rel`: a symlink or file put in their place is removed first,
        so a restore never writes through a link to outside the repository."""
        d = self.repo.root
        for part in rel.split("/")[:-1]:
            d = d / part
            if d.is_symlink() or (d.exists() and not d.is_dir()):
                d.unlink()
            if not d.exists():
                d.mkdir()
