"""ripgrep-style `--glob` matching over repo-relative paths, in time linear in the pattern and path.

One helper for `find_files` and the pure-Python `search` fallback. A pattern with no `/`
(other than a trailing one) matches the file name at any depth; otherwise it is anchored at
the search directory. `*`, `?`, `[...]` stop at `/`; `**` spans directories; `{a,b}`
alternates; `\\x` escapes. A trailing `/` names a directory, so it never matches a file.

Patterns compile to a token list that is matched by a small NFA simulation (every state
advanced together, so `*a*a*a*a*b` cannot backtrack exponentially); patterns with at most
two variable-length tokens use the equivalent regex, which is as safe there and faster.
"""

from __future__ import annotations

import re
from functools import lru_cache

from m2_mcp.errors import ToolError

MAX_ALTERNATIVES = 256
MAX_PATTERN = 1000

# tokens: ("lit", c) | ("one",) | ("cls", compiled one-char regex) | ("star",) | ("any",) | ("dirs",)
_VARIABLE = {"star", "any", "dirs"}


class Glob:
    def __init__(self, pattern: str, *, subtree: bool = False) -> None:
        """`subtree`: a match of a directory prefix also matches everything under it."""
        self.pattern = pattern
        self.subtree = subtree
        if len(pattern) > MAX_PATTERN:
            raise ToolError(f"glob is too long ({len(pattern)} characters, at most {MAX_PATTERN})")
        if pattern.endswith("/") and not subtree:
            self.alternatives: list[list[tuple]] = []
        else:
            body = pattern.rstrip("/") if subtree else pattern
            anchored = "/" in body
            self.alternatives = [
                ([] if anchored else [("dirs",)]) + _tokens(alt, pattern) for alt in _expand(body.lstrip("/"), pattern)
            ]
        simple = all(sum(t[0] in _VARIABLE for t in alt) <= 2 for alt in self.alternatives)
        self._regex = None
        if simple and self.alternatives:
            source = "|".join("(?:" + "".join(_regex(t) for t in alt) + ")" for alt in self.alternatives)
            self._regex = re.compile(f"(?:{source})" + ("(?:/.*)?" if subtree else ""), re.DOTALL)

    def match(self, path: str) -> bool:
        if self._regex is not None:
            return self._regex.fullmatch(path) is not None
        return any(_nfa_match(alt, path, self.subtree) for alt in self.alternatives)


@lru_cache(maxsize=64)
def compile_glob(pattern: str, subtree: bool = False) -> Glob:
    return Glob(pattern, subtree=subtree)


def _expand(pat: str, whole: str) -> list[str]:
    """Brace alternatives, expanded (bounded)."""
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            j = pat.find("]", i + 2 + (pat[i + 1 : i + 2] in ("!", "^")))
            i = n if j == -1 else j + 1
            continue
        if c == "{":
            depth, j, cuts = 0, i, []
            while j < n:
                ch = pat[j]
                if ch == "\\":
                    j += 2
                    continue
                depth += {"{": 1, "}": -1}.get(ch, 0)
                if ch == "," and depth == 1:
                    cuts.append(j)
                if depth == 0:
                    break
                j += 1
            if j >= n:
                raise ToolError(f"invalid glob {whole!r}: unclosed '{{'")
            bounds = [i] + cuts + [j]
            options = [pat[a + 1 : b] for a, b in zip(bounds, bounds[1:])]
            rests = _expand(pat[j + 1 :], whole)
            out = [pat[:i] + o + r for opt in options for o in _expand(opt, whole) for r in rests]
            if len(out) > MAX_ALTERNATIVES:
                raise ToolError(f"invalid glob {whole!r}: more than {MAX_ALTERNATIVES} {{...}} alternatives")
            return out
        i += 1
    return [pat]


def _tokens(pat: str, whole: str) -> list[tuple]:
    out: list[tuple] = []
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if pat.startswith("**", i) and (i == 0 or pat[i - 1] == "/") and pat[i + 2 : i + 3] in ("/", ""):
            out.append(("dirs",) if pat[i + 2 : i + 3] == "/" else ("any",))
            i += 3
            continue
        if c == "*":
            if not out or out[-1] != ("star",):  # `**` inside a name is just `*`
                out.append(("star",))
        elif c == "?":
            out.append(("one",))
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(("lit", pat[i]))
        elif c == "[":
            j = pat.find("]", i + 2 + (pat[i + 1 : i + 2] in ("!", "^")))
            if j == -1:
                raise ToolError(f"invalid glob {whole!r}: unclosed '['")
            inner = pat[i + 1 : j]
            if inner[:1] in ("!", "^"):
                inner = "^" + inner[1:]
            try:
                out.append(("cls", re.compile("[" + inner.replace("\\", "\\\\").replace("[", "\\[") + "]")))
            except re.error as exc:
                raise ToolError(f"invalid glob {whole!r}: {exc}") from None
            i = j
        else:
            out.append(("lit", c))
        i += 1
    return out


def _regex(token: tuple) -> str:
    kind = token[0]
    if kind == "lit":
        return re.escape(token[1])
    if kind == "cls":
        return f"(?!/){token[1].pattern}"
    return {"one": "[^/]", "star": "[^/]*", "any": ".*", "dirs": "(?:.*/)?"}[kind]


def _closure(tokens: list[tuple], states: set[int]) -> set[int]:
    """States are 2*i (at token i) and 2*i+1 (inside the `dirs` token i: only a `/` leaves it)."""
    todo = [s for s in states if not s & 1]
    while todo:
        i = todo.pop() // 2
        if i < len(tokens) and tokens[i][0] in _VARIABLE and 2 * (i + 1) not in states:
            states.add(2 * (i + 1))
            todo.append(2 * (i + 1))
    return states


def _nfa_match(tokens: list[tuple], path: str, subtree: bool) -> bool:
    end = 2 * len(tokens)
    states = _closure(tokens, {0})
    for c in path:
        if subtree and c == "/" and end in states:
            return True
        nxt: set[int] = set()
        for s in states:
            if s == end:
                continue
            i = s // 2
            kind = tokens[i][0]
            if kind == "lit":
                if c == tokens[i][1]:
                    nxt.add(s + 2)
            elif kind == "one":
                if c != "/":
                    nxt.add(s + 2)
            elif kind == "cls":
                if c != "/" and tokens[i][1].fullmatch(c):
                    nxt.add(s + 2)
            elif kind == "star":
                if c != "/":
                    nxt.add(s)
            elif kind == "any":
                nxt.add(s)
            else:  # dirs: (?:.*/)?
                nxt.add(2 * i + 1)
                if c == "/":
                    nxt.add(2 * i + 2)
        if not nxt:
            return False
        states = _closure(tokens, nxt)
    return end in states
