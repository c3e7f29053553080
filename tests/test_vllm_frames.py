"""`m2-mcp fix` on SSE frames recorded from vLLM's real serving code (no vLLM needed).

The recordings in tests/data/vllm_frames/<vLLM version>/<scenario>-<mode>.json are made by
tools/vllm_conformance/record.py; the stand-in replays them (its `recorded` scenario field).
The same properties as the live tests (test_vllm_live.py) are checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m2_mcp.serving.parsers import reasoning_parser
from standin import start_standin
from vllm_checks import assert_fixed, assert_thinking_closed, calc_repo, run_fix

FRAMES = Path(__file__).resolve().parent / "data" / "vllm_frames"
VERSIONS = sorted(p.name for p in FRAMES.iterdir() if p.is_dir())


def recording(version: str, scenario: str, mode: str | None = None) -> dict:
    mode = mode or ("split" if reasoning_parser("vllm", version) == "minimax_m2" else "append")
    data = json.loads((FRAMES / version / f"{scenario}-{mode}.json").read_text())
    assert data["vllm"] == version and data["scenario"] == scenario and data["mode"] == mode
    return data


def replay_fix(tmp_path: Path, data: dict) -> tuple:
    repo = calc_repo(tmp_path)
    with start_standin({"recorded": data}, tmp_path / "standin") as m2:
        proc, result = run_fix(repo, m2.base_url, timeout=300)
        return repo, proc, result, m2.requests()


def test_recordings_exist_for_the_newest_and_the_oldest_tested_vllm():
    from m2_mcp.serving.parsers import NEWEST_TESTED_VLLM, OLDEST_TESTED_VLLM
    assert {NEWEST_TESTED_VLLM, OLDEST_TESTED_VLLM} <= set(VERSIONS)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("mode", [None, "no_reasoning", "raw_xml"], ids=["parser-serve-picks", "no-reasoning-parser",
                                                                          "no-tool-parser"])
def test_multi_step_fix(tmp_path: Path, version: str, mode: str | None):
    _, proc, result, requests = replay_fix(tmp_path, recording(version, "fix", mode))
    assert_fixed(proc, result)
    answered = [r for r in requests if r.get("tool_choice") != "auto"] if mode == "raw_xml" else requests
    assert_thinking_closed(answered, "fix")
    if mode == "raw_xml":  # one 400 on tool_choice auto, then "none" for the rest of the run
        assert [r["tool_choice"] for r in requests] == ["auto"] + ["none"] * 4
        assert proc.stderr.count('sending tool_choice "none"') == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_a_call_to_an_unknown_tool_does_not_end_the_run(tmp_path: Path, version: str):
    _, proc, result, requests = replay_fix(tmp_path, recording(version, "unknown_tool"))
    assert_fixed(proc, result)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_cut_call_is_not_run_and_max_tokens_grows(tmp_path: Path, version: str):
    repo, proc, result, requests = replay_fix(tmp_path, recording(version, "cut_call"))
    assert_fixed(proc, result)
    assert requests[1]["messages"] == requests[0]["messages"] and requests[1]["max_tokens"] > requests[0]["max_tokens"]
    assert (repo / "calc.py").read_text().startswith("# note 0:")


@pytest.mark.parametrize("version", VERSIONS)
def test_two_tool_call_blocks_stay_two_calls(tmp_path: Path, version: str):
    _, proc, result, requests = replay_fix(tmp_path, recording(version, "two_blocks"))
    assert_fixed(proc, result)
    messages = requests[1]["messages"]
    calls = next(m for m in messages if m["role"] == "assistant")["tool_calls"]
    results = [m for m in messages if m["role"] == "tool"]
    assert len(calls) == 2 and calls[0]["id"] != calls[1]["id"] and len(results) == 2
    assert "return a - b" in results[0]["content"]
    assert "assert add(2, 3) == 5" in results[1]["content"] or "malformed arguments" in results[1]["content"]


def reply_from(version: str, scenario: str, mode: str | None, turn: int, attempt: int = 0, max_tokens: int = 16384):
    """Our client's Reply for one recorded vLLM response (the frames parsed as the OpenAI SDK does)."""
    from openai.types.chat import ChatCompletionChunk

    from m2_mcp.agent.model_client import _Stream, build_reply
    from m2_mcp.tools import registry

    data = recording(version, scenario, mode)
    response = next(r for r in data["responses"] if r["turn"] == turn and r["attempt"] == attempt
                    and r["status"] == 200 and r["max_tokens"] == max_tokens)
    stream = _Stream()
    for frame in response["frames"]:
        if frame != "[DONE]":
            stream.add(ChatCompletionChunk.model_validate_json(frame))
    return build_reply(stream, [spec.openai_tool() for spec in registry.agent_tools()], max_tokens)


@pytest.mark.parametrize("version", VERSIONS)
def test_thinking_is_read_from_where_each_version_puts_it(version: str):
    reply = reply_from(version, "fix", None, 0)  # 0.33: `reasoning` field; 0.11: <think> in the content
    assert reply.thinking.startswith("The failing test is test_add") and reply.content.strip() == "Let me read both files."
    history = reply.message["content"]
    assert history.startswith("<think>") and reply.thinking in history.split("</think>")[0]
    none = reply_from(version, "fix", "no_reasoning", 0)  # no reasoning parser: closed again in the history
    assert none.thinking == reply.thinking and none.message["content"].startswith("<think>\n")


@pytest.mark.parametrize("version", VERSIONS)
def test_a_cut_call_is_detected_whatever_the_finish_reason(version: str):
    cut = reply_from(version, "cut_call", None, 0)  # 0.33: length; 0.11: tool_calls + completion_tokens == max
    assert cut.truncated and cut.tool_calls == [] and "cut off" in cut.error
    whole = reply_from(version, "cut_call", None, 0, max_tokens=32768)
    assert not whole.truncated and [c.name for c in whole.tool_calls] == ["write_file"]


def test_0_11_second_tool_call_block_is_a_second_call():
    reply = reply_from("0.11.2", "two_blocks", None, 0)
    first, second = reply.tool_calls
    assert first.id != second.id and first.arguments == {"path": "calc.py"} and first.error is None
    assert second.error and "not valid JSON" in second.error  # its arguments never arrived: answered as an error


def test_0_33_drops_a_call_to_an_unknown_tool_and_the_empty_turn_is_not_a_final_answer():
    reply = reply_from("0.33.0", "unknown_tool", None, 0)
    assert reply.tool_calls == [] and reply.empty and reply.thinking


def test_0_33_append_think_loses_think_end_so_the_answer_looks_like_thinking():
    reply = reply_from("0.33.0", "fix", "append", 3)  # why serve picks minimax_m2 on 0.33
    assert "</think>" not in reply.raw_content and reply.content == "" and reply.empty


def test_reasoning_field_names():
    from m2_mcp.agent.model_client import reasoning_text

    assert reasoning_text({"reasoning_content": "a"}) == "a" and reasoning_text({"reasoning": "b"}) == "b"
    assert reasoning_text({"reasoning_details": [{"type": "reasoning.text", "text": "c"}, {"text": "d"}]}) == "cd"
    assert reasoning_text({"content": "x"}) == ""
