"""Benchmark (not a test): the agent harness's own overhead per step, and prompt-prefix stability.

Drives the real agent loop (model client, registry, tools) for N steps against the M2
stand-in with zero delay, and measures in the same run the baseline parts a step
cannot avoid: the raw HTTP round trip to the stand-in with an identical request (plain
openai client, same history) and the tool calls alone (registry, no model). What is
left is the harness overhead. Prefix stability: how much of each request's serialized
messages is an exact prefix of the next request's (100% = vLLM's prefix cache hits on
the whole history every step).

    python benchmarks/bench_agent.py [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import make_repo  # noqa: E402
from standin import start_standin  # noqa: E402

from m2_mcp.agent.loop import Limits, Loop  # noqa: E402
from m2_mcp.agent.model_client import ModelClient  # noqa: E402
from m2_mcp.agent.prompt import SYSTEM, task_message  # noqa: E402
from m2_mcp.endpoint import Endpoint  # noqa: E402
from m2_mcp.repo import Repo  # noqa: E402
from m2_mcp.tools import registry  # noqa: E402

CALLS = [
    {"name": "read_file", "arguments": {"path": "pkg/mod_3.py"}},
    {"name": "search", "arguments": {"pattern": "def helper_\\d+", "max_results": 20}},
    {"name": "find_files", "arguments": {"pattern": "*.py"}},
    {"name": "edit_file", "arguments": {"path": "pkg/mod_5.py", "old_string": "return x + 5", "new_string": "return x + 5  # ok"}},
    {"name": "edit_file", "arguments": {"path": "pkg/mod_5.py", "old_string": "return x + 5  # ok", "new_string": "return x + 5"}},
]


def prefix_share(a: list[dict], b: list[dict]) -> float:
    """Share (by serialized size) of request `a`'s messages that start request `b` unchanged."""
    kept = 0
    for x, y in zip(a, b):
        if x != y:
            break
        kept += 1
    size = lambda ms: sum(len(json.dumps(m, ensure_ascii=False)) for m in ms)  # noqa: E731
    return size(a[:kept]) / size(a) if a else 1.0


async def main(steps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        files = {f"pkg/mod_{i}.py": "".join(f"def helper_{i}_{j}(x):\n    return x + {j}\n\n" for j in range(30))
                 for i in range(20)}
        repo = Repo(make_repo(tmp_path / "repo", files))
        turns = [{"think": f"Step {i}: keep looking.", "tool_calls": [CALLS[i % len(CALLS)]],
                  "usage": {"prompt_tokens": 1000, "completion_tokens": 50}} for i in range(steps)]
        with start_standin({"scripts": [{"turns": turns}]}, tmp_path) as m2:
            endpoint = Endpoint(m2.base_url, "MiniMaxAI/MiniMax-M2", "EMPTY")
            client = ModelClient(endpoint)
            loop = Loop(repo, client, Limits(max_steps=steps))
            messages = [{"role": "system", "content": SYSTEM},
                        {"role": "user", "content": task_message("benchmark", repo.test_cmd, "", "")}]
            started = time.perf_counter()
            state = await loop.run(messages)
            loop_s = time.perf_counter() - started
            await client.aclose()
            requests = m2.requests()

            # baseline 1: the same requests, raw, through the plain openai client (no harness)
            raw = openai.AsyncOpenAI(base_url=m2.base_url, api_key="EMPTY", max_retries=0)
            started = time.perf_counter()
            for body in requests:
                stream = await raw.chat.completions.create(
                    model=body["model"], messages=body["messages"], tools=body["tools"], stream=True,
                    stream_options={"include_usage": True}, extra_body={"top_k": 40})
                async for _ in stream:
                    pass
            raw_s = time.perf_counter() - started
            await raw.close()

        # baseline 2: the same tool calls, straight through the registry (no model)
        started = time.perf_counter()
        for i in range(state.steps):
            await registry.call(repo, CALLS[i % len(CALLS)]["name"], CALLS[i % len(CALLS)]["arguments"])
        tools_s = time.perf_counter() - started

    n = state.steps
    shares = [prefix_share(a["messages"], b["messages"]) for a, b in zip(requests, requests[1:])]
    overhead = (loop_s - raw_s - tools_s) / n
    print(f"steps: {n} (stop: {state.stop}), requests recorded: {len(requests)}")
    print(f"{'':28}{'total s':>10}{'per step ms':>14}")
    print(f"{'agent loop (harness+model+tools)':34}{loop_s:>4.2f}{loop_s / n * 1000:>14.1f}")
    print(f"{'raw model round trips':34}{raw_s:>4.2f}{raw_s / n * 1000:>14.1f}")
    print(f"{'tool calls alone':34}{tools_s:>4.2f}{tools_s / n * 1000:>14.1f}")
    print(f"harness overhead per step: {overhead * 1000:.1f} ms "
          f"({loop_s / (raw_s + tools_s):.2f}x the unavoidable work)")
    print(f"prompt prefix kept between consecutive requests: min {min(shares) * 100:.2f}%, "
          f"mean {statistics.mean(shares) * 100:.2f}%")
    print(f"system prompt and tools identical in every request: "
          f"{all(r['messages'][0] == requests[0]['messages'][0] and r['tools'] == requests[0]['tools'] for r in requests)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    anyio.run(main, parser.parse_args().steps)
