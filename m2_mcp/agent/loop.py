"""The agent loop: ask M2, run its tool calls, feed results back, until it stops or a budget ends.

History rules (contract section 4): every assistant message goes back exactly as M2
produced it (thinking included); tool results follow in call order; no user message
is added inside a run; the system prompt and tools never change, so vLLM's prefix
cache keeps hitting.
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import anyio

from m2_mcp import metrics
from m2_mcp.agent.model_client import ContextLengthError, ModelClient, ToolCall
from m2_mcp.budget import estimate_tokens
from m2_mcp.errors import EndpointError, ToolError
from m2_mcp.repo import Repo
from m2_mcp.tools import registry
from m2_mcp.tools.testing import TestRun, failure_signature
from m2_mcp.workspace import TestGuard

Emit = Callable[[dict[str, Any]], Awaitable[None] | None]
MAX_RESAMPLES = 2  # a cut, malformed or empty turn is sampled again at most this often in a row
MAX_OUTPUT_TOKENS = 65_536
COMPACTED = "[older tool output compacted to save context; call the tool again if you need it]"
# Compaction: once the prompt passes COMPACT_AT of the window, compact old tool outputs in one batch
# down to COMPACT_TO. Rewriting old messages breaks vLLM's prefix cache from the first rewritten one
# on, so it should happen rarely and in bulk, not a message at a time at every step.
COMPACT_AT, COMPACT_TO, KEEP_RECENT = 0.75, 0.40, 3


@dataclass
class Limits:
    max_steps: int = 50
    timeout_s: float = 1800.0
    max_cost_usd: float | None = None
    max_tokens: int | None = None  # prompt + completion over the run
    no_progress_runs: int = 3  # identical failing test runs in a row -> stop
    context_window: int = 196_608  # M2's window, in tokens
    price_in: float = 0.30  # USD per million prompt tokens
    price_out: float = 1.20  # USD per million completion tokens


@dataclass
class LoopState:
    messages: list[dict[str, Any]]
    steps: int = 0
    tool_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stop: str = ""  # done | max_steps | timeout | cost | tokens | no_progress | truncated | endpoint | cancelled
    summary: str = ""
    errors: list[str] = field(default_factory=list)

    def cost(self, limits: Limits) -> float:
        return round(self.prompt_tokens / 1e6 * limits.price_in + self.completion_tokens / 1e6 * limits.price_out, 6)


async def emit_event(emit: Emit | None, event: dict[str, Any]) -> None:
    if emit is not None:
        value = emit(event)
        if inspect.isawaitable(value):
            await value


def render(result: Any) -> str:
    """A tool's structured result as plain text for the model: scalars first, then text blocks."""
    if not isinstance(result, dict):
        return str(result)
    lines, blocks = [], []
    for key, value in result.items():
        if value in (None, "", [], {}):
            continue
        if isinstance(value, str) and "\n" in value:
            blocks.append(f"{key}:\n{value}")
        else:
            lines.append(f"{key}: {value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}")
    return "\n".join(lines + blocks)


def short_args(args: dict[str, Any] | None, limit: int = 60) -> str:
    text = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in (args or {}).items())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def compact_batch(messages: list[dict[str, Any]], tools: list[dict[str, Any]], target: int) -> int:
    """Compact tool outputs, oldest first, until the prompt estimate is at most `target` tokens
    (the last KEEP_RECENT outputs only when the older ones were not enough). Returns how many."""
    total = prompt_tokens_estimate(messages, tools)
    tool_indexes = [i for i, m in enumerate(messages) if m.get("role") == "tool"]
    order = tool_indexes[:-KEEP_RECENT] + tool_indexes[-KEEP_RECENT:] if len(tool_indexes) > KEEP_RECENT else tool_indexes
    count = 0
    for i in order:
        if total <= target:
            break
        content = messages[i].get("content") or ""
        if len(content) > 300 and not content.endswith(COMPACTED):
            short = content[:200].rstrip() + "\n" + COMPACTED
            messages[i] = {**messages[i], "content": short}
            total -= estimate_tokens(json.dumps(content, ensure_ascii=False)) - estimate_tokens(
                json.dumps(short, ensure_ascii=False))
            count += 1
    return count


def maybe_compact(messages: list[dict[str, Any]], tools: list[dict[str, Any]], window: int) -> int:
    """The loop's policy before each model call: past COMPACT_AT of the window, one batch down to COMPACT_TO."""
    if prompt_tokens_estimate(messages, tools) <= window * COMPACT_AT:
        return 0
    return compact_batch(messages, tools, int(window * COMPACT_TO))


def compact(messages: list[dict[str, Any]], keep_last: int) -> int:
    """Shorten all but the last `keep_last` tool outputs; thinking and the task stay. Returns how many."""
    tool_indexes = [i for i, m in enumerate(messages) if m.get("role") == "tool"]
    count = 0
    for i in tool_indexes[: max(0, len(tool_indexes) - keep_last)]:
        content = messages[i].get("content") or ""
        if len(content) > 300 and not content.endswith(COMPACTED):
            messages[i] = {**messages[i], "content": content[:200].rstrip() + "\n" + COMPACTED}
            count += 1
    return count


def prompt_tokens_estimate(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> int:
    return estimate_tokens(json.dumps(messages, ensure_ascii=False)) + estimate_tokens(json.dumps(tools))


class Loop:
    """One run of the loop. Cancellation and the run's deadline belong to the caller (the Job):
    cancelling its scope ends the loop at the next await (model call or tool process)."""

    def __init__(self, repo: Repo, client: ModelClient, limits: Limits, *, emit: Emit | None = None,
                 guard: TestGuard | None = None):
        self.repo, self.client, self.limits, self.emit, self.guard = repo, client, limits, emit, guard
        self.tools = [spec.openai_tool() for spec in registry.agent_tools()]
        self.tool_names = {t["function"]["name"] for t in self.tools}
        self.state = LoopState(messages=[])  # kept up to date, so a cancelled run still reports its steps

    async def run(self, messages: list[dict[str, Any]]) -> LoopState:
        self.state = state = LoopState(messages=messages)
        try:
            await self._steps(state, time.monotonic())
        except EndpointError as exc:
            state.stop, state.summary = "endpoint", str(exc)
            state.errors.append(str(exc))
        return state

    async def _steps(self, state: LoopState, started: float) -> None:
        limits, runs = self.limits, []
        resamples, max_tokens = 0, None
        while True:
            if state.steps >= limits.max_steps:
                state.stop, state.summary = "max_steps", f"stopped: --max-steps {limits.max_steps} reached"
                return
            if limits.max_cost_usd is not None and state.cost(limits) >= limits.max_cost_usd:
                state.stop, state.summary = "cost", f"stopped: cost budget ${limits.max_cost_usd:g} reached"
                return
            if limits.max_tokens is not None and state.prompt_tokens + state.completion_tokens >= limits.max_tokens:
                state.stop, state.summary = "tokens", f"stopped: token budget {limits.max_tokens} reached"
                return
            reply = await self._complete(state, max_tokens)
            state.steps += 1
            cost_before = state.cost(limits)
            state.prompt_tokens += reply.usage.prompt_tokens
            state.completion_tokens += reply.usage.completion_tokens
            metrics.COST.inc(max(0.0, state.cost(limits) - cost_before))
            if not reply.tool_calls and (reply.truncated or reply.error or reply.empty):
                # a cut or malformed tool call, or a turn with neither a call nor text (vLLM 0.33 drops
                # a call to a tool that was not offered): nothing to answer with a tool result, and no
                # user message may be added, so sample the turn again (with more room if it was cut)
                problem = ("output cut at max_tokens" if reply.truncated else f"malformed tool call: {reply.error}"
                           if reply.error else "no tool call and no answer")
                resamples += 1
                if reply.empty and resamples > MAX_RESAMPLES:
                    state.messages.append(reply.message)
                    state.stop, state.summary = "done", "(the model stopped without a message)"
                    return
                state.errors.append(f"step {state.steps}: {problem}")
                if resamples > MAX_RESAMPLES:
                    state.stop, state.summary = "truncated", f"stopped: {problem} ({resamples} times in a row)"
                    return
                if reply.truncated:
                    max_tokens = min(2 * (max_tokens or self.client.max_tokens), MAX_OUTPUT_TOKENS)
                await emit_event(self.emit, {"type": "resample", "step": state.steps, "problem": problem,
                                             "max_tokens": max_tokens or self.client.max_tokens})
                continue
            resamples = 0
            state.messages.append(reply.message)
            if not reply.tool_calls:
                state.stop, state.summary = "done", reply.content.strip() or "(the model stopped without a message)"
                return
            for call in reply.tool_calls:
                text, result = await self._execute(call)
                state.tool_calls += 1
                state.messages.append({"role": "tool", "tool_call_id": call.id, "content": text})
                await emit_event(self.emit, {
                    "type": "step", "step": state.steps, "max_steps": limits.max_steps, "tool": call.name,
                    "args": short_args(call.arguments), "ok": not text.startswith("Error:"),
                    "elapsed": round(time.monotonic() - started, 1),
                    "tokens": state.prompt_tokens + state.completion_tokens,
                })
                if call.name == "run_tests" and isinstance(result, dict):
                    await emit_event(self.emit, {"type": "tests", "step": state.steps, **{
                        k: result.get(k) for k in ("passed", "failed", "errors", "skipped", "exit_code")}})
                    runs.append(None if result.get("exit_code") == 0 else failure_signature(TestRun.model_validate(result)))
            last = runs[-limits.no_progress_runs:]
            if len(last) == limits.no_progress_runs and last[0] is not None and len(set(last)) == 1:
                state.stop = "no_progress"
                state.summary = f"stopped: the same tests failed the same way {limits.no_progress_runs} test runs in a row"
                return

    async def _complete(self, state: LoopState, max_tokens: int | None = None):
        """One model call. Near the context window, older tool outputs are compacted first (in one
        batch, well below the threshold), and the reply is sized to fit what is left."""
        window = self.limits.context_window
        maybe_compact(state.messages, self.tools, window)
        await emit_event(self.emit, {"type": "model", "step": state.steps + 1, "max_steps": self.limits.max_steps})
        room = window - prompt_tokens_estimate(state.messages, self.tools)
        wanted = max_tokens or self.client.max_tokens
        size = max(256, min(wanted, room)) if room < wanted else max_tokens
        try:
            return await self.client.complete(state.messages, self.tools, max_tokens=size)
        except ContextLengthError:
            if not compact(state.messages, keep_last=0):
                raise
            return await self.client.complete(state.messages, self.tools, max_tokens=size)

    async def _execute(self, call: ToolCall) -> tuple[str, Any]:
        """Run one tool call; every failure becomes an `Error: ...` tool result for the model."""
        if call.name not in self.tool_names:
            return f"Error: unknown tool {call.name!r}; available tools: {', '.join(sorted(self.tool_names))}", None
        if call.error or call.arguments is None:
            return f"Error: malformed arguments for {call.name}: {call.error or 'not a JSON object'}", None
        result, text = None, ""
        try:
            result = await registry.call(self.repo, call.name, call.arguments)
            text = render(result)
        except ToolError as exc:
            text = f"Error: {exc}"
        except Exception as exc:  # a bug in a tool must not end the run
            text = f"Error: {call.name} failed: {type(exc).__name__}: {exc}"
        if self.guard is not None:  # shell can write anywhere: check after every call
            reverted = await anyio.to_thread.run_sync(self.guard.revert_changes)
            if reverted:
                text = (f"Error: refused: test files may not be changed; restored {', '.join(reverted)}.\n" + text)
        return text, result
