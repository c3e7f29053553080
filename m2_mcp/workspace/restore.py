"""Undo's write side: put files, permission bits and the index back exactly as a checkpoint
recorded them. Blob bytes are written as they are (no filters, no end-of-line conversion); no
symlink is followed, nothing is written inside a nested repository or submodule, and a file the
checkpoint did not have is deleted only if the run created it and it is unchanged since."""

from __future__ import annotations

import binascii
import json
import os
import re
import stat
import tempfile
from pathlib import Path

import git

from m2_mcp.workspace.gitutil import GitError, run_git
from m2_mcp.workspace.snapshot import GITLINK_MODE, IGNORED_FILE_MAX, LINK_MODE, blob_sha, read_regular


def ls_tree(root: Path, commit: str) -> dict[str, tuple[str, str]]:
    out = run_git(root, "ls-tree", "-r", "-z", "--full-tree", commit)
    entries = {}
    for line in filter(None, out.split(b"\0")):
        head, path = line.split(b"\t", 1)
        mode, _, sha = head.decode().split(" ")
        if mode.encode() != GITLINK_MODE:
            entries[os.fsdecode(path)] = (mode, sha)
    return entries


def restore_state(g: git.Repo, commit: str, loaded: tuple[Path, dict] | None, current_commit: str,
                  current: tuple[Path, dict] | None) -> dict:
    """Restore `commit` (+ its record, if any) over the state captured as `current_commit`."""
    root = Path(g.working_tree_dir)
    record, meta = loaded or (None, {})
    wanted, now = ls_tree(root, commit), ls_tree(root, current_commit)
    perms = meta.get("perms")
    ignored = meta.get("ignored", {})
    if record is None:  # a checkpoint of an older m2-mcp: ignored files were a parent commit
        legacy = re.search(r"^ignored-files: ([0-9a-f]+)$", g.commit(commit).message, re.M)
        if legacy:
            wanted = {**ls_tree(root, legacy.group(1)), **wanted}
    keep_dirs = {str(Path(rel).parent) for rel in [*wanted, *meta.get("present", []), *ignored]}
    removed, skipped, created, lost = [], [], [], []
    for rel, sha in _created(record).items():
        if rel not in wanted and rel not in ignored and _parents_ok(root, rel) and blob_sha(root / rel) == sha:
            os.unlink(root / rel)
            removed.append(rel)
            _remove_empty_dirs(root, rel, keep_dirs)
    for rel, (mode, sha) in wanted.items():
        perm = perms.get(rel) if perms is not None else (0o755 if mode == "100755" else 0o644)
        same = (now.get(rel) == (mode, sha) or blob_sha(root / rel) == sha) \
            and (mode == LINK_MODE) == os.path.islink(root / rel)
        if same and (mode == LINK_MODE or _perm(root / rel) == perm):
            continue
        data = g.odb.stream(binascii.unhexlify(sha)).read()
        if not os.path.lexists(root / rel):
            created.append(rel)
        ok = _put(root, rel, link=os.fsdecode(data), perm=None) if mode == LINK_MODE else \
            _put(root, rel, data=data, perm=perm)
        if not ok:
            skipped.append(rel)
    for rel, entry in ignored.items():
        if entry.get("link") is not None:
            if not (os.path.islink(root / rel) and os.readlink(root / rel) == entry["link"]):
                _put(root, rel, link=entry["link"], perm=None) or skipped.append(rel)
        elif entry["copied"]:
            data = read_regular(record / "ignored" / rel, IGNORED_FILE_MAX)
            if data is not None and not os.path.lexists(root / rel):
                created.append(rel)
            if data is not None and (read_regular(root / rel, IGNORED_FILE_MAX) != data
                                     or _perm(root / rel) != entry["perm"]):
                _put(root, rel, data=data, perm=entry["perm"]) or skipped.append(rel)
        elif not os.path.lexists(root / rel):  # too large to copy into the checkpoint, and gone since
            lost.append(rel)
    if record is not None:
        restore_index(root, (record / "index").read_bytes())
    else:
        legacy = re.search(r"^index-tree: ([0-9a-f]+)$", g.commit(commit).message, re.M)
        if legacy:
            run_git(root, "read-tree", legacy.group(1))
    run_git(root, "update-index", "-q", "--refresh", "--unmerged", "--ignore-submodules", check=False)
    seen_now = set(now) | set(current[1]["ignored"] if current else ())
    left = sorted(seen_now - set(wanted) - set(ignored) - set(removed))
    return {"removed": removed, "left": left, "skipped": skipped, "created": created, "lost": lost}


def _created(record: Path | None) -> dict[str, str]:
    try:
        return json.loads((record / "created.json").read_text()) if record else {}
    except (OSError, ValueError):
        return {}


def _perm(path: Path) -> int | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None


def _parents_ok(root: Path, rel: str, create: bool = False) -> bool:
    """Every directory above `rel` is a real directory (not a symlink), outside nested repos."""
    d = root
    for part in rel.split("/")[:-1]:
        d = d / part
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            if not create:
                return False
            os.mkdir(d)
            continue
        if not stat.S_ISDIR(st.st_mode) or os.path.lexists(d / ".git"):
            return False
    return True


def _put(root: Path, rel: str, *, data: bytes = b"", link: str | None = None, perm: int | None = None) -> bool:
    """Write one file (or symlink) atomically with exact permission bits; False if its place is
    taken by a directory that is not empty, or a directory above it is a symlink, a file or a nested repo."""
    target = root / rel
    if not _parents_ok(root, rel, create=True):
        return False
    if os.path.isdir(target) and not os.path.islink(target):
        try:
            os.rmdir(target)  # an empty directory in the file's place holds nothing to lose
        except OSError:
            return False
    tmp = target.with_name(f".{target.name[:200]}.m2undo-{os.getpid()}")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    try:
        if link is not None:
            os.symlink(link, tmp)
        else:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                os.fchmod(f.fileno(), perm)
        os.replace(tmp, target)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return True


def _remove_empty_dirs(root: Path, rel: str, keep: set[str]) -> None:
    parent = Path(rel).parent
    while str(parent) != "." and str(parent) not in keep:
        try:
            os.rmdir(root / parent)
        except OSError:
            return
        parent = parent.parent


def restore_index(root: Path, listing: bytes) -> None:
    """Replace the index with exactly these `git ls-files -s -z` entries (stages included),
    holding git's own index.lock while doing so."""
    index = root / run_git(root, "rev-parse", "--git-path", "index").decode().strip()
    lock = index.with_name(index.name + ".lock")
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        run_git(root, "read-tree", "--empty", env=env)
        run_git(root, "update-index", "-z", "--index-info", input=listing, env=env)
        data = Path(tmp, "index").read_bytes()
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise GitError(f"{lock} exists: another git command is running (or crashed); "
                       "retry when it is done, or remove that file") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(lock, index)
    except BaseException:
        if os.path.lexists(lock):
            os.unlink(lock)
        raise
