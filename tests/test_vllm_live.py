"""`m2-mcp fix` end to end through vLLM's REAL OpenAI serving code (scripted engine, stand-in tokenizer).

Runs when a Python with vLLM installed is named: M2_VLLM_PYTHON (the newest tested vLLM; .ci/run
makes one) and/or M2_VLLM011_PYTHON (vLLM 0.11.x). The server is tools/vllm_conformance/server.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from m2_mcp.serving.parsers import reasoning_parser
from vllm_checks import (assert_fixed, assert_prompts_keep_thinking, assert_thinking_closed, calc_repo, run_fix,
                         start_vllm_server)

pytestmark = pytest.mark.slow
PYTHONS = {"newest": "M2_VLLM_PYTHON", "0.11": "M2_VLLM011_PYTHON"}


@pytest.fixture(scope="module", params=list(PYTHONS))
def vllm(request, tmp_path_factory):
    variable = PYTHONS[request.param]
    python = os.environ.get(variable)
    if not python:
        why = os.environ.get("M2_VLLM_UNAVAILABLE") if request.param == "newest" else None
        made = ".ci/run makes one" if request.param == "newest" else "not made by .ci/run: its frames are replayed instead"
        pytest.skip(why or f"{variable} is not set (the path of a python with vLLM installed; {made})")
    if not Path(python).exists():
        pytest.skip(f"{variable}={python} does not exist")
    with start_vllm_server(python, tmp_path_factory.mktemp(f"vllm-{request.param}")) as server:
        yield server


def recommended_mode(version: str) -> str:
    """The mode `m2-mcp model serve` would launch this vLLM in."""
    return "split" if reasoning_parser("vllm", version) == "minimax_m2" else "append"


def test_multi_step_fix_with_the_reasoning_parser_serve_picks(vllm, tmp_path: Path):
    mode = recommended_mode(vllm.version)
    proc, result = run_fix(calc_repo(tmp_path), vllm.base_url("a", "fix", mode))
    assert_fixed(proc, result)
    assert result["steps"] == 4 and result["tool_calls"] == 4
    exchanges = vllm.exchanges("a", "fix", mode)
    assert_thinking_closed([e["request"] for e in exchanges], "fix")
    assert_prompts_keep_thinking(exchanges, "fix")


@pytest.mark.parametrize("mode", ["no_reasoning", "raw_xml"])
def test_multi_step_fix_without_a_reasoning_or_tool_parser(vllm, tmp_path: Path, mode: str):
    proc, result = run_fix(calc_repo(tmp_path), vllm.base_url("b", "fix", mode))
    assert_fixed(proc, result)
    exchanges = vllm.exchanges("b", "fix", mode)
    assert_thinking_closed([e["request"] for e in exchanges if e["status"] == 200], "fix")
    assert_prompts_keep_thinking([e for e in exchanges if e["status"] == 200], "fix")
    if mode == "raw_xml":  # vLLM refuses tool_choice auto once; the client falls back for the rest of the run
        assert [e["status"] for e in exchanges] == [400, 200, 200, 200, 200]
        assert all(e["request"]["tool_choice"] == "none" for e in exchanges[1:])
        assert proc.stderr.count('sending tool_choice "none"') == 1


def test_a_call_to_an_unknown_tool_does_not_end_the_run(vllm, tmp_path: Path):
    mode = recommended_mode(vllm.version)
    proc, result = run_fix(calc_repo(tmp_path), vllm.base_url("c", "unknown_tool", mode))
    assert_fixed(proc, result)
    first = vllm.exchanges("c", "unknown_tool", mode)[1]["request"]["messages"]
    # vLLM 0.11 passes the call through (answered with an error); 0.33 drops it (the turn is sampled again)
    assert any("unknown tool 'web_search'" in (m.get("content") or "") for m in first if m["role"] == "tool") or \
        not any(m["role"] == "assistant" for m in first)


def test_a_call_cut_at_max_tokens_is_not_run_and_max_tokens_grows(vllm, tmp_path: Path):
    mode = recommended_mode(vllm.version)
    repo = calc_repo(tmp_path)
    proc, result = run_fix(repo, vllm.base_url("d", "cut_call", mode))
    assert_fixed(proc, result)
    exchanges = vllm.exchanges("d", "cut_call", mode)
    first, second = exchanges[0]["request"], exchanges[1]["request"]
    assert second["messages"] == first["messages"]  # the cut turn was not kept, nothing was run
    assert second["max_tokens"] > first["max_tokens"]
    text = (repo / "calc.py").read_text()
    assert text.startswith("# note 0:") and text.endswith("return a + b\n")  # the whole call, once
    assert "output cut at max_tokens; sampling the turn again" in proc.stderr


def test_two_tool_call_blocks_stay_two_calls(vllm, tmp_path: Path):
    mode = recommended_mode(vllm.version)
    proc, result = run_fix(calc_repo(tmp_path), vllm.base_url("e", "two_blocks", mode))
    assert_fixed(proc, result)
    messages = vllm.exchanges("e", "two_blocks", mode)[1]["request"]["messages"]
    calls = next(m for m in messages if m["role"] == "assistant")["tool_calls"]
    results = [m for m in messages if m["role"] == "tool"]
    assert len(calls) == 2 and calls[0]["id"] != calls[1]["id"] and len(results) == 2
    assert "return a - b" in results[0]["content"]  # the first call ran: calc.py was read
    # the second: read (0.33) or, where vLLM 0.11 never sent its arguments, a malformed-arguments error
    assert "assert add(2, 3) == 5" in results[1]["content"] or "malformed arguments" in results[1]["content"]
