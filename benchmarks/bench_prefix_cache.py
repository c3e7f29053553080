"""Benchmark (not a test): how much of each step's rendered prompt vLLM's prefix cache can reuse
over a long run that crosses the context window several times (compaction on).

A scripted run of N steps (each: 0.3-3 KB of M2's thinking + one tool call, and a tool output of 2-10 KB) is
compacted before every request by the loop's own policy (`maybe_compact`), and, as the baseline,
by the policy it replaced (compact a little more at every step past 75% of the window). Every
request is rendered the way vLLM renders it, by vLLM's chat preprocessing and M2's chat template
(tools/vllm_conformance/render.py in a vLLM venv), and tokenized; prefix reuse at step k is the
share of prompt k-1 that is an exact prefix of prompt k (what the prefix cache can serve again;
100% when nothing old was rewritten). Without vLLM the prompts
are compared as serialized JSON instead, and the output says so.

    python benchmarks/bench_prefix_cache.py [--steps 250] [--window 196608] [--vllm-python PATH]
    (default vLLM python: $M2_VLLM_PYTHON)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from m2_mcp.agent.loop import compact, maybe_compact, prompt_tokens_estimate  # noqa: E402
from m2_mcp.agent.prompt import SYSTEM  # noqa: E402
from m2_mcp.tools import registry  # noqa: E402

RENDER = ROOT / "tools" / "vllm_conformance" / "render.py"


def old_policy(messages, tools, window):
    """The policy before batching: past 75% of the window, compact just enough, a little more each step."""
    for keep in (6, 3, 1, 0):
        if prompt_tokens_estimate(messages, tools) <= int(window * 0.75):
            break
        compact(messages, keep_last=keep)


def run(policy, steps: int, window: int, tools: list[dict]) -> list[dict]:
    """The request bodies of a scripted run under a compaction policy."""
    rng = random.Random(7)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "make the failing tests pass"}]
    bodies = []
    for step in range(steps):
        policy(messages, tools, window)
        bodies.append({"model": "MiniMaxAI/MiniMax-M2", "messages": [dict(m) for m in messages], "tools": tools})
        call = {"id": f"call_{step}", "type": "function",
                "function": {"name": "read_file", "arguments": json.dumps({"path": f"src/module_{step}.py"})}}
        thinking = " ".join(f"Step {step}: the output of module {step - 1} shows what to check next ({i})."
                            for i in range(rng.randint(5, 40)))  # M2 thinks 0.3-3 KB per step
        messages.append({"role": "assistant", "content": f"<think>\n{thinking}\n</think>\n\n", "tool_calls": [call]})
        size = rng.randint(2_000, 10_000)
        body = "".join(f"{i:>5}\tdef function_{step}_{i}(x):  # line of module {step}\n" for i in range(size // 48))
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": body})
    return bodies


def tokenized(bodies: list[dict], python: str | None) -> tuple[list[list], str]:
    if python and Path(python).exists():
        done = subprocess.run([python, str(RENDER)], input="".join(json.dumps(b) + "\n" for b in bodies),
                              capture_output=True, text=True, cwd=RENDER.parent, timeout=3600)
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode == 0 and len(lines) == len(bodies):
            return [line["ids"] for line in lines], f"vLLM {lines[0]['vllm']} chat preprocessing + M2's template, tokens"
        print(f"note: rendering with {python} failed: {done.stderr.strip()[-500:]}", file=sys.stderr)
    print("note: no vLLM python (--vllm-python or M2_VLLM_PYTHON): comparing serialized JSON characters "
          "instead of vLLM's rendered prompt", file=sys.stderr)
    return [list(json.dumps(b["messages"])) for b in bodies], "serialized messages (no vLLM), characters"


def reuse(prompts: list[list]) -> tuple[list[float], float]:
    per_step, shared, total = [], 0, 0
    for before, now in zip(prompts, prompts[1:]):
        common = next((i for i, (a, b) in enumerate(zip(before, now)) if a != b), min(len(before), len(now)))
        per_step.append(common / len(before))
        shared, total = shared + common, total + len(before)
    return per_step, shared / total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--window", type=int, default=196_608, help="context window in (estimated) tokens (M2: 196,608)")
    parser.add_argument("--vllm-python", default=os.environ.get("M2_VLLM_PYTHON"))
    args = parser.parse_args()
    tools = [spec.openai_tool() for spec in registry.agent_tools()]
    for name, policy in (("batched (current)", maybe_compact), ("one more each step (before)", old_policy)):
        bodies = run(policy, args.steps, args.window, tools)
        prompts, unit = tokenized(bodies, args.vllm_python)
        per_step, overall = reuse(prompts)
        low = sorted(per_step)[:3]
        print(f"{name}: prefix reuse {overall:.1%} of {sum(map(len, prompts[:-1]))} prompt {unit.split(', ')[-1]} "
              f"over {args.steps} steps ({unit}); steps below 95%: {sum(r < 0.95 for r in per_step)}; "
              f"lowest {', '.join(f'{r:.0%}' for r in low)}")
        print("  per step: " + " ".join(f"{r:.0%}" for r in per_step))
    return 0


if __name__ == "__main__":
    sys.exit(main())
