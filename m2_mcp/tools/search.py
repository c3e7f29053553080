"""`search`: regex search over the repo with ripgrep, or a pure-Python fallback without it."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from pathlib import Path

import anyio
from pydantic import BaseModel

from m2_mcp import budget, fsops, proc
from m2_mcp.errors import ToolError
from m2_mcp.globs import compile_glob
from m2_mcp.repo import Repo
from m2_mcp.rg import find_rg, list_files
from m2_mcp.tools.files import in_git_dir
from m2_mcp.tools.registry import RESULT_RESERVE, json_chars, tool

MAX_RESULTS = 500
MAX_CONTEXT = 10
MAX_LINE_CHARS = 300
SEARCH_TIMEOUT_S = 60
FALLBACK_MAX_BYTES = 64 * 1024 * 1024  # the pure-Python fallback skips bigger files (it reads them whole)


class SearchMatch(BaseModel):
    path: str
    line: int
    text: str
    before: list[str] = []  # the `context` lines just above `line`
    after: list[str] = []  # the `context` lines just below `line`


class SearchResult(BaseModel):
    matches: list[SearchMatch]
    total_matches: int  # matching lines in the whole search, not only those shown
    files: int  # files with at least one match
    truncated: bool
    note: str | None = None


@tool()
async def search(
    repo: Repo,
    pattern: str,
    path: str = ".",
    glob: str | None = None,
    literal: bool = False,
    case_sensitive: bool = True,
    context: int = 0,
    max_results: int = 50,
) -> SearchResult:
    """Search file contents with a regex (ripgrep syntax; `literal` for plain text), respecting
    .gitignore. `path` narrows to a directory or file, `glob` to file names (`*.py`,
    `src/**/*.ts`, `!*_test.go`), `context` adds up to 10 lines around each match; returns up
    to `max_results` (at most 500) matching lines with path and line number, and the total count.
    """
    if not pattern:
        raise ToolError("pattern must not be empty")
    target = repo.resolve(path)
    try:
        mode = target.stat().st_mode
    except OSError:
        raise ToolError(f"no such file or directory: {path}") from None
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        raise ToolError(f"{path} is {fsops.kind(mode)}, not a regular file; refused")
    context = max(0, min(context, MAX_CONTEXT))
    max_results = max(1, min(max_results, MAX_RESULTS))
    rg = find_rg()
    found = None
    if rg:
        found = await _search_rg(rg, repo, target, pattern, glob, literal, case_sensitive, context, max_results)
    if found is None or found.overflowed:  # no rg, or lines too long for its JSON: the streaming scan
        regex = _compile(pattern, literal, case_sensitive)
        found = await anyio.to_thread.run_sync(
            lambda: _search_python(repo, target, regex, glob, context, max_results)
        )
    return _result(found, max_results)


class _Found:
    """Everything a search produced, before capping: per-line matches and the real totals."""

    def __init__(self) -> None:
        self.matches: list[SearchMatch] = []
        self.total = 0
        self.files = 0
        self.overflowed = False  # rg's output did not fit the capture before `limit` matches were read


def _result(found: _Found, max_results: int) -> SearchResult:
    shown: list[SearchMatch] = []
    room = budget.output_chars() - RESULT_RESERVE
    for match in found.matches[:max_results]:
        # what the match costs in the indented JSON text block
        cost = 110 + json_chars(match.path) + json_chars(match.text) + sum(json_chars(x) + 10 for x in match.before + match.after)
        if cost > room and shown:
            break
        room -= cost
        shown.append(match)
    truncated = len(shown) < found.total
    note = None
    if truncated:
        why = "max_results" if len(shown) == max_results else "the output budget"
        note = (
            f"showing {len(shown)} of {found.total} matching lines in {found.files} files (capped by {why}); "
            f"raise max_results (up to {MAX_RESULTS}) or narrow `path`/`glob`/`pattern` to see more"
        )
    return SearchResult(matches=shown, total_matches=found.total, files=found.files, truncated=truncated, note=note)


# ---------------------------------------------------------------- ripgrep

async def _search_rg(
    rg: str,
    repo: Repo,
    target: Path,
    pattern: str,
    glob: str | None,
    literal: bool,
    case_sensitive: bool,
    context: int,
    limit: int,
) -> _Found:
    argv = rg_argv(rg, pattern, repo.rel(target), glob, literal, case_sensitive, context)
    result = await proc.run(argv, cwd=repo.root, timeout=SEARCH_TIMEOUT_S)
    if result.timed_out:
        raise ToolError(f"search timed out after {SEARCH_TIMEOUT_S}s; narrow `path` or `glob`")
    found = _Found()
    lines: dict[str, dict[int, str]] = {}  # path -> line number -> text, matches and context alike
    hits: list[tuple[str, int]] = []
    out = result.stdout
    # Only the first `limit` matches (and their context) are parsed; the totals come from the
    # summary, rg's last line. Skipping the rest is most of the difference to raw rg.
    last_context = None  # after the last wanted match: (path, last context line wanted)
    for raw in out.split("\n"):
        if not raw.startswith(('{"type":"match"', '{"type":"context"')):
            if last_context is not None and raw.startswith('{"type":"end"'):
                break
            continue
        is_match = raw.startswith('{"type":"match"')
        if last_context is not None and is_match:
            break
        try:
            data = json.loads(raw)["data"]
        except (ValueError, KeyError):  # proc's capture cap dropped the middle (a huge line, e.g. minified JS)
            found.overflowed = len(hits) < limit  # matches may be lost: the caller searches again without rg
            break
        rel = os.path.normpath(_text(data["path"]))
        number = data["line_number"]
        if last_context is not None and (rel != last_context[0] or number > last_context[1]):
            break
        lines.setdefault(rel, {})[number] = _clip(_text(data["lines"]).removesuffix("\n").removesuffix("\r"))
        if is_match:
            hits.append((rel, number))
            if len(hits) >= limit:
                last_context = (rel, number + context)
    summary = _summary(out)
    if summary is None:
        if result.exit_code == 2 or result.stderr.strip():
            raise ToolError(_rg_error(result.stderr))
        raise ToolError(f"ripgrep failed (exit {result.exit_code})")
    found.total = summary["matched_lines"]
    found.files = summary["searches_with_match"]
    for rel, number in hits[:limit]:
        text = lines[rel]
        found.matches.append(
            SearchMatch(
                path=rel,
                line=number,
                text=text[number],
                before=[text[n] for n in range(number - context, number) if n in text],
                after=[text[n] for n in range(number + 1, number + context + 1) if n in text],
            )
        )
    return found


def _summary(out: str) -> dict | None:
    """The stats of rg's final `summary` event, if it is there."""
    last = out.rstrip("\n").rpartition("\n")[2]
    try:
        event = json.loads(last)
        return event["data"]["stats"] if event.get("type") == "summary" else None
    except (ValueError, KeyError, AttributeError):
        return None


def rg_argv(
    rg: str, pattern: str, rel: str, glob: str | None, literal: bool, case_sensitive: bool, context: int
) -> list[str]:
    """The ripgrep command line: JSON out, dotfiles in but never a .git (at any depth), sorted paths.

    `!.git` comes after the user's glob: rg gives the later glob precedence, so `*` cannot bring .git back.
    """
    argv = [rg, "--json", "--no-config", "--hidden", "--sort", "path"]
    argv.append("--case-sensitive" if case_sensitive else "--ignore-case")
    if literal:
        argv.append("--fixed-strings")
    if context:
        argv += ["--context", str(context)]
    if glob:
        argv += ["--glob", glob]
    return argv + ["--glob", "!.git", "--regexp", pattern, "--", rel]


def _text(field: dict) -> str:
    if "text" in field:
        return field["text"]
    return base64.b64decode(field.get("bytes", "")).decode("utf-8", "replace")


def _rg_error(stderr: str) -> str:
    """rg's multi-line complaint as one line, e.g. `regex parse error: unclosed group`."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "ripgrep failed"
    if "regex parse error" in lines[0]:
        detail = next((line for line in lines if line.startswith("error:")), "")
        return f"regex parse error: {detail.removeprefix('error:').strip()}".rstrip(": ")
    return lines[0].removeprefix("rg: ")


def _clip(line: str) -> str:
    if len(line) <= MAX_LINE_CHARS:
        return line
    return line[:MAX_LINE_CHARS] + f" [... {len(line) - MAX_LINE_CHARS} more characters]"


# ---------------------------------------------------------------- pure-Python fallback

_POSIX_CLASSES = {
    "alnum": "a-zA-Z0-9", "alpha": "a-zA-Z", "digit": "0-9", "lower": "a-z", "upper": "A-Z",
    "space": r"\s", "word": r"\w", "xdigit": "0-9A-Fa-f", "punct": r"!-/:-@\[-`{-~", "blank": r" \t",
}


def _compile(pattern: str, literal: bool, case_sensitive: bool) -> re.Pattern[str]:
    """Compile a ripgrep (Rust regex) pattern with Python's `re`, translating the common differences."""
    if literal:
        source = re.escape(pattern)
    else:
        source = re.sub(r"\[:(\w+):\]", lambda m: _POSIX_CLASSES.get(m.group(1), m.group(0)), pattern)
        source = re.sub(r"\(\?<(?=[A-Za-z_])", "(?P<", source)  # named groups: (?<name>...)
        source = source.replace(r"\z", r"\Z")
    try:
        # MULTILINE so the whole-file pre-check agrees with the per-line search on ^ and $.
        return re.compile(source, re.MULTILINE | (0 if case_sensitive else re.IGNORECASE))
    except re.error as exc:
        raise ToolError(f"regex parse error: {exc}") from None


def _search_python(
    repo: Repo, target: Path, regex: re.Pattern[str], glob: str | None, context: int, limit: int
) -> _Found:
    if target.is_file():
        files = [target]
    else:
        # An explicitly named directory that is itself ignored is still searched, as ripgrep does.
        files = list_files(repo.root, target) or sorted(
            Path(d) / f for d, _, names in os.walk(target) for f in names if ".git" not in Path(d).parts
        )
    # Like ripgrep: follow no symlinks found on the way (they may lead out of the repo), skip .git.
    named = [(f, f.relative_to(repo.root).as_posix()) for f in files if not f.is_symlink()]
    named = [(f, rel) for f, rel in named if not in_git_dir(rel)]
    if glob:
        negate = glob.startswith("!")
        globbed = compile_glob(glob[1:] if negate else glob, subtree=negate)
        named = [(f, rel) for f, rel in named if globbed.match(rel) != negate]
    found = _Found()
    for file, rel in named:
        try:
            with fsops.open_regular(repo.root, rel.split("/"), rel) as (fd, st):
                if st.st_size > FALLBACK_MAX_BYTES:
                    continue
                with open(fd, "rb", closefd=False) as f:
                    data = f.read()
        except (OSError, ToolError):
            continue
        if b"\0" in data:
            continue  # binary, as ripgrep skips it
        text = data.decode("utf-8", "replace")
        if not regex.search(text):
            continue
        lines = [line.removesuffix("\r") for line in text.split("\n")]
        if text.endswith("\n"):
            lines.pop()
        hit_lines = [n for n, line in enumerate(lines) if regex.search(line)]
        if not hit_lines:
            continue
        found.files += 1
        found.total += len(hit_lines)
        for n in hit_lines[: max(0, limit - len(found.matches))]:
            found.matches.append(
                SearchMatch(
                    path=rel,
                    line=n + 1,
                    text=_clip(lines[n]),
                    before=[_clip(x) for x in lines[max(0, n - context) : n]],
                    after=[_clip(x) for x in lines[n + 1 : n + 1 + context]],
                )
            )
    return found
