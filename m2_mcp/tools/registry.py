"""One registry of tools, shared by both front doors: MCP clients and the M2 agent loop.

A tool is a plain function `fn(repo: Repo, **typed_args) -> pydantic model` (sync or
async), registered with `@tool(...)`. The registry derives the argument model and JSON
schema from the signature, validates calls, and turns failures into `ToolError`s.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import anyio
import pydantic_core
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from m2_mcp import budget
from m2_mcp.errors import ToolError
from m2_mcp.repo import Repo

# A synchronous tool runs in a worker thread, at most this long (a timed-out or cancelled call
# returns at once; the thread is abandoned). Tools never block on opens, so this is a backstop.
TOOL_TIMEOUT_S = 300
# Worker threads for tools: their own pool, so busy tools never starve the server's own threads
# (the stdio transport reads stdin in one).
_TOOL_THREADS = 16
_limiter: anyio.CapacityLimiter | None = None
# Room the tools leave in the output budget for the result's JSON structure.
RESULT_RESERVE = 1000


@dataclass
class ToolSpec:
    name: str
    fn: Callable[..., Any]
    description: str
    result_model: type[BaseModel]
    args_model: type[BaseModel]
    for_agent: bool = True  # listed to M2 in the agent loop
    read_only: bool = True
    params: list[inspect.Parameter] = field(default_factory=list)

    def input_schema(self) -> dict[str, Any]:
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return schema

    def openai_tool(self) -> dict[str, Any]:
        """The tool in OpenAI `tools=[...]` format (what vLLM renders into M2's prompt)."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.input_schema()},
        }


REGISTRY: dict[str, ToolSpec] = {}


def tool(*, for_agent: bool = True, read_only: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `fn(repo, ...)`; its docstring's first paragraph is the description."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn, eval_str=True)
        params = list(sig.parameters.values())[1:]  # drop `repo`
        fields: dict[str, Any] = {}
        for p in params:
            default = ... if p.default is inspect.Parameter.empty else p.default
            fields[p.name] = (p.annotation, default)
        args_model = create_model(
            f"{fn.__name__}_args", __config__=ConfigDict(extra="forbid"), **fields
        )
        description = inspect.cleandoc(fn.__doc__ or "").split("\n\n")[0].replace("\n", " ")
        REGISTRY[fn.__name__] = ToolSpec(
            name=fn.__name__,
            fn=fn,
            description=description,
            result_model=sig.return_annotation,
            args_model=args_model,
            for_agent=for_agent,
            read_only=read_only,
            params=params,
        )
        return fn

    return decorate


def load_all() -> dict[str, ToolSpec]:
    """Import every tool module so the registry is complete."""
    from m2_mcp.tools import edits, files, git, patch, repomap, search, shell, testing  # noqa: F401

    return REGISTRY


def agent_tools() -> list[ToolSpec]:
    return [spec for spec in load_all().values() if spec.for_agent]


def validation_message(exc: ValidationError) -> str:
    """One line per problem, e.g. `offset: Input should be a valid integer`."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    return "invalid arguments: " + "; ".join(parts)


async def call(repo: Repo, name: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
    """Validate and run one tool call; returns the structured result or raises ToolError."""
    spec = load_all().get(name)
    if spec is None:
        raise ToolError(f"unknown tool: {name}; available: {', '.join(sorted(REGISTRY))}")
    if not isinstance(arguments, dict):
        raise ToolError("arguments must be a JSON object")
    try:
        args = spec.args_model.model_validate(arguments)
    except ValidationError as exc:
        raise ToolError(validation_message(exc)) from None
    kwargs = {p.name: getattr(args, p.name) for p in spec.params}
    try:
        result = await _run(spec, repo, kwargs)
    except OSError as exc:  # a file-system refusal the tool did not anticipate is still just a tool error
        raise ToolError(f"{name} failed: {exc.strerror or exc}") from None
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    return fit(result, budget.output_chars())


async def _run(spec: ToolSpec, repo: Repo, kwargs: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(spec.fn):
        return await spec.fn(repo, **kwargs)
    global _limiter
    _limiter = _limiter or anyio.CapacityLimiter(_TOOL_THREADS)
    with anyio.move_on_after(TOOL_TIMEOUT_S) as scope:
        result = await anyio.to_thread.run_sync(lambda: spec.fn(repo, **kwargs), abandon_on_cancel=True,
                                                limiter=_limiter)
    if scope.cancelled_caught:
        raise ToolError(f"{spec.name} timed out after {TOOL_TIMEOUT_S}s")
    return result


def json_chars(text: str) -> int:
    """Characters `text` takes inside a JSON string (escapes of control characters counted)."""
    if text.isascii() and text.isprintable():
        return len(text) + text.count('"') + text.count("\\")
    return len(json.dumps(text, ensure_ascii=False)) - 2


def text_chars(result: Any) -> int:
    """Length of the text block an MCP client gets for `result` (the SDK's indented JSON)."""
    return len(pydantic_core.to_json(result, indent=2).decode())


def fit(result: Any, limit: int) -> Any:
    """Shrink `result` until its JSON text fits in `limit` characters: cut the longest string
    (head and tail kept, with a marker), or, when no string is long, drop the tail of the longest list.
    Tools budget their own output; this is the backstop that makes the bound hold for every result."""
    for _ in range(50):
        excess = text_chars(result) - limit
        if excess <= 0:
            break
        leaf = _largest(result, str)
        if leaf and json_chars(leaf[0][leaf[1]]) > 2 * (excess + 200):
            holder, key = leaf
            holder[key] = _cut(holder[key], json_chars(holder[key]) - excess - 200)
            continue
        lists = _largest(result, list)
        if lists is None or not lists[0][lists[1]]:
            if leaf is None:
                break
            holder, key = leaf
            holder[key] = _cut(holder[key], max(0, json_chars(holder[key]) - excess - 200))
            continue
        items = lists[0][lists[1]]
        per_item = text_chars(items) / len(items)
        del items[max(0, len(items) - math.ceil(excess / per_item)):]
    return result


def _largest(node: Any, kind: type) -> tuple[Any, Any] | None:
    """(container, key) of the biggest `kind` value (by JSON size) anywhere in `node`."""
    best: tuple[int, Any, Any] | None = None
    stack = [node]
    while stack:
        item = stack.pop()
        pairs = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        for key, value in pairs:
            if isinstance(value, kind):
                size = json_chars(value) if isinstance(value, str) else len(json.dumps(value, ensure_ascii=False))
                if best is None or size > best[0]:
                    best = (size, item, key)
            if isinstance(value, (dict, list)):
                stack.append(value)
    return None if best is None else (best[1], best[2])


def _cut(text: str, room: int) -> str:
    """`text` cut to about `room` JSON characters, head and tail kept, with a marker."""
    ratio = max(1.0, json_chars(text) / max(1, len(text)))
    keep = max(0, int(room / ratio)) // 2
    omitted = len(text) - 2 * keep
    return f"{text[:keep]}\n[... truncated to fit the output budget: {omitted} characters omitted ...]\n{text[len(text) - keep:]}"
