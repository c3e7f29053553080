"""The scripted M2 stand-in (a test instrument) speaks M2's wire format as vLLM serves it."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx2
import pytest

from m2_mcp.agent.m2_format import parse_tool_calls
from standin import SCRIPT, start_standin

MODEL = "MiniMaxAI/MiniMax-M2"
READ = {"name": "read_file", "arguments": {"path": "calc.py", "offset": 3}}
EDIT = {"name": "edit_file", "arguments": {"path": "a.py", "old_string": "    x = 1", "replace_all": False,
                                           "edits": [{"a": 1}]}}
SCENARIO = {
    "model": MODEL,
    "max_context_tokens": 2000,
    "scripts": [
        {"match": "[parsed]", "turns": [
            {"think": "I should read it.", "text": "Let me look.", "tool_calls": [READ, EDIT],
             "usage": {"prompt_tokens": 11, "completion_tokens": 7}},
            {"think": "Done now.", "text": "Fixed."}]},
        {"match": "[xml]", "turns": [{"think": "Plan.", "text": "Editing.", "tool_calls": [EDIT],
                                      "tool_parser": False}]},
        {"match": "[split]", "turns": [{"think": "Hidden plan.", "text": "Visible.", "reasoning": "split",
                                        "tool_calls": [READ]}]},
        {"match": "[flaky]", "turns": [{"text": "recovered", "errors": [500, 429]}]},
        {"match": "[repeat]", "repeat_last": True, "turns": [{"text": "again"}]},
        {"turns": [{"text": "default script"}]},
    ],
}


@pytest.fixture(scope="module")
def m2(tmp_path_factory):
    with start_standin(SCENARIO, tmp_path_factory.mktemp("standin")) as server:
        yield server


@pytest.fixture(scope="module")
def http():
    with httpx2.Client(timeout=30) as client:
        yield client


def chat(http, m2, messages, **extra):
    return http.post(f"{m2.base_url}/chat/completions", json={"model": MODEL, "messages": messages, **extra})


def user(text):
    return [{"role": "user", "content": text}]


def stream_chunks(http, m2, messages):
    body = {"model": MODEL, "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
    chunks = []
    with http.stream("POST", f"{m2.base_url}/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                chunks.append(line[6:])
    assert chunks[-1] == "[DONE]"
    return [json.loads(c) for c in chunks[:-1]]


def test_models_and_health(http, m2):
    assert http.get(m2.base_url.removesuffix("/v1") + "/health").status_code == 200
    assert [m["id"] for m in http.get(f"{m2.base_url}/models").json()["data"]] == [MODEL]


def test_non_streaming_parsed_turn(http, m2):
    r = chat(http, m2, user("[parsed] fix it"))
    assert r.status_code == 200
    body = r.json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    msg = choice["message"]
    assert msg["content"] == "<think>\nI should read it.\n</think>\n\nLet me look."
    assert [c["function"]["name"] for c in msg["tool_calls"]] == ["read_file", "edit_file"]
    assert json.loads(msg["tool_calls"][1]["function"]["arguments"]) == EDIT["arguments"]
    assert all(c["id"].startswith("call_") and len(c["id"]) == 29 for c in msg["tool_calls"])
    assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def test_streaming_parsed_turn_fragments_like_vllm(http, m2):
    chunks = stream_chunks(http, m2, user("[parsed] fix it"))
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    content = "".join(d.get("content") or "" for d in deltas)
    assert content == "<think>\nI should read it.\n</think>\n\nLet me look."
    calls = [tc for d in deltas for tc in d.get("tool_calls") or []]
    headers = [tc for tc in calls if tc.get("id")]
    assert [(h["index"], h["function"]["name"]) for h in headers] == [(0, "read_file"), (1, "edit_file")]
    frags = [tc["function"]["arguments"] for tc in calls if tc["index"] == 0 and "arguments" in tc["function"]]
    assert frags == ['{"path": "calc.py"', ', "offset": 3', "}"]
    joined = "".join(tc["function"].get("arguments") or "" for tc in calls if tc["index"] == 1)
    assert joined == json.dumps(EDIT["arguments"])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 7
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"


def test_turn_follows_assistant_count_and_ends_with_done(http, m2):
    history = user("[parsed] fix it") + [
        {"role": "assistant", "content": "x", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"}]
    assert chat(http, m2, history).json()["choices"][0]["message"]["content"].endswith("Fixed.")
    history += [{"role": "assistant", "content": "Fixed."}, {"role": "user", "content": "more?"}]
    msg = chat(http, m2, history).json()["choices"][0]["message"]
    assert msg["content"] == "done." and "tool_calls" not in msg
    assert chat(http, m2, user("anything else")).json()["choices"][0]["message"]["content"] == "default script"
    rep = user("[repeat]") + [{"role": "assistant", "content": "again"}] * 3
    assert chat(http, m2, rep).json()["choices"][0]["message"]["content"] == "again"


def test_raw_xml_turn_when_tool_parser_off(http, m2):
    msg = chat(http, m2, user("[xml] go")).json()["choices"][0]
    assert msg["finish_reason"] == "stop" and "tool_calls" not in msg["message"]
    content = msg["message"]["content"]
    assert content.startswith("<think>\nPlan.\n</think>\n\nEditing.<minimax:tool_call>\n<invoke name=\"edit_file\">")
    assert '<parameter name="edits">[{"a": 1}]</parameter>' in content
    assert '<parameter name="replace_all">false</parameter>' in content
    out = parse_tool_calls(content.split("</think>\n\n")[1], None)
    assert out.content == "Editing." and out.calls[0].arguments["path"] == "a.py"


def test_split_reasoning(http, m2):
    msg = chat(http, m2, user("[split] go")).json()["choices"][0]["message"]
    assert msg["reasoning_content"] == "Hidden plan." and msg["content"] == "Visible."
    chunks = stream_chunks(http, m2, user("[split] go"))
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "Hidden plan."


def test_injected_errors_then_answer(http, m2):
    assert chat(http, m2, user("[flaky]")).status_code == 500
    r = chat(http, m2, user("[flaky]"))
    assert r.status_code == 429 and r.json()["error"]["code"] == 429
    assert chat(http, m2, user("[flaky]")).json()["choices"][0]["message"]["content"] == "recovered"


def test_validates_like_vllm(http, m2):
    r = chat(http, m2, user("hi") + [{"role": "tool", "tool_call_id": "x", "content": "orphan"}])
    assert r.status_code == 400
    assert "no previous assistant message with a tool call" in r.json()["error"]["message"]
    r = chat(http, m2, user("x" * 10000))
    assert r.status_code == 400 and "maximum context length is 2000 tokens" in r.json()["error"]["message"]
    r = http.post(f"{m2.base_url}/chat/completions", json={"model": "other", "messages": user("hi")})
    assert r.status_code == 404


def test_requests_are_recorded(http, m2):
    chat(http, m2, user("[record-me]"))
    bodies = m2.requests()
    assert bodies[-1]["messages"][0]["content"] == "[record-me]"
    lines = m2.record_path.read_text().splitlines()
    assert json.loads(lines[-1])["messages"][0]["content"] == "[record-me]"
    assert len(lines) == len(bodies)


def test_estimated_usage(http, m2):
    usage = chat(http, m2, user("default please")).json()["usage"]
    assert usage["prompt_tokens"] == len(json.dumps(user("default please"))) // 4
    assert usage["completion_tokens"] == len("default script") // 4


def test_unreadable_scenario_is_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--scenario", str(tmp_path / "missing.json")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: cannot read scenario") and r.stderr.count("\n") == 1
