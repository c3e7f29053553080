"""One registry of tools, shared by both front doors: MCP clients and the M2 agent loop.

A tool is a plain function `fn(repo: Repo, **typed_args) -> pydantic model` (sync or
async), registered with `@tool(...)`. The registry derives the argument model and JSON
schema from the signature, validates calls, and turns failures into `ToolError`s.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import anyio
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from m2_mcp.errors import ToolError
from m2_mcp.repo import Repo


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
    from m2_mcp.tools import files, git, patch, repomap, search, shell, testing  # noqa: F401

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
    if inspect.iscoroutinefunction(spec.fn):
        result = await spec.fn(repo, **kwargs)
    else:
        result = await anyio.to_thread.run_sync(lambda: spec.fn(repo, **kwargs))
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    return result
