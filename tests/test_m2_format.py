"""M2's wire format: every parser case from vLLM, SGLang and MiniMax (tests/data), schema typing, thinking round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m2_mcp.agent.m2_format import (coerce_value, despace_path, history_content, parse_tool_calls,
                                    split_thinking)

CASES_FILE = Path(__file__).resolve().parent / "data" / "tool_call_cases.json"  # sources: tests/data/README.md
CASES = json.loads(CASES_FILE.read_text())
TOOL_CASES = [c for c in CASES if "reasoning" not in c["parser"]]
REASONING_CASES = [c for c in CASES if "reasoning" in c["parser"]]

# Where we deliberately differ from the engine a case was taken from (see m2_format's docstring).
CONTENT_OVERRIDES = {
    # The sanitized parser rewrites `. gd` -> `.gd`; we keep what the model wrote, like plain minimax_m2.
    "test_sanitized_tool_parser_normalizes_visible_content": "Reading scripts/monkey_character. gd\n",
    # SGLang keeps the text around the block; we keep it too, blocks removed, pieces stripped.
    "test_complete_tool_call_should_not_leak_end_marker": "Here is some text.More text after.",
}
CALL_OVERRIDES = {
    "test_sanitized_tool_parser_normalizes_visible_content": [
        {"name": "read_file", "arguments": {"path": "scripts/monkey_character. gd"}}],
    # Engines stop at the first </parameter> (the case marks it a known limitation); we keep
    # a closing tag that is not followed by another element, so this value round-trips.
    "test_parameter_value_with_closing_tag_substring": [
        {"name": "test_func", "arguments": {"content": "This text contains </parameter> in it"}}],
}


def _id(case: dict) -> str:
    return case["test"].split("::")[-1].replace(" ", "_")[:70]


@pytest.mark.parametrize("case", TOOL_CASES, ids=[_id(c) for c in TOOL_CASES])
def test_shared_tool_call_case(case):
    out = parse_tool_calls(case["raw"], case["tools"])
    raw = case["raw"]
    name = case["test"].split("::")[-1]
    unclosed = raw.count("<minimax:tool_call>") > raw.count("</minimax:tool_call>")

    if unclosed:  # truncated output: no calls, an error, no XML leaking into content
        assert out.calls == [] and out.error and "not closed" in out.error
    else:
        assert out.error is None
    assert "minimax:tool_call" not in (out.content or "")
    assert "<invoke" not in (out.content or "")

    expected_calls = CALL_OVERRIDES.get(name, case["expected_tool_calls"])
    if expected_calls is not None:
        assert [c.name for c in out.calls] == [c["name"] for c in expected_calls]
        for got, want in zip(out.calls, expected_calls):
            if want["arguments"] is not None:  # null = only names asserted by the source test
                assert got.arguments == want["arguments"]
    elif not unclosed:  # source asserts only that the call happened
        assert out.calls and all(c.name for c in out.calls)

    expected_content = CONTENT_OVERRIDES.get(name, case["expected_content"])
    if expected_content is not None or case["engine"] == "vllm":
        # SGLang returns "" where vLLM returns None; we return None for "nothing".
        assert out.content == (expected_content or None)
    if name == "test_complete_tool_call_should_not_leak_end_marker":
        assert "Here is some text." in out.content and "More text after." in out.content


def test_every_shared_case_is_exercised():
    assert len(TOOL_CASES) + len(REASONING_CASES) == len(CASES) > 30
    assert REASONING_CASES


@pytest.mark.parametrize("case", REASONING_CASES, ids=[_id(c) for c in REASONING_CASES])
def test_shared_reasoning_case(case):
    raw = case["raw"]
    if "append" in case["parser"]:
        # The server's append_think parser gives content "<think>" + raw, reasoning None.
        content = "<think>" + raw
        assert content == case["expected_content"] and case["expected_reasoning"] is None
        thinking, visible = split_thinking(content, None)
        assert (thinking, visible) == ("", "This is response")
        assert history_content(content, None) == content  # kept verbatim
    else:
        # minimax_m2 splits: reasoning = text before </think>, content = the rest.
        reasoning, content = case["expected_reasoning"], case["expected_content"]
        thinking, visible = split_thinking(content, reasoning)
        assert thinking == reasoning and visible == (content or "")
        rebuilt = history_content(content, reasoning)
        assert rebuilt == "<think>\n" + reasoning + "\n</think>\n\n" + (content or "")
        # what M2's chat template extracts from the rebuilt content is the same split
        assert split_thinking(rebuilt, None) == (reasoning, (content or "").strip("\n"))
        # the same raw output through a server WITHOUT a reasoning parser: the thinking is found
        # once </think> is there (template rule); before that it cannot be told from text
        if "</think>" in raw:
            assert split_thinking(raw, None)[0] == reasoning
        else:
            assert split_thinking(raw, None) == ("", raw)


def test_thinking_inline_round_trip():
    content = "<think>\nI should read main.py first.\n</think>\n\nLet me look."
    assert split_thinking(content, None) == ("I should read main.py first.", "Let me look.")
    assert history_content(content, None) == content
    assert history_content("Let me look.", "I should read main.py first.") == content
    assert split_thinking("<think>\nstill thinking when cut", None) == ("still thinking when cut", "")
    assert split_thinking(None, None) == ("", "") and history_content(None, None) == ""


TOOLS = [{"type": "function", "function": {"name": "edit", "parameters": {"type": "object", "properties": {
    "path": {"type": "string"}, "count": {"type": "integer"}, "replace_all": {"type": "boolean"}}}}}]


def test_values_are_raw_stripped_and_not_unescaped():
    text = ('<minimax:tool_call>\n<invoke name=\'edit\' >\n<parameter name=path>a &amp; b.html</parameter>\n'
            '<parameter name="count">\n 3 \n</parameter>\n<parameter name="replace_all">yes</parameter>\n'
            '<parameter name="new"><div class="x">&lt;p&gt;</div>\n</parameter>\n</invoke>\n</minimax:tool_call>')
    out = parse_tool_calls(text, TOOLS)
    assert out.error is None and out.content is None
    call = out.calls[0]
    assert call.name == "edit"
    assert call.arguments == {"path": "a &amp; b.html", "count": 3, "replace_all": True,
                              "new": '<div class="x">&lt;p&gt;</div>'}
    assert call.raw.startswith("<invoke") and call.raw.endswith("</invoke>")
    # vLLM's strip rule: leading indentation and the trailing newline are lost, on both paths
    out = parse_tool_calls('<minimax:tool_call><invoke name="edit"><parameter name="path">'
                           '    x = 1\n</parameter></invoke></minimax:tool_call>', TOOLS)
    assert out.calls[0].arguments == {"path": "x = 1"}


def test_malformed_blocks_give_an_error_not_a_call():
    for text in ["<minimax:tool_call></minimax:tool_call>",
                 "<minimax:tool_call><invoke>x</invoke></minimax:tool_call>",
                 "<minimax:tool_call>just text</minimax:tool_call>",
                 'ok<minimax:tool_call><invoke name="a"></invoke></minimax:tool_call><minimax:tool_call><invoke'
                 ' name="b"><parameter name="p">1</parameter>']:
        out = parse_tool_calls(text, None)
        assert out.calls == [] and out.error, text
    assert parse_tool_calls('x<minimax:tool_call><invoke name="a"></invoke></minimax:tool_call><minimax:tool_call>'
                            '<invoke name="b">', None).content == "x"
    # stray text between elements: fall back to the engines' first-closing-tag reading
    out = parse_tool_calls('<minimax:tool_call><invoke name="a"><parameter name="p">1</parameter> oops '
                           '</invoke></minimax:tool_call>', None)
    assert out.error is None and out.calls[0].arguments == {"p": "1"}
    assert parse_tool_calls("", None).content is None


@pytest.mark.parametrize("raw, schema, expected", [
    ("5", None, "5"),
    ("5", {}, "5"),
    ("5", {"type": "integer"}, 5),
    ("-5", {"type": "integer"}, -5),
    ("3.0", {"type": "integer"}, 3.0),          # not an int: fallback json.loads
    ("3.0", {"type": "number"}, 3),
    ("2.5", {"type": "number"}, 2.5),
    ("nan", {"type": "number"}, "nan"),
    ("abc", {"type": "integer"}, "abc"),
    ("yes", {"type": "boolean"}, True),
    ("Off", {"type": "boolean"}, False),
    ("maybe", {"type": "boolean"}, "maybe"),
    ('{"a": 1}', {"type": "object"}, {"a": 1}),
    ("[1, 2]", {"type": "array"}, [1, 2]),
    ("[1, 2]", {"type": "object"}, [1, 2]),       # not an object: fallback json.loads
    ("not json", {"type": "array"}, "not json"),
    ("[1, 2]", {"type": "string"}, "[1, 2]"),
    ("None", {"type": "string"}, "None"),        # vLLM would give null; we keep the string
    ("null", {"type": "string"}, "null"),
    ("null", None, "null"),
    ("None", {"type": ["string", "null"]}, None),
    ("nil", {"anyOf": [{"type": "integer"}, {"type": "null"}]}, None),
    ("7", {"anyOf": [{"type": "integer"}, {"type": "null"}]}, 7),
    ("hello", {"oneOf": [{"type": "integer"}, {"type": "string"}]}, "hello"),
    ("12", {"allOf": [{"type": "integer"}]}, 12),
    ("12", {"type": ["string", "integer"]}, 12),  # vLLM's priority: integer before string
    ("celsius", {"enum": ["celsius", "fahrenheit"]}, "celsius"),
    ("2", {"enum": [1, 2, 3]}, 2),
    ("true", {"type": "null"}, True),             # no declared type converts: json.loads
    ("x", {"type": "null"}, "x"),
])
def test_coerce_value(raw, schema, expected):
    got = coerce_value(raw, schema)
    assert got == expected and type(got) is type(expected)


def test_despace_path():
    assert despace_path("scripts/monkey_character. gd") == "scripts/monkey_character.gd"
    assert despace_path("notes/a. b c") == "notes/a. b c"
    assert despace_path("calc.py") == "calc.py"
