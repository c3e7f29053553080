"""Checkpoints: the user's whole state before a run, restorable byte for byte and mode for mode.

A checkpoint is a commit under `refs/m2-mcp/checkpoints/` whose tree holds the working tree's
raw bytes (tracked and untracked files git does not ignore; see snapshot.py), plus a private
record in `.git/m2-mcp/checkpoints/<id>/` (mode 0700, never in a ref, so `git push --mirror`
does not send it): exact permission bits, the index as `git ls-files -s` lists it (conflict
stages included; its blobs are kept alive by a parent commit), copies of small git-ignored files
(`.env`...), and, once the run ended, the files it created (undo deletes only those, and only
while unchanged). Nothing of the user's (files, index) is touched while taking one.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import git

from m2_mcp.envcheck import number
from m2_mcp.errors import UsageError
from m2_mcp.workspace.gitutil import AUTHOR_ENV, open_git, run_git
from m2_mcp.workspace.restore import restore_state
from m2_mcp.workspace.snapshot import (GITLINK_MODE, IGNORED_FILE_MAX, IGNORED_TOTAL_MAX, blob_sha, ignored_files,
                                       index_listing, read_regular, scan_tree, write_tree)
from m2_mcp.workspace.snapshot import snapshot_tree  # noqa: F401 (worktree.py imports it from here)

CHECKPOINT_PREFIX = "refs/m2-mcp/checkpoints/"
KEEP_ENV, KEEP_DEFAULT = "M2_MCP_CHECKPOINTS_KEEP", 20
AGE_ENV, AGE_DEFAULT = "M2_MCP_CHECKPOINTS_MAX_DAYS", 30.0
ORPHAN_AGE_S = 3600  # a record without its ref (a run killed while checkpointing) is removed after this


@dataclass
class Checkpoint:
    ref: str
    commit: str  # snapshot commit of the working tree
    record: Path | None = None  # the private record directory


def records_base(g: git.Repo) -> Path:
    return Path(g.common_dir) / "m2-mcp" / "checkpoints"


def record_dir(g: git.Repo, ref: str) -> Path:
    return records_base(g) / ref.removeprefix(CHECKPOINT_PREFIX)


def create_checkpoint(root: Path, label: str = "before m2-mcp run", *, prune: bool = True,
                      private: set[str] | frozenset = frozenset()) -> Checkpoint:
    """Record the user's full state without changing anything; returns the checkpoint.
    `private` paths are kept like ignored files (out of refs) even if git no longer ignores
    them (undo passes the files that were ignored, in case a run changed .gitignore)."""
    g = open_git(root)
    base = records_base(g)
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    for directory in (base, base.parent):
        os.chmod(directory, 0o700)
    tmp = base / f".tmp-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir(mode=0o700)
    try:
        started = time.time()
        scan = scan_tree(g, private)
        listing = index_listing(Path(g.working_tree_dir))
        (tmp / "index").write_bytes(listing)
        meta = {"version": 2, "label": label, "created_at": started, "perms": scan.perms,
                "present": sorted(scan.present), "ignored": _copy_ignored(g, tmp / "ignored", private),
                "private": sorted(private)}
        (tmp / "meta.json").write_text(json.dumps(meta))
        parents = ["-p", g.head.commit.hexsha] if g.head.is_valid() else []
        keeper = _index_keeper(g, listing)
        if keeper:  # staged and conflict-stage blobs live as long as the checkpoint
            parents += ["-p", keeper]
        tree = write_tree(g, scan.entries)
        commit = g.git.commit_tree("--no-gpg-sign", tree, *parents, "-m", f"m2-mcp checkpoint: {label}",
                                   env=AUTHOR_ENV)
        ref = f"{CHECKPOINT_PREFIX}{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{time.time_ns() % 10**9:09d}-{commit[:8]}"
        final = record_dir(g, ref)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    g.git.update_ref(ref, commit)  # last: a ref always has its whole record
    if prune:
        prune_checkpoints(root, protect={ref})
    return Checkpoint(ref=ref, commit=commit, record=final)


def _copy_ignored(g: git.Repo, dest: Path, private: set[str] | frozenset) -> dict[str, dict]:
    """Copy small ignored files into `dest` (private); returns what was seen, copied or not."""
    root, seen, total = Path(g.working_tree_dir), {}, 0
    for rel, st in ignored_files(g, private).items():
        entry = {"perm": stat.S_IMODE(st.st_mode), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "copied": False}
        if stat.S_ISLNK(st.st_mode):
            entry.update(link=os.readlink(root / rel), perm=None, copied=True)
        elif st.st_size <= IGNORED_FILE_MAX and total + st.st_size <= IGNORED_TOTAL_MAX:
            data = read_regular(root / rel, IGNORED_FILE_MAX)
            if data is not None:
                target = dest / rel
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                entry["copied"], total = True, total + len(data)
        seen[rel] = entry
    return seen


def _index_keeper(g: git.Repo, listing: bytes) -> str | None:
    """A commit whose tree names every blob of the index (by id), so git keeps them all."""
    shas = sorted({line.split(b" ")[1].decode() for line in listing.split(b"\0")
                   if line and not line.startswith(GITLINK_MODE)})
    if not shas:
        return None
    tree = run_git(Path(g.working_tree_dir), "mktree",
                   input="".join(f"100644 blob {sha}\t{sha}\n" for sha in shas).encode()).decode().strip()
    return g.git.commit_tree("--no-gpg-sign", tree, "-m", "m2-mcp checkpoint: index blobs", env=AUTHOR_ENV)


def load_record(g: git.Repo, ref: str) -> tuple[Path, dict] | None:
    path = record_dir(g, ref)
    try:
        return path, json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def close_checkpoint(root: Path, checkpoint: Checkpoint, created: list[str] | None = None) -> Checkpoint | None:
    """After a run (or a patch applied after the checkpoint): drop the checkpoint if nothing
    changed (returns None), else record the files the run created (`created`, or every file now
    present that the checkpoint did not see and that appeared after it), with their content,
    so undo deletes them only while unchanged."""
    g = open_git(root)
    loaded = load_record(g, checkpoint.ref)
    if loaded is None:
        return checkpoint
    record, meta = loaded
    root = Path(g.working_tree_dir)
    private = set(meta.get("private", []))
    scan, ignored = scan_tree(g, private), ignored_files(g, private)
    if (write_tree(g, scan.entries) == g.commit(checkpoint.commit).tree.hexsha and scan.perms == meta["perms"]
            and index_listing(root) == (record / "index").read_bytes() and _ignored_same(root, record, meta, ignored)):
        delete_checkpoint(g, checkpoint.ref)
        return None
    if created is None:
        before, since = set(meta["present"]) | set(meta["ignored"]), meta["created_at"] - 2
        created = [rel for rel in sorted(scan.present | set(ignored)) if rel not in before and _ctime(root / rel) >= since]
    shas = {rel: blob_sha(root / rel) for rel in created}
    tmp = record / "created.json.tmp"
    tmp.write_text(json.dumps({rel: sha for rel, sha in shas.items() if sha}))
    os.replace(tmp, record / "created.json")
    return checkpoint


def _ctime(path: Path) -> float:
    try:
        return os.lstat(path).st_ctime
    except OSError:
        return 0.0


def _ignored_same(root: Path, record: Path, meta: dict, now: dict[str, os.stat_result]) -> bool:
    if set(now) != set(meta["ignored"]):
        return False
    for rel, st in now.items():
        was = meta["ignored"][rel]
        if stat.S_ISLNK(st.st_mode):
            if was.get("link") is None or os.readlink(root / rel) != was["link"]:
                return False
        elif was.get("link") is not None or stat.S_IMODE(st.st_mode) != was["perm"] or st.st_size != was["size"]:
            return False
        elif not was["copied"]:
            if st.st_mtime_ns != was["mtime_ns"]:
                return False
        elif read_regular(root / rel, IGNORED_FILE_MAX) != read_regular(record / "ignored" / rel, IGNORED_FILE_MAX):
            return False
    return True


def list_checkpoints(root: Path) -> list[dict]:
    g = open_git(root)
    out = g.git.for_each_ref(CHECKPOINT_PREFIX, "--sort=-refname",
                             "--format=%(refname)%09%(objectname)%09%(committerdate:iso8601)%09"
                             "%(committerdate:unix)%09%(subject)")
    rows = []
    for line in out.splitlines():
        ref, sha, date, unix, subject = line.split("\t", 4)
        rows.append({"ref": ref, "commit": sha, "date": date, "time": int(unix),
                     "label": subject.removeprefix("m2-mcp checkpoint: ")})
    return rows


def delete_checkpoint(g: git.Repo, ref: str) -> None:
    g.git.update_ref("-d", ref)  # the ref first: a record without a ref is only an orphan
    shutil.rmtree(record_dir(g, ref), ignore_errors=True)


def prune_checkpoints(root: Path, protect: set[str] = frozenset()) -> list[str]:
    """Keep the newest M2_MCP_CHECKPOINTS_KEEP checkpoints, and of those only the ones younger
    than M2_MCP_CHECKPOINTS_MAX_DAYS (the newest is always kept); remove orphan records."""
    keep, days = int(number(KEEP_ENV, KEEP_DEFAULT)), number(AGE_ENV, AGE_DEFAULT)
    g, now = open_git(root), time.time()
    rows = list_checkpoints(root)
    dropped = [row["ref"] for i, row in enumerate(rows) if row["ref"] not in protect
               and (i >= keep or (i > 0 and now - row["time"] > days * 86400))]
    for ref in dropped:
        delete_checkpoint(g, ref)
    base = records_base(g)
    live = {row["ref"].removeprefix(CHECKPOINT_PREFIX) for row in rows}
    for entry in base.iterdir() if base.is_dir() else []:
        try:
            if entry.name not in live and now - entry.lstat().st_mtime > ORPHAN_AGE_S:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass
    return dropped


def restore_checkpoint(root: Path, ref: str | None = None) -> dict:
    """Put the working tree, its modes and the index back as the checkpoint recorded them.

    Without `ref`, the newest checkpoint taken before a run. The current state is
    checkpointed first, so a restore can itself be undone. Files the checkpoint did not have
    are deleted only if the run created them and they are unchanged since; submodules and
    nested repositories are left alone.
    """
    g = open_git(root)
    checkpoints = list_checkpoints(root)
    if not checkpoints:
        raise UsageError(f"no m2-mcp checkpoints in {root}")
    runs = [c for c in checkpoints if not c["label"].startswith("before undo")]
    chosen = (runs or checkpoints)[0] if ref is None else next(
        (c for c in checkpoints if ref in (c["ref"], c["commit"], c["ref"].removeprefix(CHECKPOINT_PREFIX))), None)
    if chosen is None:
        raise UsageError(f"no such checkpoint: {ref} (see 'm2-mcp undo --list')")
    loaded = load_record(g, chosen["ref"])
    safety = create_checkpoint(root, f"before undo to {chosen['ref'].removeprefix(CHECKPOINT_PREFIX)}", prune=False,
                               private=set(loaded[1]["ignored"]) if loaded else frozenset())
    done = restore_state(g, chosen["commit"], loaded, safety.commit, load_record(g, safety.ref))
    # undoing this undo deletes what it brought back; an undo that changed nothing keeps no safety checkpoint
    kept = close_checkpoint(root, safety, created=done.pop("created"))
    prune_checkpoints(root, protect={chosen["ref"], safety.ref})
    return {"restored": chosen["ref"], "safety_checkpoint": kept.ref if kept else None, **done}
