"""MiniMax-M2's wire format: raw `<minimax:tool_call>` XML, schema typing, `<think>` blocks.

Pure functions, no I/O. Checked against the engines' own parser cases (tests/data/tool_call_cases.json)
and against vLLM's own serving code (tools/vllm_conformance/).

M2 writes tool calls as XML inside its answer::

    <minimax:tool_call>
    <invoke name="read_file">
    <parameter name="path">calc.py</parameter>
    </invoke>
    </minimax:tool_call>

A server running vLLM's `minimax_m2` tool parser turns this into OpenAI `tool_calls`;
without it the XML arrives inside `content` and `parse_tool_calls` does the same job,
with the same value rules (values stripped of surrounding whitespace, typed by the
tool's JSON schema), so the agent sees the same arguments either way.

Where we deliberately differ from the engines:
- `content` is the text before the first block (vLLM) followed by any non-blank text
  between or after blocks, stripped (SGLang keeps text after the block; vLLM drops it).
  It is None when nothing is left (vLLM uses None, SGLang "").
- An unclosed block (generation cut at max_tokens) gives no calls and an `error`; the
  partial XML never leaks into `content` or into a call.
- A value may contain a literal `</parameter>` (or `</invoke>`) as long as it is not
  followed by the next `<parameter`/`<invoke` or the end of its element; the engines
  cut the value at the first closing tag. When that strict reading leaves stray text
  between elements, the engines' first-closing-tag reading is used instead.
- A block that holds no `<invoke name=...>` is an `error`, not silently nothing.
- Extra attributes on `<invoke>`/`<parameter>` are ignored; names may be double-quoted,
  single-quoted or bare.
- Null aliases (`null`, `none`, `nil`) become JSON null only when the schema admits
  null; vLLM turns a string parameter whose text is `None` into null.
- Paths are NOT "sanitised": `scripts/monkey_character. gd` stays as written (plain
  `minimax_m2` behaviour, and what the parsed path delivers). `despace_path` is a
  helper a tool may use as a fallback when the written path does not exist.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

TOOL_CALL_START = "<minimax:tool_call>"
TOOL_CALL_END = "</minimax:tool_call>"
THINK_START = "<think>"
THINK_END = "</think>"

# Strict: a closing tag ends the element only when the next element (or the end) follows,
# so a value may contain a literal `</parameter>`. Loose: the engines' first-closing-tag rule,
# used when the strict reading leaves stray text between elements.
_INVOKE_STRICT = re.compile(r"<invoke\b([^>]*)>(.*?)</invoke>\s*(?=<invoke\b|$)", re.DOTALL)
_INVOKE_LOOSE = re.compile(r"<invoke\b([^>]*)>(.*?)</invoke>", re.DOTALL)
_PARAM_STRICT = re.compile(r"<parameter\b([^>]*)>(.*?)</parameter>\s*(?=<parameter\b|$)", re.DOTALL)
_PARAM_LOOSE = re.compile(r"<parameter\b([^>]*)>(.*?)</parameter>", re.DOTALL)
_NAME_ATTR_RE = re.compile(r"""\bname\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""")
_NULL_ALIASES = ("null", "none", "nil")
# vLLM's order: the first declared type (in this order) that converts wins.
_TYPE_PRIORITY = ("integer", "int", "number", "float", "boolean", "bool",
                  "object", "array", "string", "str", "text")
_INT_RE = re.compile(r"[+-]?\d+")
_PATH_SPACE_RE = re.compile(r"(?<=\w)\. (?=[A-Za-z0-9]{1,8}$)")


@dataclass
class RawCall:
    name: str
    arguments: dict
    raw: str = ""  # the `<invoke ...>...</invoke>` text as the model wrote it


@dataclass
class ParsedOutput:
    content: str | None
    calls: list[RawCall] = field(default_factory=list)
    error: str | None = None  # why the XML could not be used (then `calls` is empty)


def parse_tool_calls(text: str, tools: list[dict] | None) -> ParsedOutput:
    """Split model output into visible text and the tool calls written as M2 XML."""
    text = text or ""
    first = text.find(TOOL_CALL_START)
    if first < 0:
        return ParsedOutput(content=text or None)
    pieces = [text[:first]]
    blocks: list[str] = []
    pos = first
    while pos >= 0:
        end = text.find(TOOL_CALL_END, pos)
        if end < 0:
            return ParsedOutput(content=text[:first] or None, error=(
                "the tool-call block was not closed (output cut off or malformed): no </minimax:tool_call>"))
        blocks.append(text[pos + len(TOOL_CALL_START):end])
        pos = end + len(TOOL_CALL_END)
        nxt = text.find(TOOL_CALL_START, pos)
        pieces.append(text[pos:nxt if nxt >= 0 else len(text)].strip())
        pos = nxt
    content = "".join(pieces) or None
    schemas = _schemas_by_name(tools)
    calls: list[RawCall] = []
    for block in blocks:
        invokes = _elements(_INVOKE_STRICT, _INVOKE_LOOSE, block.strip())
        if not invokes:
            return ParsedOutput(content=content, error=(
                "malformed tool-call block: no <invoke name=\"...\">...</invoke> inside <minimax:tool_call>"))
        for inv in invokes:
            name = _name_attr(inv.group(1))
            if not name:
                return ParsedOutput(content=content, error="malformed tool call: <invoke> without a name")
            props = schemas.get(name, {})
            args: dict = {}
            for p in _elements(_PARAM_STRICT, _PARAM_LOOSE, inv.group(2).strip()):
                pname = _name_attr(p.group(1))
                if not pname:
                    return ParsedOutput(content=content, error=f"malformed tool call {name!r}: <parameter> without a name")
                args[pname] = coerce_value(p.group(2).strip(), props.get(pname))
            calls.append(RawCall(name=name, arguments=args, raw=inv.group(0).strip()))
    return ParsedOutput(content=content, calls=calls)


def coerce_value(raw: str, schema: dict | None):
    """Type one raw parameter value by its JSON schema (wire-format.md section 1.3)."""
    types = _schema_types(schema) if schema else set()
    if not types:
        return raw
    if raw.lower() in _NULL_ALIASES and "null" in types:
        return None
    for t in _TYPE_PRIORITY:
        if t not in types:
            continue
        if t in ("integer", "int"):
            if _INT_RE.fullmatch(raw.strip()):
                return int(raw)
        elif t in ("number", "float"):
            try:
                num = float(raw)
            except ValueError:
                continue
            if math.isfinite(num):
                return int(num) if num.is_integer() else num
        elif t in ("boolean", "bool"):
            low = raw.strip().lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
        elif t in ("object", "array"):
            try:
                val = json.loads(raw)
            except ValueError:
                continue
            if isinstance(val, dict if t == "object" else list):
                return val
        else:
            return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def split_thinking(content: str | None, reasoning: str | None) -> tuple[str, str]:
    """(thinking, visible text) of an assistant reply.

    `reasoning` is the server's split-out field (`reasoning_content`/`reasoning`); without
    it the thinking is read from `content` exactly as M2's chat template does: the text
    before the first `</think>` (minus a `<think>` and newlines) is thinking, the text
    after the last `</think>` is visible.
    """
    content = content or ""
    if reasoning:
        return reasoning.strip("\n"), content
    if THINK_END in content:
        thinking = content.split(THINK_END)[0].strip("\n").split(THINK_START)[-1].strip("\n")
        return thinking, content.split(THINK_END)[-1].strip("\n")
    if content.lstrip().startswith(THINK_START):  # thinking cut off before </think>
        return content.lstrip()[len(THINK_START):].strip("\n"), ""
    return "", content


def history_content(content: str | None, reasoning: str | None) -> str:
    """The assistant `content` to send back next turn so M2 sees its own thinking.

    With the append-think parser the `<think>...</think>` block is already in `content`
    and is kept verbatim; when the server split it out, it is rebuilt in front; without a
    reasoning parser the content starts inside the block, and `<think>` is put back in front.
    """
    content = content or ""
    if reasoning:
        return THINK_START + "\n" + reasoning.strip("\n") + "\n" + THINK_END + "\n\n" + content
    if THINK_END in content and THINK_START not in content.split(THINK_END)[0]:
        # no reasoning parser: the prompt held `<think>\n`, so the output starts inside the block
        return THINK_START + "\n" + content.lstrip("\n")
    return content


def despace_path(path: str) -> str:
    """Undo M2's occasional space after the dot of an extension (`a/b. gd` -> `a/b.gd`)."""
    return _PATH_SPACE_RE.sub(".", path)


def _elements(strict: re.Pattern, loose: re.Pattern, text: str) -> list[re.Match]:
    """Matches of the strict pattern when they cover `text`, else the engines' loose ones."""
    if not strict.sub("", text).strip():
        return list(strict.finditer(text))
    return list(loose.finditer(text))


def _name_attr(attrs: str) -> str:
    """The `name` attribute of a tag; extra attributes are ignored (vLLM issue #32827)."""
    m = _NAME_ATTR_RE.search(attrs)
    if not m:
        return ""
    return next(g for g in m.groups() if g is not None).strip()


def _schemas_by_name(tools: list[dict] | None) -> dict[str, dict]:
    """tool name -> its `properties`, for OpenAI-format tools or bare function dicts."""
    out: dict[str, dict] = {}
    for tool in tools or []:
        fn = tool.get("function", tool) if isinstance(tool, dict) else {}
        if isinstance(fn, dict) and fn.get("name"):
            props = (fn.get("parameters") or {}).get("properties") or {}
            out[fn["name"]] = props if isinstance(props, dict) else {}
    return out


def required_parameters(tools: list[dict] | None) -> dict[str, list[str]]:
    """tool name -> its required parameter names."""
    out: dict[str, list[str]] = {}
    for tool in tools or []:
        fn = tool.get("function", tool) if isinstance(tool, dict) else {}
        if isinstance(fn, dict) and fn.get("name"):
            required = (fn.get("parameters") or {}).get("required") or []
            out[fn["name"]] = [r for r in required if isinstance(r, str)]
    return out


def _schema_types(schema: dict) -> set[str]:
    """Every type a schema admits: `type` (string or list), enum values, anyOf/oneOf/allOf."""
    types: set[str] = set()
    if not isinstance(schema, dict):
        return types
    declared = schema.get("type")
    if isinstance(declared, str):
        types.add(declared.lower())
    elif isinstance(declared, list):
        types.update(str(t).lower() for t in declared)
    for value in schema.get("enum") or []:
        types.add(_json_type(value))
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key) or []:
            types |= _schema_types(sub)
    return types


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, (dict, list)):
        return "object" if isinstance(value, dict) else "array"
    return "string"
