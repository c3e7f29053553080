"""Compaction keeps vLLM's prefix cache: old tool outputs are rewritten rarely and in large batches."""

from __future__ import annotations

import json

from m2_mcp.agent.loop import COMPACT_AT, COMPACT_TO, COMPACTED, maybe_compact, prompt_tokens_estimate


def test_a_long_run_compacts_in_few_large_batches_and_keeps_the_task_and_thinking():
    window, tools = 40_000, [{"type": "function", "function": {"name": "read_file", "parameters": {}}}]
    messages = [{"role": "system", "content": "system"}, {"role": "user", "content": "the task"}]
    events, rewritten_steps, previous = 0, 0, None
    for step in range(120):
        before = json.dumps(messages)
        if maybe_compact(messages, tools, window):
            events += 1
            outputs = [m for m in messages if m["role"] == "tool"]
            assert prompt_tokens_estimate(messages, tools) <= window * COMPACT_TO or all(  # well below the threshold,
                m["content"].endswith(COMPACTED) for m in outputs)                         # or nothing left to compact
        assert prompt_tokens_estimate(messages, tools) <= window * COMPACT_AT
        if not json.dumps(messages).startswith(before[:-1]):  # an old message was rewritten this step
            rewritten_steps += 1
        messages.append({"role": "assistant", "content": f"<think>\nthinking {step}\n</think>\n\n",
                         "tool_calls": [{"id": f"c{step}", "type": "function",
                                         "function": {"name": "read_file", "arguments": "{}"}}]})
        messages.append({"role": "tool", "tool_call_id": f"c{step}", "content": f"output {step}\n" * 400})
    # 120 steps of ~1.2k tokens cross a 40k window several times, but the history is rewritten only
    # at the compaction events, each freeing about (COMPACT_AT - COMPACT_TO) of the window
    assert 3 <= events <= 120 * 1_250 / (window * (COMPACT_AT - COMPACT_TO)) + 2, events
    assert rewritten_steps == events
    assert messages[1]["content"] == "the task"
    assert all(m["content"].startswith("<think>\nthinking") for m in messages if m["role"] == "assistant")
    assert sum(m["content"].endswith(COMPACTED) for m in messages if m["role"] == "tool") > 100
