"""Bringing changes into a working tree through git, all or nothing, never clobbering.

- `apply_patch_text`: a unified diff as `git diff` writes it (several files, new files,
  deletions, renames, mode changes) applied with `git apply` to the working tree only (the
  index is not touched). Every path passes the same rules as every tool; whitespace-damaged
  hunks are retried with `--recount`, `--ignore-whitespace` and less context.
- `merge_into_worktree`: a task's result (two trees: where it started, where it ended)
  merged 3-way into the user's working tree, per file with `git merge-file` (base = start,
  ours = the user's file now, theirs = the task's). Every file is merged in memory first;
  if any file conflicts nothing is written. Before writing, a checkpoint (`m2-mcp undo`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import git

from m2_mcp import fsops
from m2_mcp.errors import ToolError
from m2_mcp.repo import Repo
from m2_mcp.workspace.checkpoint import close_checkpoint, create_checkpoint
from m2_mcp.workspace.gitutil import open_git

# Tried in order until `git apply --check` accepts the patch: exact first, then the repairs
# that place damaged hunks: wrong line counts, changed runs of whitespace, trailing whitespace
# lost or added (`--whitespace=fix`, which also strips it from added lines), and less context
# (never below one line).
# (`--ignore-whitespace` and `--whitespace=fix` do not work together: separate steps.)
_R, _IW, _FIX = ["--recount"], ["--ignore-whitespace"], ["--whitespace=fix"]
LADDER: list[list[str]] = [[], _R, _R + _IW, _R + _FIX, *([*_R, *ws, c] for c in ("-C2", "-C1") for ws in (_IW, _FIX))]
LOCK_WAIT_S = 10.0


# --------------------------------------------------------------------------- path rules


def check_target(repo: Repo, rel: str) -> Path:
    """The absolute path a change to `rel` writes, after every tool's path rules, or ToolError.

    `Repo.resolve` (inside the root, no `.git` at any depth, symlinks resolved, not inside a nested
    repository or submodule, test protection), with a symlink target replaced, never followed."""
    if not rel or rel.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", rel):
        raise ToolError(f"refused: absolute path in patch: {rel}")
    parts = rel.replace("\\", "/").split("/")
    if ".." in parts:
        raise ToolError(f"refused: path leaves the repository: {rel}")
    if any(p.lower() == ".git" for p in parts):
        raise ToolError(f"refused: path is inside a .git directory: {rel}")
    parent = repo.resolve(os.path.dirname(rel) or ".")  # symlinks in the parents are followed
    target = parent / parts[-1]
    if not target.is_symlink():
        target = repo.resolve(rel, write=True)  # test protection too
    elif repo.protect_tests and Repo.is_protected(rel):  # a link itself is replaced, never followed
        repo.resolve(rel, write=True)
    repo.refuse_nested(target.relative_to(repo.root))  # a link itself too: its directory may be a nested repo
    return target


# --------------------------------------------------------------------------- apply_patch


@dataclass
class PatchOutcome:
    files: list[str]
    summary: list[str]
    options: list[str]


_HEADER = re.compile(r"^(?:--- |\+\+\+ |rename from |rename to |copy from |copy to )(.*)$")


def _unquote(name: str) -> str:
    """A path as git quotes it ("a/b\\tc" with C escapes), or as is; any tab-separated date dropped."""
    name = name.rstrip("\n")
    if name.startswith('"') and name.endswith('"') and len(name) > 1:
        raw = name[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
        return raw.encode("latin-1", "replace").decode("utf-8", "replace")
    return name.split("\t")[0]


def _raw_names(text: str) -> list[str]:
    """Names in the patch's headers, before git strips the a/ b/ prefixes."""
    names = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        header = line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")
        header = header or (line.startswith("+++ ") and i > 0 and lines[i - 1].startswith("--- "))
        match = _HEADER.match(line)
        if match and (header or not line.startswith(("--- ", "+++ "))):
            name = _unquote(match.group(1))
            if name != "/dev/null":
                names.append(name)
    return names


def _strip_option(text: str) -> list[str]:
    """`-p0` for a patch whose ---/+++ names carry no a/ b/ prefixes (hand-written), so that
    `src/x.py` is not read as `x.py`; git's default `-p1` otherwise."""
    if re.search(r"^diff --git ", text, re.M):
        return []
    names = [m.group(1) for m in re.finditer(r"^(?:---|\+\+\+) (\S.*)$", text, re.M)]
    names = [_unquote(n) for n in names if _unquote(n) != "/dev/null"]
    return ["-p0"] if names and not all(n.startswith(("a/", "b/")) for n in names) else []


def _git_apply(g: git.Repo, *args: str) -> tuple[int, str, str]:
    status, out, err = g.git.apply(*args, with_extended_output=True, with_exceptions=False)
    return status, out, err


def _touched(g: git.Repo, patch_file: str, strip: list[str]) -> list[str]:
    """Every path git would write for this patch (for renames and copies: the new name)."""
    status, out, err = _git_apply(g, "--numstat", "-z", "--recount", *strip, patch_file)
    if status != 0:
        raise ToolError(f"not a patch git can read: {_first_error(err)}")
    parts, names = out.split("\0"), []
    i = 0
    while i < len(parts):
        entry = parts[i]
        i += 1
        if not entry:
            continue
        fields = entry.split("\t", 2)
        if len(fields) == 3 and fields[2]:
            names.append(fields[2])
        elif len(fields) == 3:  # a rename or copy: the two names follow
            names += [n for n in parts[i:i + 2] if n]
            i += 2
    return names


def _first_error(err: str) -> str:
    lines = [ln.removeprefix("error: ").strip() for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if not ln.startswith(("warning:", "Checking patch", "Applied patch", "hint:"))]
    return (errors or lines or ["git apply failed"])[0]


def _hunk_header(text: str, path: str, line: int) -> str | None:
    """The `@@ ... @@` header of the hunk of `path` that starts at old line `line`."""
    current = None
    for row in text.splitlines():
        if row.startswith("+++ ") or row.startswith("--- "):
            name = _unquote(row[4:])
            if name != "/dev/null":
                current = name.split("/", 1)[1] if name[:2] in ("a/", "b/") else name
        elif row.startswith("@@") and current == path:
            match = re.match(r"@@ -(\d+)", row)
            if match and int(match.group(1)) in (line, line - 1, line + 1):
                return "@@" + row.split("@@")[1] + "@@"
    return None


def _failure(text: str, err: str) -> str:
    """One line: which file and hunk did not apply, and that nothing was changed."""
    failed = re.search(r"patch failed: (.+):(\d+)", err)
    if failed:
        path, line = failed.group(1), int(failed.group(2))
        hunk = _hunk_header(text, path, line)
        where = f"hunk {hunk}" if hunk else f"the hunk at line {line}"
        return (f"patch does not apply, no file was changed: {path}: {where} does not match the file "
                "(read the file again and resend the patch)")
    return f"patch does not apply, no file was changed: {_first_error(err)}"


def apply_patch_text(repo: Repo, patch: str, check: bool = False) -> PatchOutcome:
    """Apply (or with `check`, only validate) a unified diff to the working tree, all or nothing."""
    if not patch.strip():
        raise ToolError("patch is empty")
    text = patch if patch.endswith("\n") else patch + "\n"  # vLLM strips the final newline
    for name in _raw_names(text):
        if name.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", name):
            raise ToolError(f"refused: absolute path in patch: {name}")
        if ".." in name.replace("\\", "/").split("/"):
            raise ToolError(f"refused: path leaves the repository: {name}")
    g = open_git(repo.root)
    with g, tempfile.TemporaryDirectory() as tmp:
        patch_file = os.path.join(tmp, "change.patch")
        Path(patch_file).write_text(text, encoding="utf-8", errors="surrogateescape")
        strip = _strip_option(text)
        names = _touched(g, patch_file, strip)  # new names; renamed/copied files' old names come next
        names += [_unquote(ln.split(" ", 2)[2]) for ln in text.splitlines()
                  if ln.startswith(("rename from ", "copy from "))]
        if not names:
            raise ToolError("no file changes found in the patch (expected `diff --git`/`---`/`+++` headers)")
        for name in dict.fromkeys(names):
            check_target(repo, name)
        first_error = None
        for options in LADDER:
            status, _, err = _git_apply(g, "--check", "--whitespace=nowarn", *strip, *options, patch_file)
            if status == 0:
                break
            first_error = first_error or err
        else:
            raise ToolError(_failure(text, first_error or ""))
        _, summary, _ = _git_apply(g, "--summary", *strip, *options, patch_file)
        if not check:
            status, _, err = _git_apply(g, "--whitespace=nowarn", *strip, *options, patch_file)
            if status != 0:
                raise ToolError(_failure(text, err))
    files = list(dict.fromkeys(names))
    return PatchOutcome(files=files, summary=[ln.strip() for ln in summary.splitlines() if ln.strip()],
                        options=options)


# --------------------------------------------------------------------------- 3-way result merge


@dataclass
class MergeOutcome:
    applied: bool
    files: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    checkpoint: str | None = None
    error: str | None = None


@dataclass
class _Entry:
    mode: int  # 0o100644, 0o100755, 0o120000; 0 for "absent"
    data: bytes = b""


ABSENT = _Entry(0)


def _on_disk(target: Path) -> _Entry | None:
    """The user's current file as a tree entry; None when it is something we cannot merge (a directory)."""
    if target.is_symlink():
        return _Entry(0o120000, os.fsencode(os.readlink(target)))
    if not target.exists():
        return ABSENT
    if not target.is_file():
        return None
    mode = 0o100755 if target.stat().st_mode & stat.S_IXUSR else 0o100644
    return _Entry(mode, target.read_bytes())


def _blob(g: git.Repo, mode: str, sha: str) -> _Entry:
    if int(mode, 8) == 0:
        return ABSENT
    return _Entry(int(mode, 8), g.git.cat_file("blob", sha, stdout_as_string=False,
                                            strip_newline_in_stdout=False))


def _merge_file(g: git.Repo, ours: bytes, base: bytes, theirs: bytes) -> bytes | None:
    """`git merge-file` in memory: the merged bytes, or None on a conflict (or binary files)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, data in (("ours", ours), ("base", base), ("theirs", theirs)):
            paths.append(os.path.join(tmp, name))
            Path(paths[-1]).write_bytes(data)
        status, out, _ = g.git.merge_file("-p", "-q", *paths, with_extended_output=True, with_exceptions=False,
                                          stdout_as_string=False, strip_newline_in_stdout=False)
    return out if status == 0 else None


def _merged(g: git.Repo, ours: _Entry, base: _Entry, theirs: _Entry) -> _Entry | None:
    """The entry to write (ABSENT = delete), or None when the user's change and the task's collide."""
    if (ours.mode, ours.data) == (base.mode, base.data) or (ours.mode, ours.data) == (theirs.mode, theirs.data):
        return theirs
    regular = {0o100644, 0o100755}
    if not {ours.mode, base.mode, theirs.mode} <= regular:
        return None  # added/deleted on one side and changed on the other, or symlinks that differ
    if ours.mode == base.mode:
        mode = theirs.mode
    elif theirs.mode == base.mode:
        mode = ours.mode
    else:
        mode = theirs.mode if ours.mode == theirs.mode else 0
    data = ours.data if theirs.data == base.data else _merge_file(g, ours.data, base.data, theirs.data)
    return _Entry(mode, data) if mode and data is not None else None


def _write(root: Path, target: Path, entry: _Entry) -> None:
    if entry.mode == 0:
        if target.is_symlink() or target.exists():
            target.unlink()
        parent = target.parent
        while parent != root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
        return
    if target.is_symlink() or (entry.mode == 0o120000 and target.exists()):
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    if entry.mode == 0o120000:
        os.symlink(os.fsdecode(entry.data), target)
        return
    rel = target.relative_to(root)
    fsops.write_atomic(root, rel.parts, entry.data, rel.as_posix())  # by descriptor: no symlinked parents
    current = stat.S_IMODE(target.stat().st_mode)
    exec_bits = (current & 0o444) >> 2
    os.chmod(target, current | exec_bits if entry.mode == 0o100755 else current & ~0o111)


@contextlib.contextmanager
def _tree_lock(g: git.Repo, wait_s: float = LOCK_WAIT_S):
    """The lock an in-place `fix` run holds on the working tree; yields False if it stays taken."""
    with open(Path(g.git_dir) / "m2-mcp.lock", "a") as lock:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.2)
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def merge_into_worktree(root: Path, base: str, result: str, label: str) -> MergeOutcome:
    """Merge the change from tree `base` to tree `result` into the working tree at `root`, 3-way.

    All files are merged in memory first; on any conflict nothing is written. Otherwise a
    checkpoint is taken (so `m2-mcp undo` takes the change back) and every file is written.
    The index is not touched."""
    g = open_git(root)
    repo = Repo(root)
    raw = g.git.diff_tree("-r", "-z", "--no-renames", base, result)
    fields = raw.split("\0")
    plan: list[tuple[str, Path, _Entry]] = []
    conflicts: list[str] = []
    created: list[str] = []  # files the change adds: undo deletes them (while unchanged)
    with _tree_lock(g) as locked:
        if not locked:
            return MergeOutcome(False, error="another m2-mcp run is changing the working tree; "
                                             "the change was not applied")
        for i in range(0, len(fields) - 1, 2):
            meta, rel = fields[i].lstrip(":").split(), fields[i + 1]
            if len(meta) < 5:
                continue
            try:
                target = check_target(repo, rel)
            except ToolError as exc:
                return MergeOutcome(False, error=str(exc))
            ours = _on_disk(target)
            merged = None if ours is None else _merged(g, ours, _blob(g, meta[0], meta[2]), _blob(g, meta[1], meta[3]))
            if merged is None:
                conflicts.append(rel)
            elif ours is None or (merged.mode, merged.data) != (ours.mode, ours.data):
                plan.append((rel, target, merged))
                if ours is ABSENT and merged.mode != 0:
                    created.append(rel)
        if conflicts:
            return MergeOutcome(False, conflicts=conflicts)
        checkpoint = create_checkpoint(root, label) if plan else None
        for _, target, entry in plan:
            if entry.mode == 0 and target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                _write(repo.root, target, entry)
        if checkpoint is not None:
            checkpoint = close_checkpoint(root, checkpoint, created=created)
    return MergeOutcome(True, files=[rel for rel, _, _ in plan], checkpoint=checkpoint.ref if checkpoint else None)
