"""Output budgets: every tool result is bounded, truncated head+tail with a marker."""

from __future__ import annotations

import os

CHARS_PER_TOKEN = 4
# Claude Code caps MCP results at 25k tokens and warns past 10k: stay under the warning.
DEFAULT_OUTPUT_TOKENS = 10_000


def output_tokens() -> int:
    """The per-result token budget (env `M2_MCP_OUTPUT_TOKENS`)."""
    try:
        return max(500, int(os.environ.get("M2_MCP_OUTPUT_TOKENS", DEFAULT_OUTPUT_TOKENS)))
    except ValueError:
        return DEFAULT_OUTPUT_TOKENS


def output_chars() -> int:
    return output_tokens() * CHARS_PER_TOKEN


def estimate_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def truncate(text: str, max_chars: int | None = None, hint: str = "") -> tuple[str, bool]:
    """Keep the head and tail of `text` within `max_chars`; say what was cut and how to see more."""
    limit = output_chars() if max_chars is None else max_chars
    if len(text) <= limit:
        return text, False
    omitted_lines = text.count("\n", limit // 2, len(text) - limit // 2)
    marker = f"\n[... truncated: {len(text) - limit} characters, ~{omitted_lines} lines omitted{'; ' + hint if hint else ''} ...]\n"
    head = text[: limit // 2]
    tail = text[len(text) - limit // 2 :]
    return head + marker + tail, True
