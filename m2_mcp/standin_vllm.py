"""The stand-in's vLLM-version shapes and its replay of recorded vLLM frames (test instrument).

`shape(reply, turn, scenario, body)`: with `"vllm": "0.11"` or `"0.33"` in a scenario, a scripted
turn is sent the way that vLLM version sends it (measured with tools/vllm_conformance/):

| | 0.11 | 0.33 |
|---|---|---|
| reasoning field (split) | `reasoning_content` | `reasoning` |
| split parser | thinking arrives as plain content (`think</think>text`) | clean |
| append_think parser | `<think>think</think>text` | `<think>` + output with `</think>` removed |
| call to a tool not in the request | passed through | dropped |
| second `<minimax:tool_call>` block (`second_block_from`) | restarts at index 0 with a new id, the first call's name, arguments `{` only | next index |
| arguments | `""`, `{`, `"k": v`, `, "k2": v2`, `}` | token-sized pieces |
| cut at max_tokens (`max_tokens_needed` > request max_tokens) | `finish_reason: tool_calls`, broken JSON | `finish_reason: length` |

`Replay`: answers from a recording made by tools/vllm_conformance/record.py (scenario field
`"recorded"`): the response for the request's turn (assistant messages so far), attempt (requests
for that turn so far) and max_tokens, with the recorded HTTP 400 for `tool_choice: auto` when the
recorded server had no tool parser.
"""

from __future__ import annotations

import json
import secrets
import threading

VERSIONS = ("0.11", "0.33")


def shape(reply: dict, turn: dict, scenario: dict, body: dict) -> dict:
    version = turn.get("vllm", scenario.get("vllm"))
    if version not in VERSIONS:
        return reply
    new = version == "0.33"
    mode = turn.get("reasoning", scenario.get("reasoning", "append"))
    reply = dict(reply, reasoning_field="reasoning" if new else "reasoning_content")
    content = reply["content"] or ""
    if mode == "split" and not new and reply["reasoning"]:  # 0.11's split parser: plain content
        content, reply["reasoning"] = reply["reasoning"] + "\n</think>\n\n" + content, None
    if mode == "append" and new and content.startswith("<think>\n"):
        content = "<think>" + content[len("<think>\n"):].replace("\n</think>", "", 1)
    reply["content"] = content or None
    offered = {(t.get("function") or {}).get("name") for t in body.get("tools") or []}
    calls = [dict(c) for c in reply["tool_calls"] if not new or c["name"] in offered]
    for i, call in enumerate(calls):
        text = "".join(call["fragments"])
        call["fragments"] = [text[j:j + 4] for j in range(0, len(text), 4)] if new else ["", *_pairs(text)]
        call["index"] = i
    split = turn.get("second_block_from")
    if split and not new and len(calls) > split:
        calls[split].update(index=0, name=calls[0]["name"], fragments=["{"], id="chatcmpl-tool-" + secrets.token_hex(8))
        calls = calls[:split + 1]
    needed, limit = turn.get("max_tokens_needed"), body.get("max_tokens") or body.get("max_completion_tokens")
    if needed and limit and limit < needed and calls:
        last = "".join(calls[-1]["fragments"])
        calls[-1]["fragments"] = [last[:max(1, len(last) // 2)]]
        reply["finish_reason"] = "length" if new else "tool_calls"
        reply["usage_override"] = {"completion_tokens": limit}
    elif not calls and reply["tool_calls"]:
        reply["finish_reason"] = "stop"
    reply["tool_calls"] = calls
    return reply


def _pairs(text: str) -> list[str]:
    """0.11's argument pieces: `{`, then one `"k": v` per parameter (`, ` in front after the first), `}`."""
    try:
        arguments = json.loads(text)
    except ValueError:
        return [text]
    if not isinstance(arguments, dict) or not arguments:
        return [text]
    pieces = ["{"]
    for i, (key, value) in enumerate(arguments.items()):
        pieces.append((", " if i else "") + json.dumps(key, ensure_ascii=False) + ": " + json.dumps(value, ensure_ascii=False))
    return pieces + ["}"]


class Replay:
    """Serve a recording's responses (see the module docstring)."""

    def __init__(self, recording: dict):
        self.responses = recording["responses"]
        self.requests_per_turn: dict[int, int] = {}
        self.lock = threading.Lock()

    def answer(self, body: dict) -> tuple[int, object]:
        """(200, SSE payloads) or (status, error body)."""
        turn = sum(1 for m in body.get("messages") or [] if m.get("role") == "assistant")
        choice = body.get("tool_choice", "auto" if body.get("tools") else None)
        mine = [r for r in self.responses if r["turn"] == turn] or [r for r in self.responses
                                                                    if r["turn"] == max(x["turn"] for x in self.responses)]
        refused = [r for r in mine if r["status"] != 200 and r.get("tool_choice") == choice]
        if refused:
            return refused[0]["status"], refused[0]["error"]
        with self.lock:
            asked = self.requests_per_turn.get(turn, 0)
            self.requests_per_turn[turn] = asked + 1
        attempt = min(asked, max(r["attempt"] for r in mine))
        options = [r for r in mine if r["attempt"] == attempt and r["status"] == 200] or [r for r in mine if r["status"] == 200]
        wanted = body.get("max_tokens") or body.get("max_completion_tokens") or 0
        fitting = [r for r in options if r["max_tokens"] <= wanted]
        best = max(fitting, key=lambda r: r["max_tokens"]) if fitting else min(options, key=lambda r: r["max_tokens"])
        return 200, best["frames"]
