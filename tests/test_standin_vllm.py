"""The stand-in's vLLM-version shapes (`"vllm": "0.11" | "0.33"`) reproduce what the recorded frames of
vLLM's real serving code show, so the fast tests see what a real server would send."""

from __future__ import annotations

import anyio
import pytest

from m2_mcp.agent.model_client import ModelClient
from m2_mcp.endpoint import Endpoint
from m2_mcp.tools import registry
from standin import start_standin

TOOLS = [spec.openai_tool() for spec in registry.agent_tools()]
READ_CALC = {"name": "read_file", "arguments": {"path": "calc.py"}}
READ_TEST = {"name": "read_file", "arguments": {"path": "tests/test_calc.py"}}
WRITE = {"name": "write_file", "arguments": {"path": "calc.py", "content": "def add(a, b):\n    return a + b\n" * 20}}
USER = [{"role": "user", "content": "fix it"}]


def reply_for(tmp_path, version: str, turn: dict, reasoning: str = "append", max_tokens: int = 16384):
    scenario = {"vllm": version, "reasoning": reasoning, "scripts": [{"turns": [turn]}]}
    with start_standin(scenario, tmp_path) as m2:
        async def ask():
            client = ModelClient(Endpoint(m2.base_url, m2.model, "EMPTY"), retries=0, max_tokens=max_tokens)
            try:
                return await client.complete(USER, TOOLS)
            finally:
                await client.aclose()
        return anyio.run(ask)


def test_append_think_on_0_33_loses_think_end_and_on_0_11_keeps_it(tmp_path):
    turn = {"think": "Thinking.", "text": "The answer."}
    new = reply_for(tmp_path / "a", "0.33", turn)
    assert "</think>" not in new.raw_content and new.empty  # the answer looks like thinking
    old = reply_for(tmp_path / "b", "0.11", turn)
    assert old.thinking == "Thinking." and old.content == "The answer."


def test_split_on_0_33_uses_reasoning_and_on_0_11_gives_plain_content(tmp_path):
    turn = {"think": "Thinking.", "text": "The answer."}
    new = reply_for(tmp_path / "a", "0.33", turn, reasoning="split")
    assert new.reasoning_field and new.thinking == "Thinking." and new.content == "The answer."
    old = reply_for(tmp_path / "b", "0.11", turn, reasoning="split")
    assert not old.reasoning_field and "Thinking." in old.raw_content


def test_an_unknown_tool_is_dropped_on_0_33_and_passed_on_0_11(tmp_path):
    turn = {"think": "Search the web.", "tool_calls": [{"name": "web_search", "arguments": {"q": "x"}}]}
    assert reply_for(tmp_path / "a", "0.33", turn).empty
    assert [c.name for c in reply_for(tmp_path / "b", "0.11", turn).tool_calls] == ["web_search"]


def test_a_second_block_restarts_the_index_on_0_11(tmp_path):
    turn = {"think": "Read both.", "tool_calls": [READ_CALC, READ_TEST], "second_block_from": 1}
    old = reply_for(tmp_path / "a", "0.11", turn)
    assert len(old.tool_calls) == 2 and old.tool_calls[1].name == "read_file" and old.tool_calls[1].error
    new = reply_for(tmp_path / "b", "0.33", turn)
    assert [c.arguments for c in new.tool_calls] == [READ_CALC["arguments"], READ_TEST["arguments"]]


@pytest.mark.parametrize("version", ["0.11", "0.33"])
def test_a_cut_call_is_seen_as_cut_whatever_the_finish_reason(tmp_path, version):
    turn = {"think": "Write it.", "tool_calls": [WRITE], "max_tokens_needed": 20000}
    cut = reply_for(tmp_path / "a", version, turn)
    assert cut.truncated and not cut.tool_calls and cut.finish_reason == ("length" if version == "0.33" else "tool_calls")
    whole = reply_for(tmp_path / "b", version, turn, max_tokens=32768)
    assert not whole.truncated and whole.tool_calls[0].arguments == WRITE["arguments"]
