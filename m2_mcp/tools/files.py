"""File tools: read with line numbers, write, exact-string edits (single and all-or-nothing multi), find by glob.

Edits tolerate what vLLM's MiniMax-M2 parser does to argument values (it strips leading
and trailing whitespace): see `_replace`. Every path goes through `Repo.resolve`.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import posixpath
import re
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from m2_mcp import budget
from m2_mcp.errors import ToolError
from m2_mcp.repo import Repo
from m2_mcp.rg import find_rg, list_files
from m2_mcp.tools.registry import tool

DEFAULT_READ_LINES = 2000
MAX_LINE_CHARS = 2000
MAX_FOUND_FILES = 500
BINARY_SNIFF_BYTES = 8192
RG_TIMEOUT_S = 60


# --------------------------------------------------------------------------- results


class ReadResult(BaseModel):
    path: str
    content: str = Field(description="numbered lines, `cat -n` style")
    start_line: int
    end_line: int
    total_lines: int
    truncated: bool = Field(description="true when more lines follow; see next_offset")
    next_offset: int | None = None
    note: str | None = None


class WriteResult(BaseModel):
    path: str
    bytes_written: int
    created: bool


class EditResult(BaseModel):
    path: str
    replacements: int
    diff: str


class Edit(BaseModel):
    """One exact-string replacement in one file."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="file path relative to the repository root")
    old_string: str = Field(description="exact text to replace (must match once unless replace_all)")
    new_string: str = Field(description="replacement text")
    replace_all: bool = Field(default=False, description="replace every occurrence")


class MultiEditResult(BaseModel):
    files_changed: list[str]
    edits: int
    diff: str


class FindResult(BaseModel):
    files: list[str]
    total: int
    truncated: bool
    note: str | None = None


# --------------------------------------------------------------------------- read_file


def _is_binary(head: bytes) -> bool:
    return b"\0" in head


def _existing_file(repo: Repo, path: str) -> Path:
    target = repo.resolve(path)
    if target.is_dir():
        raise ToolError(f"{path} is a directory, not a file (use find_files to list files)")
    if not target.exists():
        raise ToolError(f"file not found: {path}")
    return target


@tool()
def read_file(
    repo: Repo,
    path: Annotated[str, Field(description="file path relative to the repository root")],
    offset: Annotated[int, Field(description="1-based line number to start at")] = 1,
    limit: Annotated[int | None, Field(description="maximum number of lines (default 2000)")] = None,
) -> ReadResult:
    """Read a text file with line numbers (`cat -n` style): up to 2000 lines from `offset` (1-based).
    If more lines follow, `truncated` is true and `next_offset` says where to continue.
    Binary files are refused.

    Output is also bounded by the output budget (whole lines only); lines over 2000
    characters are cut with a marker. Non-UTF-8 bytes are shown as U+FFFD.
    """
    if offset < 0:
        raise ToolError("offset must be a 1-based line number")
    offset = max(offset, 1)
    if limit is not None and limit < 1:
        raise ToolError("limit must be at least 1")
    limit = limit or DEFAULT_READ_LINES
    target = _existing_file(repo, path)
    max_tokens = budget.output_tokens()
    out: list[str] = []
    used = 0
    total = 0
    budget_hit = cut_lines = False
    try:
        with open(target, "rb") as f:
            if _is_binary(f.read(BINARY_SNIFF_BYTES)):
                raise ToolError(f"{path} looks like a binary file (it contains NUL bytes); not shown")
            f.seek(0)
            for total, raw in enumerate(f, 1):
                if total < offset or len(out) >= limit or budget_hit:
                    continue
                line = raw.decode("utf-8", "replace").removesuffix("\n").removesuffix("\r")
                if len(line) > MAX_LINE_CHARS:
                    line = line[:MAX_LINE_CHARS] + f" [... line cut: {len(line) - MAX_LINE_CHARS} more characters]"
                    cut_lines = True
                numbered = f"{total:6d}\t{line}"
                cost = budget.estimate_tokens(numbered) + 1  # counted in tokens: dense lines cost more
                if out and used + cost > max_tokens:
                    budget_hit = True
                    continue
                out.append(numbered)
                used += cost
    except OSError as exc:
        raise ToolError(f"cannot read {path}: {exc.strerror or exc}") from None
    rel = repo.rel(target)
    if total == 0:
        return ReadResult(path=rel, content="", start_line=0, end_line=0, total_lines=0, truncated=False,
                          note="the file is empty")
    if offset > total:
        raise ToolError(f"offset {offset} is beyond the end of {path}, which has {total} lines")
    end = offset + len(out) - 1
    notes = []
    truncated = end < total
    if truncated:
        why = " (output budget reached)" if budget_hit else ""
        notes.append(f"showing lines {offset}-{end} of {total}{why}; "
                     f"to read on, call read_file with offset={end + 1}")
    if cut_lines:
        notes.append(f"lines longer than {MAX_LINE_CHARS} characters were cut")
    return ReadResult(
        path=rel, content="\n".join(out), start_line=offset, end_line=end, total_lines=total,
        truncated=truncated, next_offset=end + 1 if truncated else None, note="; ".join(notes) or None,
    )


# --------------------------------------------------------------------------- writing


def _umask() -> int:
    """The process umask, read without changing it (os.umask is not thread-safe to probe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _write_atomic(target: Path, data: bytes) -> None:
    """Write via a temp file in the same directory + os.replace, keeping an existing file's mode."""
    mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o666 & ~_umask()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".m2tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _with_final_newline(text: str, like: str | None = None) -> str:
    if not text or text.endswith("\n"):
        return text
    return text + ("\r\n" if like is not None and like.endswith("\r\n") else "\n")


@tool(read_only=False)
def write_file(
    repo: Repo,
    path: Annotated[str, Field(description="file path relative to the repository root")],
    content: Annotated[str, Field(description="the complete new file content")],
) -> WriteResult:
    """Create or overwrite a file with `content`, creating parent directories.
    The write is atomic and keeps the file's permissions. To change part of a file, use edit_file.

    Non-empty content gets a final newline (vLLM strips it from argument values).
    """
    target = repo.resolve(path, write=True)
    if target.is_dir():
        raise ToolError(f"{path} is a directory")
    created = not target.exists()
    data = _with_final_newline(content).encode("utf-8", "surrogateescape")
    try:
        _write_atomic(target, data)
    except OSError as exc:
        raise ToolError(f"cannot write {path}: {exc.strerror or exc}") from None
    return WriteResult(path=repo.rel(target), bytes_written=len(data), created=created)


# --------------------------------------------------------------------------- edit matching (shared)


def _find_all(text: str, needle: str) -> list[int]:
    starts, i = [], text.find(needle)
    while i != -1:
        starts.append(i)
        i = text.find(needle, i + len(needle))
    return starts


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _whole_lines(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen a span that is being deleted to whole lines (indentation + newline), if it covers them."""
    line_start = text.rfind("\n", 0, start) + 1
    if text[line_start:start].strip():
        return start, end
    if text[end - 1] != "\n":
        line_end = text.find("\n", end)
        line_end = len(text) if line_end == -1 else line_end
        if text[end:line_end].strip():
            return start, end
        end = min(line_end + 1, len(text))
    return line_start, end


def _printable(text: str) -> str:
    """Undecodable bytes (kept as surrogates so edits round-trip) shown as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _closest_lines(text: str, old: str, show: int = 3) -> str:
    """The file lines most like old_string's first line, numbered, as a hint after a failed match."""
    old_lines = old.strip().splitlines()
    first = next((ln.strip() for ln in old_lines if ln.strip()), "")
    if not first:
        return ""
    lines = text.splitlines()
    matcher = difflib.SequenceMatcher(b=first, autojunk=False)
    scored = []
    for i, line in enumerate(lines):
        matcher.set_seq1(line.strip())
        if matcher.real_quick_ratio() >= 0.6 and matcher.quick_ratio() >= 0.6:
            ratio = matcher.ratio()
            if ratio >= 0.6:
                scored.append((ratio, i))
    best = sorted(scored, key=lambda s: -s[0])[:show]
    span = max(1, min(len(old_lines), 6))
    blocks = []
    for _, i in sorted(best, key=lambda s: s[1]):
        block = [f"{n + 1:6d}\t{lines[n][:200]}" for n in range(i, min(i + span, len(lines)))]
        blocks.append("\n".join(block))
    return _printable("\n  ...\n".join(blocks))


def _replace(text: str, old: str, new: str, replace_all: bool) -> tuple[str, int]:
    """Replace `old` by `new` in `text`; returns the new text and the number of replacements.

    `old` must match exactly once (or at least once with `replace_all`). If it does not match
    at all, `old.strip()` is tried, replaced by `new.strip()`: vLLM strips argument values, so
    the first line's indentation and the final newline may be missing from both strings.
    Deleting whole lines removes their indentation and newline too.
    """
    if old == new:
        raise ToolError("old_string and new_string are identical; nothing to change")
    if not old:
        raise ToolError("old_string is empty; use write_file to replace a whole file")
    if "\r\n" in text and "\r" not in old + new:  # a CRLF file edited with LF strings
        old, new = old.replace("\n", "\r\n"), new.replace("\n", "\r\n")
    starts = _find_all(text, old)
    if not starts and old.strip() and old.strip() != old:
        old, new = old.strip(), new.strip()
        starts = _find_all(text, old)
    if not starts:
        hint = _closest_lines(text, old)
        raise ToolError(
            "old_string not found in the file; it must match exactly, whitespace included "
            "(read_file the region and copy the text)" + (f"\nclosest lines in the file:\n{hint}" if hint else "")
        )
    if len(starts) > 1 and not replace_all:
        at = ", ".join(str(_line_of(text, s)) for s in starts[:20]) + (", ..." if len(starts) > 20 else "")
        raise ToolError(
            f"old_string matches {len(starts)} times (at lines {at}); include more surrounding lines "
            "to make it unique, or set replace_all=true to replace every occurrence"
        )
    result = text
    for start in reversed(starts):
        s, e = (start, start + len(old)) if new else _whole_lines(result, start, start + len(old))
        result = result[:s] + new + result[e:]
    if result == text:
        raise ToolError("old_string and new_string are the same apart from surrounding whitespace; nothing to change")
    return result, len(starts)


@dataclass
class _FileChange:
    target: Path
    rel: str
    original: str | None  # None: the file does not exist yet
    text: str


def _load_for_edit(repo: Repo, target: Path, path: str) -> _FileChange:
    if target.is_dir():
        raise ToolError(f"{path} is a directory")
    if not target.exists():
        return _FileChange(target, repo.rel(target), None, "")
    try:
        data = target.read_bytes()
    except OSError as exc:
        raise ToolError(f"cannot read {path}: {exc.strerror or exc}") from None
    if _is_binary(data[:BINARY_SNIFF_BYTES]):
        raise ToolError(f"{path} looks like a binary file; refusing to edit it")
    text = data.decode("utf-8", "surrogateescape")  # round-trips any bytes exactly
    return _FileChange(target, repo.rel(target), text, text)


def _apply(change: _FileChange, edit: Edit) -> int:
    if change.original is None and change.text == "":
        if edit.old_string:
            raise ToolError(f"file not found: {edit.path} (to create a file, use write_file)")
        if not edit.new_string:
            raise ToolError("old_string and new_string are both empty; nothing to change")
        change.text = edit.new_string
        return 1
    if not edit.old_string:
        raise ToolError(f"old_string is empty but {edit.path} exists; use write_file to replace a whole file")
    change.text, count = _replace(change.text, edit.old_string, edit.new_string, edit.replace_all)
    return count


def _plan(repo: Repo, edits: list[Edit], numbered: bool) -> tuple[list[_FileChange], int]:
    """Apply `edits` in memory, in order; returns the changed files and the replacement count."""
    changes: dict[Path, _FileChange] = {}
    count = 0
    for i, edit in enumerate(edits, 1):
        try:
            target = repo.resolve(edit.path, write=True)
            if target not in changes:
                changes[target] = _load_for_edit(repo, target, edit.path)
            count += _apply(changes[target], edit)
        except ToolError as exc:
            if numbered:
                reason, _, details = str(exc).partition("\n")
                message = f"edit {i} of {len(edits)} ({edit.path}): {reason}; no file was changed"
                raise ToolError(message + (f"\n{details}" if details else "")) from None
            raise
    changed = []
    for change in changes.values():
        if change.original is None or change.original.endswith("\n"):
            change.text = _with_final_newline(change.text, change.original)
        if change.text != change.original:
            changed.append(change)
    return changed, count


def _missing_dirs(directory: Path) -> list[Path]:
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    return missing


def _commit(changes: list[_FileChange]) -> None:
    """Write every change; if one write fails, put back the files already written, then raise."""
    written: list[_FileChange] = []
    made_dirs: list[Path] = []
    for change in changes:
        try:
            if change.original is None:
                made_dirs += _missing_dirs(change.target.parent)
            _write_atomic(change.target, change.text.encode("utf-8", "surrogateescape"))
            written.append(change)
        except OSError as exc:
            for done in reversed(written):
                with contextlib.suppress(OSError):
                    if done.original is None:
                        done.target.unlink()
                    else:
                        _write_atomic(done.target, done.original.encode("utf-8", "surrogateescape"))
            for d in sorted(made_dirs, key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    d.rmdir()
            raise ToolError(f"cannot write {change.rel}: {exc.strerror or exc}; no file was changed") from None


def _diff(changes: list[_FileChange]) -> str:
    parts = []
    for c in changes:
        lines = difflib.unified_diff(
            (c.original or "").splitlines(keepends=True), c.text.splitlines(keepends=True),
            fromfile="/dev/null" if c.original is None else f"a/{c.rel}", tofile=f"b/{c.rel}",
        )
        parts.extend(ln if ln.endswith("\n") else ln + "\n\\ No newline at end of file\n" for ln in lines)
    text, _ = budget.truncate(_printable("".join(parts)), hint="use git_diff to see the whole change")
    return text


# --------------------------------------------------------------------------- edit tools


@tool(read_only=False)
def edit_file(
    repo: Repo,
    path: Annotated[str, Field(description="file path relative to the repository root")],
    old_string: Annotated[str, Field(description="exact text to replace, copied from the file")],
    new_string: Annotated[str, Field(description="replacement text")],
    replace_all: Annotated[bool, Field(description="replace every occurrence instead of exactly one")] = False,
) -> EditResult:
    """Replace `old_string` with `new_string` in one file. `old_string` must match the file exactly
    and only once (include surrounding lines to make it unique) unless `replace_all` is true;
    otherwise nothing changes and the error shows the closest lines or the matches. Returns a diff.

    If the exact text is not found, the match is retried with leading/trailing whitespace
    stripped from both strings (vLLM strips argument values), when that identifies one place.
    """
    edit = Edit(path=path, old_string=old_string, new_string=new_string, replace_all=replace_all)
    changes, count = _plan(repo, [edit], numbered=False)
    _commit(changes)
    rel = changes[0].rel if changes else repo.rel(repo.resolve(path))
    return EditResult(path=rel, replacements=count, diff=_diff(changes))


def _parse_json_list(value: Any) -> Any:
    """Accept `edits` sent as a JSON string (what a parser without the schema produces)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError("edits must be a list of {path, old_string, new_string, replace_all} objects") from None
    return value


@tool(read_only=False)
def multi_edit(
    repo: Repo,
    edits: Annotated[
        list[Edit],
        BeforeValidator(_parse_json_list),
        Field(description="edits applied in order; a later edit sees the result of earlier ones"),
    ],
) -> MultiEditResult:
    """Apply several edit_file-style edits, in order, across one or more files, all or nothing.
    Each edit sees the result of the earlier ones; if any edit fails, no file is changed and
    the error names the failing edit. Returns a combined diff.
    """
    if not edits:
        raise ToolError("edits is empty; give at least one {path, old_string, new_string} edit")
    changes, _ = _plan(repo, edits, numbered=True)
    _commit(changes)
    return MultiEditResult(files_changed=[c.rel for c in changes], edits=len(edits), diff=_diff(changes))


# --------------------------------------------------------------------------- find_files


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a ripgrep `--glob` (gitignore-style) into a regex over a path relative to the search dir.

    A pattern with no `/` (other than a trailing one) matches the file name at any depth;
    otherwise it is anchored at the search dir. `*`, `?`, `[...]` stop at `/`; `**` spans
    directories; `{a,b}` alternates. A trailing `/` only matches directories, so never a file.
    """
    anchored = "/" in pattern.rstrip("/")
    if pattern.endswith("/"):
        return re.compile(r"(?!)")
    body = _glob_body(pattern.lstrip("/"), pattern)
    return re.compile(body if anchored else r"(?:.*/)?" + body)


def _glob_body(pat: str, whole: str) -> str:
    out, i, n = [], 0, len(pat)
    while i < n:
        c = pat[i]
        if pat.startswith("**", i) and (i == 0 or pat[i - 1] == "/") and pat[i + 2 : i + 3] in ("/", ""):
            out.append("(?:.*/)?" if pat[i + 2 : i + 3] == "/" else ".*")
            i += 3
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pat[i]))
        elif c == "[":
            j = i + 1 + (pat[i + 1 : i + 2] in ("!", "^"))
            j = pat.find("]", j + 1)
            if j == -1:
                raise ToolError(f"invalid glob {whole!r}: unclosed '['")
            inner = pat[i + 1 : j]
            if inner[:1] in ("!", "^"):
                inner = "^" + inner[1:]
            out.append("[" + inner.replace("\\", "\\\\") + "]")
            i = j
        elif c == "{":
            depth, j = 0, i
            while j < n:
                depth += {"{": 1, "}": -1}.get(pat[j], 0)
                if depth == 0:
                    break
                j += 1
            if j >= n:
                raise ToolError(f"invalid glob {whole!r}: unclosed '{{'")
            alternatives, depth, start = [], 0, i + 1
            for k in range(i + 1, j):
                depth += {"{": 1, "}": -1}.get(pat[k], 0)
                if pat[k] == "," and depth == 0:
                    alternatives.append(pat[start:k])
                    start = k + 1
            alternatives.append(pat[start:j])
            out.append("(?:" + "|".join(_glob_body(a, whole) for a in alternatives) + ")")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _list_with_rg(rg: str, directory: Path) -> list[str]:
    """Files under `directory` that .gitignore does not exclude, relative to it.

    The pattern is not passed as `rg --glob`: a matching --glob overrides ignore rules.
    """
    try:
        proc = subprocess.run(
            [rg, "--files", "--hidden", "--no-messages", "--glob", "!.git"],
            cwd=directory, capture_output=True, timeout=RG_TIMEOUT_S, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise ToolError(f"find_files timed out after {RG_TIMEOUT_S}s; narrow the path") from None
    if proc.returncode not in (0, 1) and not proc.stdout:  # 2 also means some dirs were unreadable
        message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ToolError(f"listing files failed: {message[-1] if message else 'ripgrep failed'}")
    return [p for p in proc.stdout.decode("utf-8", "replace").splitlines() if p]


def _list_without_rg(repo: Repo, directory: Path) -> list[str]:
    return [
        f.relative_to(directory).as_posix()
        for f in list_files(repo.root, directory)
        if not f.is_symlink()  # ripgrep does not list symlinks without --follow
    ]


@tool()
def find_files(
    repo: Repo,
    pattern: Annotated[str, Field(description="glob such as `*.py`, `src/**/*.ts`, `**/test_*.py`")],
    path: Annotated[str, Field(description="directory to search, relative to the repository root")] = ".",
) -> FindResult:
    """Find files by glob: `*.py` matches at any depth, `src/**/*.ts` is relative to `path`.
    Respects .gitignore and never lists .git. Returns sorted repo-relative paths (at most 500).

    Files are listed by `rg --files` (or, without ripgrep, `git ls-files`) and matched with
    ripgrep's --glob semantics (see `glob_regex`).
    """
    if not pattern.strip():
        raise ToolError("pattern must be a non-empty glob, e.g. *.py")
    directory = repo.resolve(path)
    if not directory.exists():
        raise ToolError(f"directory not found: {path}")
    if not directory.is_dir():
        raise ToolError(f"{path} is a file, not a directory")
    regex = glob_regex(pattern)
    rg = find_rg()
    listed = _list_with_rg(rg, directory) if rg else _list_without_rg(repo, directory)
    names = [n for n in listed if regex.fullmatch(n) and not n.startswith(".git/")]
    base = repo.rel(directory)
    files = sorted(posixpath.normpath(posixpath.join(base, n)) for n in names)
    total = len(files)
    truncated = total > MAX_FOUND_FILES
    note = None
    if truncated:
        note = f"showing {MAX_FOUND_FILES} of {total} files; narrow the pattern or the path"
    elif not files:
        note = f"no files match {pattern!r} under {base}"
    return FindResult(files=files[:MAX_FOUND_FILES], total=total, truncated=truncated, note=note)
