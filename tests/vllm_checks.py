"""What a run of `m2-mcp fix` through vLLM must show, checked the same way on a live vLLM
(test_vllm_live.py) and on recorded vLLM frames (test_vllm_frames.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import make_repo, run_cli

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools" / "vllm_conformance"))
import scenario as conformance  # noqa: E402  (tools/vllm_conformance/scenario.py, standard library only)
from launcher import start_vllm_server  # noqa: E402,F401  (tools/vllm_conformance/launcher.py)

CALC = {"calc.py": "def add(a, b):\n    return a - b\n",
        "tests/test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
        "pytest.ini": "[pytest]\npythonpath = .\n"}
FINAL = "Fixed add() in calc.py: it returned a - b, now it returns a + b. The tests pass."


def calc_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "calc", CALC)


def run_fix(repo: Path, base_url: str, *extra: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess, dict]:
    proc = run_cli("fix", "--repo", str(repo), "--base-url", base_url, "--max-steps", "12", *extra, timeout=timeout)
    try:
        return proc, json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"no result JSON (exit {proc.returncode}): {proc.stderr[-3000:]}") from None


def thoughts(scenario: str) -> list[str]:
    """The thinking M2 wrote in each turn of a scenario (every attempt's), in order."""
    out = []
    for entry in conformance.scenarios()[scenario]["turns"]:
        out.append([conformance.raw_text(a).split("</think>")[0].strip() for a in conformance.attempts_of(entry)])
    return out


def assert_fixed(proc: subprocess.CompletedProcess, result: dict) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result["status"] == "fixed", result
    assert result["summary"] == FINAL  # the final answer is visible, not swallowed as thinking
    assert result["tests_after"]["passed"] == 1 and result["tests_after"]["failed"] == 0


def assert_thinking_closed(requests: list[dict], scenario: str) -> None:
    """Every request carries every earlier turn's thinking, inside a closed <think>...</think>."""
    expected = thoughts(scenario)
    for body in requests:
        turns = [m for m in body["messages"] if m["role"] == "assistant"]
        for i, message in enumerate(turns):
            content = message.get("content") or ""
            assert content.startswith("<think>") and content.count("</think>") == 1, content[:300]
            thinking = content.split("</think>")[0].removeprefix("<think>").strip()
            assert thinking in expected[i], (thinking, expected[i])
    assert requests and len([m for m in requests[-1]["messages"] if m["role"] == "assistant"]) == len(expected) - 1


def assert_prompts_keep_thinking(exchanges: list[dict], scenario: str) -> None:
    """What vLLM rendered for M2 (its preprocessing + M2's template) holds every earlier turn's thinking."""
    expected = thoughts(scenario)
    for exchange in exchanges:
        turns = sum(1 for m in exchange["request"]["messages"] if m["role"] == "assistant")
        for i in range(turns):
            assert any(f"<think>\n{t}\n</think>" in exchange["prompt"] for t in expected[i]), (i, exchange["prompt"][-2000:])
