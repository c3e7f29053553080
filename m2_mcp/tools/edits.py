"""Edit tools: exact-string edits, single (`edit_file`) and all-or-nothing across files (`multi_edit`).

Edits tolerate what vLLM's MiniMax-M2 parser does to argument values (it strips leading
and trailing whitespace): see `_replace`. Files over `MAX_EDIT_BYTES` are refused (an edit
holds the file several times in memory); write_file or a shell command handles those.
"""

from __future__ import annotations

import contextlib
import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from m2_mcp import budget, fsops
from m2_mcp.errors import ToolError
from m2_mcp.repo import Repo
from m2_mcp.tools.files import BINARY_SNIFF_BYTES, is_binary, parts_of, with_final_newline
from m2_mcp.tools.registry import tool

MAX_EDIT_BYTES = 4 * 1024 * 1024


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

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.rel.split("/"))


def _load_for_edit(repo: Repo, target: Path, path: str) -> _FileChange:
    if target.is_dir():
        raise ToolError(f"{path} is a directory")
    parts = parts_of(repo, target)
    why = "edit_file/multi_edit; rewrite it with write_file or change it with a shell command"
    data = fsops.read_bytes(repo.root, parts, path, MAX_EDIT_BYTES, why)
    if data is None:
        return _FileChange(target, repo.rel(target), None, "")
    if is_binary(data[:BINARY_SNIFF_BYTES]):
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
            change.text = with_final_newline(change.text, change.original)
        if change.text != change.original:
            changed.append(change)
    return changed, count


def _commit(repo: Repo, changes: list[_FileChange]) -> None:
    """Write every change; if one write fails, put back the files already written, then raise."""
    written: list[_FileChange] = []
    made_dirs: list[Path] = []
    for change in changes:
        try:
            fsops.write_atomic(repo.root, change.parts, change.text.encode("utf-8", "surrogateescape"), change.rel,
                               made=made_dirs)
            written.append(change)
        except (OSError, ToolError) as exc:
            for done in reversed(written):
                with contextlib.suppress(OSError, ToolError):
                    if done.original is None:
                        fsops.unlink(repo.root, done.parts)
                    else:
                        fsops.write_atomic(repo.root, done.parts, done.original.encode("utf-8", "surrogateescape"),
                                           done.rel)
            for d in reversed(made_dirs):
                with contextlib.suppress(OSError):
                    d.rmdir()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ToolError(f"cannot write {change.rel}: {reason}; no file was changed") from None


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
    _commit(repo, changes)
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
    _commit(repo, changes)
    return MultiEditResult(files_changed=[c.rel for c in changes], edits=len(edits), diff=_diff(changes))


