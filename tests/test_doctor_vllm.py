"""`m2-mcp doctor`'s thinking check on frames recorded from vLLM's real serving code, in the
parser combinations that work and the ones that break M2's thinking (per vLLM version), and
its recognition of MiniMax's hosted API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from standin import start_standin
from test_doctor import _lines

FRAMES = Path(__file__).resolve().parent / "data" / "vllm_frames"
CASES = [  # (vLLM, recorded mode, thinking check mark, what the line says, the parser the fix names)
    ("0.33.0", "split", "✓", "comes back closed", None),
    ("0.33.0", "append", "✗", "<think> but no </think>", "--reasoning-parser minimax_m2 "),
    ("0.33.0", "no_reasoning", "✗", "plain content", "--reasoning-parser minimax_m2 "),
    ("0.11.2", "append", "✓", "comes back closed", None),
    ("0.11.2", "split", "✗", "no thinking in the reply", "--reasoning-parser minimax_m2_append_think "),
]


@pytest.mark.parametrize("version,mode,mark,says,parser", CASES)
def test_thinking_check_on_recorded_vllm_frames(tmp_path: Path, version, mode, mark, says, parser):
    recording = json.loads((FRAMES / version / f"fix-{mode}.json").read_text())
    with start_standin({"recorded": recording}, tmp_path) as m2:
        out = run_cli("doctor", "--base-url", m2.base_url, env={"M2_BASE_URL": "", "M2_MODEL": ""})
    line = _lines(out.stdout)["thinking"]
    assert line.startswith(mark) and says in line, out.stdout
    if parser:
        assert f"fix: restart vLLM with {parser}" in line and f"vLLM {version}" in line
        assert out.returncode == 1


def test_doctor_recognises_minimax_hosted_api():
    from m2_mcp.doctor import hosted_api_check
    from m2_mcp.endpoint import Endpoint

    assert hosted_api_check(Endpoint("https://api.minimax.io/v1", "MiniMax-M2", "k")).status == "ok"
    assert hosted_api_check(Endpoint("https://api.minimaxi.com/v1", "MiniMax-M2.5", "k")) is not None
    assert hosted_api_check(Endpoint("http://127.0.0.1:8000/v1", "MiniMaxAI/MiniMax-M2", "k")) is None
