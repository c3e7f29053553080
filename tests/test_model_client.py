"""ModelClient against the scripted M2 stand-in over real HTTP."""

from __future__ import annotations

import json
import socket

import anyio
import pytest

from m2_mcp import metrics
from m2_mcp.agent.model_client import ContextLengthError, ModelClient
from m2_mcp.endpoint import Endpoint
from m2_mcp.errors import EndpointError
from standin import start_standin

pytestmark = pytest.mark.anyio

MODEL = "MiniMaxAI/MiniMax-M2"
KEY = "sk-test-secret-key-0123456789"
TOOLS = [
    {"type": "function", "function": {"name": "read_file", "description": "Read a file", "parameters": {
        "type": "object", "properties": {"path": {"type": "string"}, "offset": {"type": "integer"}},
        "required": ["path"]}}},
    {"type": "function", "function": {"name": "edit_file", "description": "Edit a file", "parameters": {
        "type": "object", "properties": {"path": {"type": "string"}, "old_string": {"type": "string"},
                                         "new_string": {"type": "string"}, "replace_all": {"type": "boolean"}}}}},
]
READ = {"name": "read_file", "arguments": {"path": "calc.py", "offset": 3}}
EDIT = {"name": "edit_file", "arguments": {"path": "a.py", "old_string": "    x = 1\n", "new_string": "x = 2",
                                           "replace_all": True}}
PARTIAL_XML = ('<think>\nI will write it.\n</think>\n\nWriting.<minimax:tool_call>\n<invoke name="edit_file">\n'
               '<parameter name="path">a.py</parameter>\n<parameter name="new_string">def f(')
SCENARIO = {
    "model": MODEL,
    "max_context_tokens": 3000,
    "scripts": [
        {"match": "[parsed]", "turns": [
            {"think": "I should read calc.py.", "text": "Let me look.", "tool_calls": [READ, EDIT],
             "usage": {"prompt_tokens": 1234, "completion_tokens": 56}},
            {"think": "All good.", "text": "Fixed the bug."}]},
        {"match": "[xml]", "turns": [{"think": "Plan.", "text": "Editing.", "tool_calls": [READ, EDIT],
                                      "tool_parser": False}]},
        {"match": "[split]", "turns": [{"think": "Hidden plan.", "text": "Visible.", "tool_calls": [READ],
                                        "reasoning": "split"}]},
        {"match": "[bad-args]", "turns": [{"think": "t", "tool_calls": [READ, EDIT],
                                           "raw_arguments": {"1": "{\"path\": \"a.py\", oops"}}]},
        {"match": "[cut-call]", "turns": [{"think": "t", "text": "Writing.", "tool_calls": [EDIT],
                                           "raw_arguments": {"0": "{\"path\": \"a.py\""},
                                           "finish_reason": "length"}]},
        {"match": "[cut-xml]", "turns": [{"raw": PARTIAL_XML, "finish_reason": "length"}]},
        {"match": "[reasoning-field]", "turns": [{"think": "New field.", "text": "Hi.", "reasoning": "split",
                                                  "reasoning_field": "reasoning"}]},
        {"match": "[bad-xml]", "turns": [{"raw": "<think>\nt\n</think>\n\nOk.<minimax:tool_call>oops"
                                                 "</minimax:tool_call>"}]},
        {"match": "[flaky]", "turns": [{"text": "recovered", "errors": [500, 500]}]},
        {"match": "[down]", "turns": [{"text": "never", "errors": [503] * 20}]},
        {"match": "[slow]", "turns": [{"think": "x" * 400, "text": "slow answer", "chunk_delay": 0.01}]},
        {"match": "[stuck]", "turns": [{"text": "too late", "delay": 30}]},
        {"turns": [{"text": "default"}]},
    ],
}


@pytest.fixture(scope="module")
def m2(tmp_path_factory):
    with start_standin(SCENARIO, tmp_path_factory.mktemp("m2")) as server:
        yield server


def endpoint(m2) -> Endpoint:
    return Endpoint(m2.base_url, MODEL, KEY)


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def sample(name: str) -> float:
    return metrics.REGISTRY.get_sample_value(name) or 0.0


def user(text):
    return [{"role": "system", "content": "You are a coding agent."}, {"role": "user", "content": text}]


async def complete(m2, text, **kwargs):
    client = ModelClient(endpoint(m2), backoff_base=0.01, **kwargs)
    try:
        return await client.complete(user(text), TOOLS)
    finally:
        await client.aclose()


async def test_parsed_calls_thinking_kept_and_exact_usage(m2):
    reply = await complete(m2, "[parsed] fix calc")
    assert reply.source == "parsed" and reply.finish_reason == "tool_calls"
    assert not reply.truncated and reply.error is None
    assert reply.thinking == "I should read calc.py." and reply.content == "Let me look."
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [(READ["name"], READ["arguments"]),
                                                                 (EDIT["name"], EDIT["arguments"])]
    assert all(c.error is None and c.id.startswith("call_") for c in reply.tool_calls)
    assert reply.tool_calls[0].raw_arguments == json.dumps(READ["arguments"])
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (1234, 56)
    msg = reply.message
    assert msg["content"] == "<think>\nI should read calc.py.\n</think>\n\nLet me look."
    assert [c["id"] for c in msg["tool_calls"]] == [c.id for c in reply.tool_calls]
    assert json.loads(msg["tool_calls"][1]["function"]["arguments"]) == EDIT["arguments"]

    # the request carried M2's sampling defaults and the tools
    body = [b for b in m2.requests() if "[parsed]" in json.dumps(b["messages"])][-1]
    assert (body["temperature"], body["top_p"], body["top_k"]) == (1.0, 0.95, 40)
    assert body["tool_choice"] == "auto" and body["stream"] is True and body["tools"] == TOOLS
    assert body["stream_options"] == {"include_usage": True} and body["max_tokens"] == 16384

    # next turn: history goes back verbatim, the stand-in (like vLLM) accepts the tool results
    history = user("[parsed] fix calc") + [reply.message] + [
        {"role": "tool", "tool_call_id": c.id, "content": "ok"} for c in reply.tool_calls]
    client = ModelClient(endpoint(m2))
    try:
        final = await client.complete(history, TOOLS)
    finally:
        await client.aclose()
    assert final.tool_calls == [] and final.content == "Fixed the bug." and "tool_calls" not in final.message
    assert final.source == "none" and not final.truncated and final.error is None
    sent = m2.requests()[-1]["messages"][2]
    assert sent["content"] == reply.message["content"] and sent["tool_calls"] == reply.message["tool_calls"]


async def test_raw_xml_calls_are_parsed_and_history_is_parsed_form(m2):
    reply = await complete(m2, "[xml] edit")
    assert reply.source == "xml" and reply.finish_reason == "stop"
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [
        ("read_file", {"path": "calc.py", "offset": 3}),
        # vLLM's strip rule applies to the raw path too: the indentation and the newline are lost
        ("edit_file", {"path": "a.py", "old_string": "x = 1", "new_string": "x = 2", "replace_all": True})]
    assert reply.tool_calls[1].raw_arguments.startswith('<invoke name="edit_file">')
    assert reply.content == "Editing." and reply.thinking == "Plan."
    assert reply.message["content"] == "<think>\nPlan.\n</think>\n\nEditing."
    assert "minimax:tool_call" not in json.dumps(reply.message)
    assert len(reply.message["tool_calls"]) == 2


async def test_split_reasoning_is_rebuilt_into_history(m2):
    reply = await complete(m2, "[split] go")
    assert reply.thinking == "Hidden plan." and reply.content == "Visible."
    assert reply.message["content"] == "<think>\nHidden plan.\n</think>\n\nVisible."
    assert reply.tool_calls[0].arguments == READ["arguments"]


async def test_newer_vllm_reasoning_field_is_read(m2):
    reply = await complete(m2, "[reasoning-field]")
    assert (reply.thinking, reply.content) == ("New field.", "Hi.")
    assert reply.message["content"] == "<think>\nNew field.\n</think>\n\nHi."


async def test_malformed_xml_is_an_error_not_a_call(m2):
    reply = await complete(m2, "[bad-xml]")
    assert reply.source == "xml" and reply.tool_calls == [] and not reply.truncated
    assert "malformed" in reply.error and reply.finish_reason == "stop"
    assert reply.message == {"role": "assistant", "content": "<think>\nt\n</think>\n\nOk."}


async def test_malformed_json_arguments_give_a_call_error(m2):
    reply = await complete(m2, "[bad-args]")
    good, bad = reply.tool_calls
    assert good.arguments == READ["arguments"] and good.error is None
    assert bad.name == "edit_file" and bad.arguments is None
    assert bad.error.startswith("arguments are not valid JSON") and bad.raw_arguments == '{"path": "a.py", oops'
    # history stays renderable by M2's template: the bad call goes back with empty arguments
    assert reply.message["tool_calls"][1]["function"]["arguments"] == "{}"


async def test_output_cut_inside_a_parsed_call_is_truncated(m2):
    reply = await complete(m2, "[cut-call]")
    assert reply.truncated and reply.tool_calls == [] and reply.finish_reason == "length"
    assert "cut off" in reply.error and reply.thinking == "t" and reply.content == "Writing."
    assert "tool_calls" not in reply.message


async def test_output_cut_inside_raw_xml_is_truncated_without_leaking(m2):
    reply = await complete(m2, "[cut-xml]")
    assert reply.source == "xml" and reply.truncated and reply.tool_calls == []
    assert "not closed" in reply.error
    assert reply.content == "Writing." and reply.thinking == "I will write it."
    assert reply.message == {"role": "assistant", "content": "<think>\nI will write it.\n</think>\n\nWriting."}


async def test_two_500s_then_success_are_retried(m2):
    events = []
    before = sample("m2mcp_model_retries_total")
    reply = await complete(m2, "[flaky]", on_event=events.append)
    assert reply.content == "recovered"
    assert sample("m2mcp_model_retries_total") - before == 2
    retries = [e for e in events if e["type"] == "retry"]
    # retry N of M everywhere: the events count retries, like the final "gave up after M retries"
    assert [(e["attempt"], e["retries"]) for e in retries] == [(1, 3), (2, 3)] and "HTTP 500" in retries[0]["error"]
    assert all(KEY not in json.dumps(e) for e in events)


async def test_progress_events_during_a_long_generation(m2):
    seen = []

    async def on_event(event):  # async callbacks are awaited
        seen.append(event)

    reply = await complete(m2, "[slow]", on_event=on_event, event_interval=0)
    chars = [e["chars"] for e in seen if e["type"] == "delta"]
    assert reply.content == "slow answer" and len(chars) > 5 and chars == sorted(chars)


async def test_cancel_during_a_request_returns_promptly(m2):
    client = ModelClient(endpoint(m2))
    try:
        with anyio.move_on_after(0.5) as scope:
            await client.complete(user("[stuck]"), TOOLS)
        assert scope.cancelled_caught
    finally:
        await client.aclose()


async def test_endpoint_down_then_breaker_fails_fast(m2):
    url = dead_url()
    client = ModelClient(Endpoint(url, MODEL, KEY), retries=1, backoff_base=0.01, breaker_cooldown=60)
    try:
        with pytest.raises(EndpointError) as err:
            await client.complete(user("hi"), TOOLS)
        text = str(err.value)
        assert url in text and "\n" not in text and KEY not in text and "gave up after 1 retry" in text
        assert err.value.exit_code == 3
        assert sample("m2mcp_circuit_breaker_open") == 1
        with pytest.raises(EndpointError, match="circuit breaker open") as err:
            await client.complete(user("hi"), TOOLS)
        assert url in str(err.value)
    finally:
        await client.aclose()


async def test_breaker_opens_without_more_requests(m2):
    client = ModelClient(endpoint(m2), retries=2, backoff_base=0.01, breaker_cooldown=60)
    try:
        with pytest.raises(EndpointError, match="HTTP 503"):
            await client.complete(user("[down]"), TOOLS)
        count = len(m2.requests())
        with pytest.raises(EndpointError, match="circuit breaker open"):
            await client.complete(user("[down]"), TOOLS)
        assert len(m2.requests()) == count  # failed fast: no network
        assert sum("[down]" in json.dumps(b["messages"]) for b in m2.requests()) == 3
    finally:
        await client.aclose()


async def test_second_endpoint_used_when_first_is_down(m2):
    events = []
    dead = dead_url()
    client = ModelClient([Endpoint(dead, MODEL, KEY), endpoint(m2)], retries=1, backoff_base=0.01,
                         on_event=events.append)
    try:
        reply = await client.complete(user("failover please"), TOOLS)
        assert reply.content == "default" and reply.endpoint == m2.base_url
        assert [e["from"] for e in events if e["type"] == "failover"] == [dead]
        events.clear()
        await client.complete(user("again"), TOOLS)  # sticks to the endpoint that answered
        assert events == []
    finally:
        await client.aclose()
    assert sample("m2mcp_circuit_breaker_open") == 0


async def test_context_length_and_bad_request_are_not_retried(m2):
    client = ModelClient(endpoint(m2), backoff_base=0.01)
    try:
        count = len(m2.requests())
        with pytest.raises(ContextLengthError, match="maximum context length") as err:
            await client.complete(user("x" * 20000), TOOLS)
        assert m2.base_url in str(err.value) and isinstance(err.value, EndpointError)
        orphan = user("hi") + [{"role": "tool", "tool_call_id": "x", "content": "r"}]
        with pytest.raises(EndpointError, match="HTTP 400") as err:
            await client.complete(orphan, TOOLS)
        assert not isinstance(err.value, ContextLengthError)
        assert len(m2.requests()) == count + 2  # one request each: no retries
        assert (await client.complete(user("still fine"), TOOLS)).content == "default"  # breaker not tripped
    finally:
        await client.aclose()


def test_minimax_hosted_api_gets_its_own_request_fields():
    from m2_mcp.agent.model_client import is_minimax_api, length_fields

    assert length_fields("https://api.minimax.io/v1", 4096, 40) == {"max_completion_tokens": 4096}
    assert length_fields("https://api.minimaxi.com/v1", 4096, 40) == {"max_completion_tokens": 4096}
    assert length_fields("http://127.0.0.1:8000/v1", 4096, 40) == {"max_tokens": 4096, "extra_body": {"top_k": 40}}
    assert not is_minimax_api("https://api.minimax.io.evil.example/v1")
