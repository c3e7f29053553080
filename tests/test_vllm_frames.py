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
