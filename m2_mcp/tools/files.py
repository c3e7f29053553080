"""File tools: read with line numbers, write, find by glob (the edit tools are in `edits.py`).

Every path goes through `Repo.resolve`; every open goes through `fsops` (descriptor-relative,
no symlink followed, regular files only), so a swapped directory or a FIFO cannot make a call
escape the repo or hang. Reads stream in bounded memory, whatever the file's size or line length.
"""

from __future__ import annotations

import io
import posixpath
import subprocess
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field

from m2_mcp import budget, fsops
from m2_mcp.errors import ToolError
from m2_mcp.globs import compile_glob
from m2_mcp.repo import Repo
from m2_mcp.rg import find_rg, list_files
from m2_mcp.tools.registry import RESULT_RESERVE, json_chars, tool

DEFAULT_READ_LINES = 2000
MAX_LINE_CHARS = 2000
MAX_FOUND_FILES = 500
BINARY_SNIFF_BYTES = 8192
RG_TIMEOUT_S = 60
_KEEP_BYTES = MAX_LINE_CHARS * 4 + 4  # enough bytes for MAX_LINE_CHARS characters of UTF-8
_CHUNK = 1 << 20


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


class FindResult(BaseModel):
    files: list[str]
    total: int
    truncated: bool
    note: str | None = None


def is_binary(head: bytes) -> bool:
    return b"\0" in head


def parts_of(repo: Repo, target: Path) -> tuple[str, ...]:
    return target.relative_to(repo.root).parts


# --------------------------------------------------------------------------- read_file


def _read_line(f: io.BufferedReader) -> tuple[bytes, int] | None:
    """The next line's first _KEEP_BYTES bytes (newline stripped) and its full length; None at EOF."""
    raw = f.readline(_KEEP_BYTES)
    if not raw:
        return None
    if raw.endswith(b"\n"):
        return raw[:-1], len(raw) - 1
    length = len(raw)
    while len(raw) == _KEEP_BYTES or length > len(raw):  # the line goes on: skip the rest, counting
        more = f.readline(_CHUNK)
        if not more:
            break
        if more.endswith(b"\n"):
            length += len(more) - 1
            break
        length += len(more)
        if len(more) < _CHUNK:
            break
    return raw, length


def _count_rest(f: io.BufferedReader) -> int:
    """Lines left in `f` (a last line without a newline counts), reading in fixed-size chunks."""
    count, last = 0, b"\n"
    while chunk := f.read(_CHUNK):
        count += chunk.count(b"\n")
        last = chunk[-1:]
    return count + (last != b"\n")


def _show(raw: bytes, length: int) -> tuple[str, bool]:
    line = raw.decode("utf-8", "replace").removesuffix("\r")
    if len(line) <= MAX_LINE_CHARS and length == len(raw):
        return line, False
    more = len(line) - MAX_LINE_CHARS if length == len(raw) else None
    what = f"{more} more characters" if more is not None else f"{length - len(line[:MAX_LINE_CHARS].encode())} more bytes"
    return line[:MAX_LINE_CHARS] + f" [... line cut: {what}]", True


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
    characters are cut with a marker. Non-UTF-8 bytes are shown as U+FFFD. Only regular
    files are read (FIFOs, devices and sockets are refused); memory stays bounded on any file.
    """
    if offset < 0:
        raise ToolError("offset must be a 1-based line number")
    offset = max(offset, 1)
    if limit is not None and limit < 1:
        raise ToolError("limit must be at least 1")
    limit = limit or DEFAULT_READ_LINES
    target = repo.resolve(path)
    if target.is_dir():
        raise ToolError(f"{path} is a directory, not a file (use find_files to list files)")
    max_chars = budget.output_chars() - RESULT_RESERVE
    max_tokens = budget.output_tokens() - RESULT_RESERVE // budget.CHARS_PER_TOKEN
    used_tokens = 0
    out: list[str] = []
    used = total = 0
    budget_hit = cut_lines = False
    try:
        with fsops.open_regular(repo.root, parts_of(repo, target), path) as (fd, _):
            f = io.BufferedReader(io.FileIO(fd, "rb", closefd=False), _CHUNK)
            if is_binary(f.peek(BINARY_SNIFF_BYTES)[:BINARY_SNIFF_BYTES]):
                raise ToolError(f"{path} looks like a binary file (it contains NUL bytes); not shown")
            while (line := _read_line(f)) is not None:
                total += 1
                if total < offset:
                    continue
                text, cut = _show(*line)
                numbered = f"{total:6d}\t{text}"
                cost = json_chars(numbered) + 2
                tokens = budget.estimate_tokens(numbered) + 1  # dense lines cost more tokens than characters
                if out and (used + cost > max_chars or used_tokens + tokens > max_tokens):
                    budget_hit = True
                    total += _count_rest(f)
                    break
                cut_lines |= cut
                out.append(numbered)
                used += cost
                used_tokens += tokens
                if len(out) >= limit:
                    total += _count_rest(f)
                    break
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


# --------------------------------------------------------------------------- write_file


def with_final_newline(text: str, like: str | None = None) -> str:
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
    data = with_final_newline(content).encode("utf-8", "surrogateescape")
    try:
        created = fsops.write_atomic(repo.root, parts_of(repo, target), data, path)
    except OSError as exc:
        raise ToolError(f"cannot write {path}: {exc.strerror or exc}") from None
    return WriteResult(path=repo.rel(target), bytes_written=len(data), created=created)


# --------------------------------------------------------------------------- find_files


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


def in_git_dir(rel: str) -> bool:
    return any(part.lower() == ".git" for part in rel.split("/"))


@tool()
def find_files(
    repo: Repo,
    pattern: Annotated[str, Field(description="glob such as `*.py`, `src/**/*.ts`, `**/test_*.py`")],
    path: Annotated[str, Field(description="directory to search, relative to the repository root")] = ".",
) -> FindResult:
    """Find files by glob: `*.py` matches at any depth, `src/**/*.ts` is relative to `path`.
    Respects .gitignore and never lists .git. Returns sorted repo-relative paths (at most 500).

    Files are listed by `rg --files` (or, without ripgrep, `git ls-files`) and matched with
    ripgrep's --glob semantics, in linear time (see `m2_mcp.globs`).
    """
    if not pattern.strip():
        raise ToolError("pattern must be a non-empty glob, e.g. *.py")
    directory = repo.resolve(path)
    if not directory.exists():
        raise ToolError(f"directory not found: {path}")
    if not directory.is_dir():
        raise ToolError(f"{path} is a file, not a directory")
    glob = compile_glob(pattern)
    rg = find_rg()
    listed = _list_with_rg(rg, directory) if rg else _list_without_rg(repo, directory)
    base = repo.rel(directory)
    files = sorted(posixpath.normpath(posixpath.join(base, n)) for n in listed if glob.match(n))
    files = [f for f in files if not in_git_dir(f)]
    total = len(files)
    truncated = total > MAX_FOUND_FILES
    note = None
    if truncated:
        note = f"showing {MAX_FOUND_FILES} of {total} files; narrow the pattern or the path"
    elif not files:
        note = f"no files match {pattern!r} under {base}"
    return FindResult(files=files[:MAX_FOUND_FILES], total=total, truncated=truncated, note=note)

