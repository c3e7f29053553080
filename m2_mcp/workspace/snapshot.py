"""Byte-exact snapshots of a working tree: the raw side of checkpoints, diffs and undo.

Blobs hold each file's bytes as they are on disk (no clean/smudge filters, no end-of-line
conversion); symlinks are kept as links, never followed; FIFOs, sockets and devices are never
opened. Submodules and nested repositories (any directory holding a `.git`) are left out whole:
they are read-only to the agent, and nothing here reads, writes or deletes inside them.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import git
from gitdb.base import IStream

from m2_mcp.workspace.gitutil import NOT_SOURCE, GitError, run_git

LINK_MODE = "120000"
GITLINK_MODE = b"160000"
# Ignored files checkpoints copy: up to these sizes, outside these directories and virtualenvs.
IGNORED_FILE_MAX = 1 << 20
IGNORED_TOTAL_MAX = 64 << 20
BULKY_DIRS = {"node_modules", ".venv", "venv", "__pycache__", ".tox", ".nox", ".mypy_cache", ".pytest_cache",
              ".ruff_cache", ".cache", ".gradle"}


@dataclass
class Scan:
    """The working tree's tracked and untracked (not ignored) files, as git blobs."""
    entries: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (git mode, blob sha)
    perms: dict[str, int] = field(default_factory=dict)  # regular files: exact permission bits
    present: set[str] = field(default_factory=set)  # every path seen, readable or not


def open_regular(path: Path | str) -> int | None:
    """A read descriptor for a regular file, without following a final symlink and without
    blocking on a FIFO; None for anything else (or an error)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return fd
    os.close(fd)
    return None


def read_regular(path: Path | str, limit: int) -> bytes | None:
    """The bytes of a regular file of at most `limit` bytes; None otherwise."""
    fd = open_regular(path)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    return data if len(data) <= limit else None


def blob_sha(path: Path | str) -> str | None:
    """The git blob id of a file's raw bytes (a symlink: of its target); None if neither."""
    try:
        if os.path.islink(path):
            data = os.fsencode(os.readlink(path))
            return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    except OSError:
        return None
    fd = open_regular(path)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as f:
        digest = hashlib.sha1(b"blob %d\0" % os.fstat(f.fileno()).st_size)
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def store_blob(g: git.Repo, data: bytes) -> str:
    return g.odb.store(IStream(b"blob", len(data), io.BytesIO(data))).hexsha.decode()


def nested_repo_filter(root: Path):
    """inside(rel) -> True when a directory above `rel` (below root) holds a `.git`."""
    cache: dict[str, bool] = {}

    def inside(rel: str) -> bool:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in cache:
                cache[d] = os.path.lexists(root / d / ".git")
            if cache[d]:
                return True
        return False

    return inside


def index_listing(root: Path) -> bytes:
    """The index exactly, conflict stages included (`git ls-files -s -z`)."""
    return run_git(root, "ls-files", "-s", "-z")


def scan_tree(g: git.Repo, private: set[str] | frozenset = frozenset()) -> Scan:
    """`private`: paths to leave out although git does not ignore them (see create_checkpoint)."""
    root = Path(g.working_tree_dir)
    gitlinks = {line.split(b"\t", 1)[1] for line in index_listing(root).split(b"\0")
                if line.startswith(GITLINK_MODE)}
    listing = run_git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", ".", *NOT_SOURCE)
    inside = nested_repo_filter(root)
    scan, files = Scan(), []
    for raw in sorted(set(filter(None, listing.split(b"\0")))):
        rel = os.fsdecode(raw)
        if rel.endswith("/") or raw in gitlinks or inside(rel) or rel in private:
            continue  # nested repositories and submodules
        try:
            st = os.lstat(root / rel)
        except OSError:
            continue  # deleted
        if stat.S_ISLNK(st.st_mode):
            scan.present.add(rel)
            scan.entries[rel] = (LINK_MODE, store_blob(g, os.fsencode(os.readlink(root / rel))))
        elif stat.S_ISREG(st.st_mode):
            scan.present.add(rel)
            if os.access(root / rel, os.R_OK):
                files.append((rel, st))
    plain = [(rel, st) for rel, st in files if "\n" not in rel]
    try:
        out = run_git(root, "hash-object", "-w", "--no-filters", "--stdin-paths",
                      input=b"".join(os.fsencode(rel) + b"\n" for rel, _ in plain)).split() if plain else []
        for (rel, st), sha in zip(plain, out):
            scan.entries[rel] = (_git_mode(st.st_mode), sha.decode())
    except GitError:  # a file vanished or changed type meanwhile (an editor's temp file): one by one
        pass
    for rel, st in files:
        if rel not in scan.entries:
            data = read_regular(root / rel, st.st_size + (1 << 30))
            if data is not None:
                scan.entries[rel] = (_git_mode(st.st_mode), store_blob(g, data))
    for rel, st in files:
        if rel in scan.entries:
            scan.perms[rel] = stat.S_IMODE(st.st_mode)
    return scan


def _git_mode(st_mode: int) -> str:
    return "100755" if st_mode & 0o100 else "100644"


def write_tree(g: git.Repo, entries: dict[str, tuple[str, str]]) -> str:
    """A tree object of these entries, built in a temporary index (the user's is not touched)."""
    root = Path(g.working_tree_dir)
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        run_git(root, "read-tree", "--empty", env=env)
        info = b"".join(f"{mode} {sha}\t".encode() + os.fsencode(rel) + b"\0" for rel, (mode, sha) in entries.items())
        run_git(root, "update-index", "-z", "--index-info", input=info, env=env)
        return run_git(root, "write-tree", env=env).decode().strip()


def snapshot_tree(g: git.Repo) -> str:
    """The tree of the working tree as it is on disk (tracked + untracked, not ignored)."""
    return write_tree(g, scan_tree(g).entries)


def ignored_files(g: git.Repo, private: set[str] | frozenset = frozenset()) -> dict[str, os.stat_result]:
    """Every git-ignored file and symlink, except inside dependency/tool/virtualenv directories,
    nested repositories and `.git` itself; plus the `private` paths that exist."""
    root = Path(g.working_tree_dir)
    listed = run_git(root, "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory")
    inside = nested_repo_filter(root)
    found: dict[str, os.stat_result] = {}

    def visit(rel: str) -> None:
        try:
            st = os.lstat(root / rel)
        except OSError:
            return
        if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            if not rel.endswith(".pyc"):
                found[rel] = st
        elif stat.S_ISDIR(st.st_mode):
            path = root / rel
            if path.name in BULKY_DIRS or path.name == ".git" or (path / "pyvenv.cfg").exists() \
                    or (path / ".git").exists():
                return
            try:
                names = sorted(os.listdir(path))
            except OSError:
                return
            for name in names:
                visit(f"{rel}/{name}")

    for raw in filter(None, listed.split(b"\0")):
        rel = os.fsdecode(raw).rstrip("/")
        if rel and not inside(rel + "/x") and not (BULKY_DIRS | {".git"}) & set(rel.split("/")):
            visit(rel)
    for rel in private:
        if rel not in found and not inside(rel):
            try:
                st = os.lstat(root / rel)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                found[rel] = st
    return found
