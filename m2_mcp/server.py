"""The MCP server: every registry tool, exposed through the mcp SDK's `MCPServer`.

Each tool gets a small generated wrapper whose signature is the tool's own typed
parameters and whose return annotation is the tool's pydantic result model, so the SDK
publishes the same input schema and an `outputSchema` that `structuredContent` matches.
The wrapper calls `registry.call` (the one implementation of every tool), counts the
call in the Prometheus metrics and turns every failure into a one-line tool error.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError as SDKToolError
from mcp_types import ToolAnnotations
from pydantic import ValidationError

from m2_mcp import __version__, metrics
from m2_mcp.errors import ToolError
from m2_mcp.repo import Repo
from m2_mcp.tools import registry
from m2_mcp.tools.registry import ToolSpec

log = logging.getLogger("m2_mcp.server")

SERVER_NAME = "m2-mcp"

INSTRUCTIONS = (
    "m2-mcp: tools over one git repository (read, search, edit, run tests, shell, git state). "
    "All paths are relative to the repository root; paths outside the root or inside any .git/ are refused, "
    "and files in submodules or nested repositories are read-only. "
    "Errors come back as tool errors with a one-line reason."
)

# Tools that can do anything a shell can: not just confined file edits.
_OPEN_ENDED = {"shell", "run_tests"}

# A hook registers more tools (or routes) on the built server, e.g. the delegation tools.
ServerHook = Callable[[MCPServer], None]
Lifespan = Callable[[MCPServer], AbstractAsyncContextManager[Any]]


def annotations_for(spec: ToolSpec) -> ToolAnnotations:
    """MCP hints: read-only tools are safe to repeat; edits stay inside the repo (not destructive)."""
    if spec.read_only:
        return ToolAnnotations(readOnlyHint=True, idempotentHint=True, openWorldHint=False)
    open_ended = spec.name in _OPEN_ENDED
    return ToolAnnotations(
        readOnlyHint=False, destructiveHint=open_ended, idempotentHint=False, openWorldHint=open_ended
    )


def one_line(text: str, limit: int = 500) -> str:
    """Collapse a message to one line (the contract: tool errors are one-line reasons)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


async def call_tool(repo: Repo, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Run one tool through the registry, count it, and map failures to the SDK's ToolError."""
    started = time.monotonic()
    outcome = "error"
    try:
        result = await registry.call(repo, name, arguments)
        outcome = "ok"
        return result
    except ToolError as exc:
        raise SDKToolError(one_line(str(exc)) or "tool failed") from None
    except Exception as exc:  # a bug in a tool must not take the server down
        outcome = "crash"
        log.error("tool %s crashed", name, exc_info=True)
        raise SDKToolError(one_line(f"internal error: {type(exc).__name__}: {exc}")) from None
    finally:
        metrics.TOOL_CALLS.labels(tool=name, outcome=outcome).inc()
        metrics.TOOL_LATENCY.labels(tool=name).observe(time.monotonic() - started)


def make_wrapper(repo: Repo, spec: ToolSpec) -> Callable[..., Any]:
    """An async function the SDK can introspect: the tool's params in, its result model out."""

    async def wrapper(**kwargs: Any) -> Any:
        return await call_tool(repo, spec.name, kwargs)

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in spec.params]
    wrapper.__name__ = wrapper.__qualname__ = spec.name
    wrapper.__doc__ = spec.description
    wrapper.__signature__ = inspect.Signature(params, return_annotation=spec.result_model)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params} | {"return": spec.result_model}
    return wrapper


class M2Server(MCPServer):
    """MCPServer whose every tool error is one bounded line, and which refuses unknown arguments
    (the SDK would drop them silently; the agent's front door refuses them too)."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            self._refuse_unknown(name, arguments)
            return await super().call_tool(name, arguments, context)
        except SDKToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                message = registry.validation_message(exc.__cause__)
                raise SDKToolError(one_line(f"Error executing tool {name}: {message}")) from exc.__cause__
            raise SDKToolError(one_line(str(exc)) or "tool failed") from None

    def _refuse_unknown(self, name: str, arguments: dict[str, Any]) -> None:
        tool = self._tool_manager.get_tool(name)
        if tool is None or not isinstance(arguments, dict):
            return
        unknown = sorted(set(arguments) - set(tool.parameters.get("properties", {})))
        if unknown:
            problems = "; ".join(f"{key}: Extra inputs are not permitted" for key in unknown)
            raise SDKToolError(f"Error executing tool {name}: invalid arguments: {problems}")


def build_server(
    repo: Repo,
    extra_tools: Iterable[ServerHook] = (),
    lifespan: Lifespan | None = None,
    instructions: str = INSTRUCTIONS,
) -> MCPServer:
    """The MCP server for `repo`: every registry tool (agent and non-agent), plus hooks.

    `extra_tools`: callables run on the built server to register more tools; this is
    where the delegation tools (`m2_task`, `m2_task_status`, `m2_task_cancel`) plug in.
    `lifespan`: an async context manager factory for startup/shutdown work (entered
    once per process on stdio and streamable HTTP, once per connection on SSE).
    """
    server = M2Server(
        SERVER_NAME,
        version=__version__,
        instructions=instructions,
        lifespan=lifespan,
        log_level="WARNING",  # only used if the caller set up no logging; `serve` logs to stderr itself
    )
    for spec in registry.load_all().values():
        server.add_tool(
            make_wrapper(repo, spec),
            name=spec.name,
            description=spec.description,
            annotations=annotations_for(spec),
            structured_output=True,
        )
    # --- hook: the delegation tools (m2_task, m2_task_status, m2_task_cancel) register here ---
    for register in extra_tools:
        register(server)
    return server

