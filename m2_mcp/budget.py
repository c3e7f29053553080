"""Output budgets: every tool result is bounded, truncated head+tail with a marker."""

from __future__ import annotations

import math
import re

from m2_mcp.envcheck import number  # checked when serve/fix start

# A character budget of N tokens is N * CHARS_PER_TOKEN characters: few enough for dense code (the
# stdlib averages ~3.8 characters per real token), and truncate() also holds the token count itself.
CHARS_PER_TOKEN = 3
# Claude Code caps MCP results at 25k tokens and warns past 10k: stay under the warning.
DEFAULT_OUTPUT_TOKENS = 10_000

# estimate_tokens(): a BPE tokenizer first cuts text into pieces (a word with its leading space, up to
# 3 digits, a run of punctuation, whitespace), then each piece into tokens. We count the pieces of each
# kind with a few regular expressions and charge each kind what it costs on average in cl100k/o200k
# (weights fitted on the Python stdlib for code and its reference docs for prose), then add SAFETY so
# the estimate is at least the real count / 1.10 on ordinary code and prose: a budget counted with it
# holds in real tokens within +10%. tests/test_token_budget.py checks this against a real BPE
# tokenizer; benchmarks/bench_budget.py prints the error per file class over the whole stdlib.
# Not covered: random strings (hashes, base64, rot13), which BPE splits into many short tokens.
_WORD = re.compile(r"[^\W\d_]+")
_HUMP = re.compile(r"[a-z][A-Z]|[A-Z][A-Z][a-z]")  # camelCase joints split a word into more tokens
_CAPS = re.compile(r"(?<![A-Za-z])[A-Z]{4,}(?![a-z])")  # CONSTANT_NAMES: fewer in BPE vocabularies
_DIGITS = re.compile(r"\d{1,3}")
_PUNCT = re.compile(r"[^\s\w]+|_+")
_SPACE = re.compile(r"\s*[\r\n]\s*|[ \t]{2,}|\t")  # whitespace that is a piece of its own
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
SAFETY = 1.10
# the cost of a word by its length (longer words are split into more tokens)
_WORD_COST = [0.0, 1.0, 1.0, 1.0] + [1.05] * 4 + [1.2] * 4 + [1.25 * (1 + (n - 11) / 4) for n in range(12, 200)]


def estimate_tokens(text: str) -> int:
    """A conservative token count of `text`: at least the real BPE count / 1.10 on code and prose."""
    if not text:
        return 0
    cost = _WORD_COST
    top = len(cost) - 1
    words = sum(cost[n] if n < top else 1.25 * (1 + (n - 11) / 4) for n in map(len, _WORD.findall(text)))
    punct = _PUNCT.findall(text)
    total = (words + 0.8 * len(_HUMP.findall(text)) + 0.2 * sum(map(len, _CAPS.findall(text)))
             + 1.5 * len(_DIGITS.findall(text)) + 1.15 * len(_SPACE.findall(text))
             + 0.7 * len(punct) + 0.17 * (sum(map(len, punct)) - len(punct)))
    if not text.isascii():
        total += 1.25 * len(_NON_ASCII.findall(text))
    return math.ceil(total * SAFETY)


def output_tokens() -> int:
    """The per-result token budget (env `M2_MCP_OUTPUT_TOKENS`)."""
    return max(500, int(number("M2_MCP_OUTPUT_TOKENS", DEFAULT_OUTPUT_TOKENS)))


def output_chars() -> int:
    return output_tokens() * CHARS_PER_TOKEN


def truncate(text: str, max_chars: int | None = None, hint: str = "") -> tuple[str, bool]:
    """Keep the head and tail of `text` within the output budget (or `max_chars` characters, i.e.
    max_chars / CHARS_PER_TOKEN tokens), counted in characters and in estimated tokens; say what
    was cut and how to see more."""
    limit = output_chars() if max_chars is None else max_chars
    max_tokens = max(1, limit // CHARS_PER_TOKEN)
    if len(text) <= limit and estimate_tokens(text) <= max_tokens:
        return text, False
    keep = min(limit, len(text))
    while True:
        head, tail = text[: keep // 2], text[len(text) - keep // 2 :]
        used = estimate_tokens(head) + estimate_tokens(tail)
        if used <= max_tokens or keep <= 64:
            break
        keep = int(keep * min(0.95, max_tokens / used))  # shrink to fit dense text (digits, symbols)
    omitted = len(text) - len(head) - len(tail)
    omitted_lines = text.count("\n", len(head), len(text) - len(tail))
    marker = f"\n[... truncated: {omitted} characters, ~{omitted_lines} lines omitted{'; ' + hint if hint else ''} ...]\n"
    return head + marker + tail, True
