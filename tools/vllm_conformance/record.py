"""Record the SSE frames vLLM sends for every conformance scenario, per installed vLLM version.

    python tools/vllm_conformance/record.py [--python VLLM_PYTHON ...] [--out tests/data/vllm_frames]

Runs in the project's interpreter; each `--python` (default: $M2_VLLM_PYTHON and $M2_VLLM011_PYTHON)
is a Python with vLLM installed, which runs server.py. For each scenario turn and attempt it sends
the request `m2-mcp fix` would send at that point (system prompt, task, the earlier turns with their
thinking and tool results, the agent's tools, tool_choice, max_tokens), raising max_tokens while the
output is cut, and writes `<out>/<vLLM version>/<scenario>-<mode>.json`. Generated files: never edit
them by hand; run this again instead. The fast suite replays them (tests/test_vllm_frames.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import scenario as sc  # noqa: E402
from launcher import start_vllm_server  # noqa: E402
from m2_mcp.agent import m2_format  # noqa: E402
from m2_mcp.agent.model_client import ModelClient  # noqa: E402
from m2_mcp.agent.prompt import SYSTEM  # noqa: E402
from m2_mcp.serving.parsers import reasoning_parser  # noqa: E402
from m2_mcp.tools import registry  # noqa: E402

MAX_TOKENS = ModelClient.__init__.__kwdefaults__["max_tokens"]
TASK = "make the failing tests pass"


def recordings(version: str) -> list[tuple[str, str]]:
    """(scenario, mode): the fix in every mode; the other scenarios in the mode `model serve` picks."""
    picked = "split" if reasoning_parser("vllm", version) == "minimax_m2" else "append"
    return [("fix", mode) for mode in sc.MODES] + [(name, picked) for name in sc.scenarios() if name != "fix"]


def history(turns: list, upto: int, tools: list[dict]) -> list[dict]:
    """The conversation before turn `upto`: each earlier turn's last attempt, its calls answered."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TASK}]
    for entry in turns[:upto]:
        raw = sc.raw_text(sc.attempts_of(entry)[-1])
        thinking, _, rest = raw.partition("</think>")
        parsed = m2_format.parse_tool_calls(rest, tools)
        calls = [{"id": f"call_{len(messages)}_{i}", "type": "function",
                  "function": {"name": c.name, "arguments": json.dumps(c.arguments)}} for i, c in enumerate(parsed.calls)]
        messages.append({"role": "assistant", "content": f"<think>\n{thinking.strip()}\n</think>\n\n{parsed.content or ''}",
                         **({"tool_calls": calls} if calls else {})})
        messages += [{"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in calls]
    return messages


def post(url: str, body: dict, attempt: int) -> tuple[int, object]:
    request = urllib.request.Request(url + "/chat/completions", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "X-Conformance-Attempt": str(attempt)})
    try:
        with urllib.request.urlopen(request, timeout=600) as r:
            text = r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    return 200, [line[len("data: "):] for line in text.split("\n\n") if line.startswith("data: ")]


def cut(frames: list[str], max_tokens: int) -> bool:
    for frame in frames:
        if frame == "[DONE]":
            continue
        chunk = json.loads(frame)
        if any(c.get("finish_reason") == "length" for c in chunk.get("choices") or []):
            return True
        if (chunk.get("usage") or {}).get("completion_tokens", 0) >= max_tokens:
            return True
    return False


def record(server, scenario: str, mode: str, tools: list[dict]) -> dict:
    url = server.base_url("record", scenario, mode)
    turns = sc.scenarios()[scenario]["turns"]
    responses = []
    for turn in range(len(turns) + 1):  # + the answer past the script's end
        attempts = sc.attempts_of(turns[turn]) if turn < len(turns) else [sc.DONE]
        for attempt in range(len(attempts)):
            body = {"model": "MiniMaxAI/MiniMax-M2", "messages": history(turns, turn, tools), "tools": tools,
                    "tool_choice": "auto", "stream": True, "stream_options": {"include_usage": True},
                    "temperature": 1.0, "top_p": 0.95, "max_tokens": MAX_TOKENS}
            if sc.MODES[mode][0] is None:
                status, error = post(url, body, attempt)
                responses.append({"turn": turn, "attempt": attempt, "tool_choice": "auto", "status": status,
                                  "error": error})
                body["tool_choice"] = "none"
            while True:
                status, frames = post(url, body, attempt)
                responses.append({"turn": turn, "attempt": attempt, "tool_choice": body["tool_choice"],
                                  "max_tokens": body["max_tokens"], "status": status, "frames": frames})
                if status != 200 or not cut(frames, body["max_tokens"]) or body["max_tokens"] >= 65536:
                    break
                body["max_tokens"] *= 2
    tool_parser, reasoning = sc.MODES[mode]
    return {"vllm": server.version, "scenario": scenario, "mode": mode,
            "server_flags": {"tool_call_parser": tool_parser, "reasoning_parser": reasoning},
            "generated_by": "tools/vllm_conformance/record.py (do not edit by hand)", "responses": responses}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", help="a Python with vLLM installed (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "vllm_frames")
    parser.add_argument("--scenario", action="append", help="only these scenarios (repeatable; default all)")
    args = parser.parse_args(argv)
    pythons = args.python or [p for p in (os.environ.get("M2_VLLM_PYTHON"), os.environ.get("M2_VLLM011_PYTHON")) if p]
    if not pythons:
        print("record.py: no vLLM python: pass --python or set M2_VLLM_PYTHON / M2_VLLM011_PYTHON", file=sys.stderr)
        return 2
    tools = [spec.openai_tool() for spec in registry.agent_tools()]
    for python in pythons:
        with tempfile.TemporaryDirectory() as tmp, start_vllm_server(python, Path(tmp)) as server:
            folder = args.out / server.version
            folder.mkdir(parents=True, exist_ok=True)
            for scenario, mode in recordings(server.version):
                if args.scenario and scenario not in args.scenario:
                    continue
                data = record(server, scenario, mode, tools)
                path = folder / f"{scenario}-{mode}.json"
                path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
                print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
                      f"({len(data['responses'])} responses)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
