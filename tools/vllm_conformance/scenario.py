"""Scenarios (scenarios.json) and serving modes, shared by server.py and record.py. Standard library only."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
# mode -> (vLLM --tool-call-parser, --reasoning-parser); None = the flag is not given
MODES = {
    "split": ("minimax_m2", "minimax_m2"),
    "append": ("minimax_m2", "minimax_m2_append_think"),
    "no_reasoning": ("minimax_m2", None),
    "raw_xml": (None, None),
}
DONE = "Nothing left to do.\n</think>\n\ndone."


def scenarios() -> dict[str, dict]:
    data = json.loads((HERE / "scenarios.json").read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def attempts_of(entry) -> list:
    return entry["attempts"] if isinstance(entry, dict) and "attempts" in entry else [entry]


def raw_text(entry) -> str:
    """One attempt's model text (a `padding` block is expanded into `{padding}`)."""
    if isinstance(entry, str):
        return entry
    pad = entry.get("padding")
    text = "".join(pad["line"].replace("{i}", str(i)) for i in range(pad["count"])) if pad else ""
    return entry["raw"].replace("{padding}", text)


def group_for(scenario: dict, version: str) -> int:
    """Engine tokens per stream step for this vLLM version (scenario `group`: a number or {"0.11": n, "*": m})."""
    group = scenario.get("group", 1)
    if isinstance(group, dict):
        return next((n for prefix, n in group.items() if prefix != "*" and version.startswith(prefix)), group.get("*", 1))
    return group


def turn_for(scenario: dict, messages: list[dict], attempt: int) -> tuple[int, str]:
    """(turn index, model text) for a request: the turn is the number of assistant messages so far."""
    turn = sum(1 for m in messages if m.get("role") == "assistant")
    turns = scenario["turns"]
    if turn >= len(turns):
        return turn, DONE
    options = attempts_of(turns[turn])
    return turn, raw_text(options[min(attempt, len(options) - 1)])
