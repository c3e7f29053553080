"""Async streaming client for MiniMax-M2 on an OpenAI-compatible endpoint (vLLM, SGLang, MiniMax's API).

`ModelClient.complete(messages, tools)` streams one chat completion and returns a `Reply`:
the tool calls (parsed by the server, or read from raw `<minimax:tool_call>` XML in the
content when the server runs without M2's tool parser), the thinking, the visible text,
and `Reply.message`, the assistant message to append to the history unchanged so M2
sees its own `<think>` blocks next turn. Thinking is read from `reasoning`,
`reasoning_content`, `reasoning_details` or `<think>` in the content. On MiniMax's own API
(`is_minimax_api`) the request carries `max_completion_tokens` and no `top_k`.

Failures: connect errors, timeouts, 429 and 5xx are retried with exponential backoff and
jitter (`retries` retries after the first attempt: 1 s, 2 s, 4 s by default), then the
next endpoint is tried; when all fail, `EndpointError` (exit 3) names the base URLs, and a
circuit breaker makes the following calls fail fast for `breaker_cooldown` seconds.
A 400 is the request's fault and is raised at once: `ContextLengthError` when the prompt
is too long (the loop can compact and retry), `EndpointError` otherwise, except the 400 a
server without a tool parser gives `tool_choice: auto`: then the client switches to
`tool_choice: "none"` for good (an event says so) and reads M2's XML itself.

How the loop reads a Reply: `tool_calls` to run (a call with `error` set gets that error
as its tool result); no calls and `truncated`, `error` or `empty` set -> the output was
cut, malformed, or held neither a call nor text: sample the turn again; no calls
otherwise -> the final answer.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
import re
import secrets
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx2
import openai

from m2_mcp import metrics
from m2_mcp.agent import m2_format
from m2_mcp.endpoint import Endpoint
from m2_mcp.errors import EndpointError

_CONTEXT_RE = re.compile(r"context length|context_length|context window|too many tokens|prompt is too long|"
                         r"input is too long|exceeds the available context", re.IGNORECASE)
_NO_TOOL_PARSER_RE = re.compile(r"tool.choice.*(requires|not supported)|enable-auto-tool-choice|tool-call-parser",
                                re.IGNORECASE)
_MAX_ERROR_CHARS = 300
SESSION_HEADER = "X-Session-Id"  # vllm-router's consistent_hash reads it (and, without it, the body's `user`)
# MiniMax's hosted API (OpenAI-compatible): no `max_tokens` (use max_completion_tokens), no `top_k`.
MINIMAX_HOSTS = ("api.minimax.io", "api.minimaxi.com")


def is_minimax_api(base_url: str) -> bool:
    host = (urllib.parse.urlsplit(base_url).hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in MINIMAX_HOSTS)


def length_fields(base_url: str, max_tokens: int, top_k: int) -> dict[str, Any]:
    """The request's output-length and sampling fields as this endpoint takes them."""
    if is_minimax_api(base_url):  # documented there: max_completion_tokens; top_k is not a parameter
        return {"max_completion_tokens": max_tokens}
    return {"max_tokens": max_tokens, "extra_body": {"top_k": top_k}}


class ContextLengthError(EndpointError):
    """The endpoint refused the request because the prompt does not fit the context."""


@dataclass
class ToolCall:
    id: str                 # "call_<24 hex>" when we generate it
    name: str
    arguments: dict | None  # None when the arguments were not a valid JSON object
    raw_arguments: str      # as received (JSON text, or the XML invoke text)
    error: str | None = None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Reply:
    message: dict           # the assistant message to append to history verbatim
    content: str            # visible text, thinking removed
    thinking: str
    tool_calls: list[ToolCall]
    finish_reason: str | None
    usage: Usage
    source: str             # "parsed", "xml" or "none"
    truncated: bool = False  # cut at max_tokens (see build_reply): no usable tool call
    error: str | None = None  # why the output holds no usable tool call (cut or malformed XML)
    endpoint: str = ""       # base URL that answered
    empty: bool = False      # no tool call and no visible text: not a final answer (sample again)
    raw_content: str = ""    # `content` exactly as streamed (doctor reads how thinking arrived)
    reasoning_field: bool = False  # thinking came in a reasoning field, not in the content


class _EndpointFailed(Exception):
    """This endpoint is out for this call (retries spent or a non-retryable status)."""


@dataclass
class _Stream:
    """What the chunks of one streamed completion add up to."""
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)   # in arrival order
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    usage_seen: bool = False
    chars: int = 0
    _by_index: dict[int, dict] = field(default_factory=dict)

    def add(self, chunk) -> None:
        if chunk.usage:
            self.usage = Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
            self.usage_seen = True
        for choice in chunk.choices or []:
            delta = choice.delta
            if delta is not None:
                if delta.content:
                    self.content.append(delta.content)
                    self.chars += len(delta.content)
                reasoning = reasoning_text(delta.model_extra or {})
                if reasoning:
                    self.reasoning.append(reasoning)
                    self.chars += len(reasoning)
                for tc in delta.tool_calls or []:
                    self._add_call(tc)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason

    def _add_call(self, tc) -> None:
        """Append a tool-call delta. A new `id` on an index that already has one starts a new call
        (vLLM 0.11 restarts the index at 0 for a second `<minimax:tool_call>` block)."""
        slot = self._by_index.get(tc.index)
        if slot is None or (tc.id and slot["id"] and tc.id != slot["id"]):
            slot = {"id": "", "name": "", "arguments": "", "restarted": slot is not None}
            self._by_index[tc.index] = slot
            self.calls.append(slot)
        if tc.id:
            slot["id"] = tc.id
        if tc.function is not None:
            slot["name"] += tc.function.name or ""
            slot["arguments"] += tc.function.arguments or ""
            self.chars += len(tc.function.arguments or "")


def reasoning_text(fields: dict) -> str:
    """Thinking carried in a delta or message: `reasoning_content` (vLLM <= 0.11, SGLang), `reasoning`
    (newer vLLM) or `reasoning_details` (MiniMax's API with reasoning_split: a list of {"text": ...})."""
    for key in ("reasoning_content", "reasoning"):
        if isinstance(fields.get(key), str) and fields[key]:
            return fields[key]
    details = fields.get("reasoning_details")
    if isinstance(details, list):
        return "".join(d.get("text") or "" for d in details if isinstance(d, dict) and isinstance(d.get("text"), str))
    return ""


class ModelClient:
    def __init__(self, endpoints: list[Endpoint] | Endpoint, *, temperature: float = 1.0, top_p: float = 0.95,
                 top_k: int = 40, max_tokens: int = 16384, retries: int = 3, request_timeout: float = 600.0,
                 backoff_base: float = 1.0, breaker_threshold: int = 1, breaker_cooldown: float = 30.0,
                 on_event: Callable[[dict], Any] | None = None, event_interval: float = 0.5,
                 session_id: str | None = None):
        self.endpoints = [endpoints] if isinstance(endpoints, Endpoint) else list(endpoints)
        if not self.endpoints:
            raise ValueError("ModelClient needs at least one endpoint")
        self.temperature, self.top_p, self.top_k, self.max_tokens = temperature, top_p, top_k, max_tokens
        self.retries, self.backoff_base = max(0, retries), backoff_base
        self.breaker_threshold, self.breaker_cooldown = max(1, breaker_threshold), breaker_cooldown
        self.on_event, self.event_interval = on_event, event_interval
        # One id per client (one client per agent run), on every request: a router in front of several
        # replicas (vllm-router) keeps a run on one replica, whose prefix cache holds the run's history.
        self.session_id = session_id or uuid.uuid4().hex
        timeout = httpx2.Timeout(request_timeout, connect=min(10.0, request_timeout))
        self._clients = [openai.AsyncOpenAI(base_url=e.base_url, api_key=e.api_key or "EMPTY", max_retries=0,
                                            timeout=timeout, default_headers={SESSION_HEADER: self.session_id})
                         for e in self.endpoints]
        self._current = 0           # index of the endpoint that answered last
        self._failures = 0          # consecutive complete() calls that failed on every endpoint
        self._open_until = 0.0      # monotonic time the breaker closes again
        self._last_error = ""
        self._tool_choice = "auto"  # "none" once a server without a tool parser refused "auto"

    def start_with(self, endpoint: Endpoint) -> None:
        """Begin with `endpoint` (the one the quick check before a run found answering); the others
        remain failovers, in their order."""
        if endpoint in self.endpoints:
            self._current = self.endpoints.index(endpoint)

    async def complete(self, messages: list[dict], tools: list[dict], *, max_tokens: int | None = None) -> Reply:
        """One model turn. Raises EndpointError (one line, base URLs only) when no endpoint answers."""
        urls = ", ".join(e.display for e in self.endpoints)
        wait = self._open_until - time.monotonic()
        if wait > 0:
            metrics.MODEL_REQUESTS.labels("breaker_open").inc()
            label = "model endpoint" if len(self.endpoints) == 1 else "model endpoints"
            raise EndpointError(f"{label} {urls} unavailable: circuit breaker open for {wait:.0f} s more "
                                f"after: {self._last_error}")
        started = time.monotonic()
        failures: list[str] = []
        n = len(self.endpoints)
        for k in range(n):
            index = (self._current + k) % n
            try:
                reply = await self._complete_on(index, messages, tools, max_tokens or self.max_tokens)
            except _EndpointFailed as exc:
                failures.append(f"{self.endpoints[index].display} ({exc})")
                if k + 1 < n:
                    await self._emit({"type": "failover", "from": self.endpoints[index].display,
                                      "to": self.endpoints[(index + 1) % n].display, "error": str(exc)})
                continue
            except EndpointError:
                metrics.MODEL_REQUESTS.labels("rejected").inc()
                raise
            self._current, self._failures = index, 0
            metrics.BREAKER_OPEN.set(0)
            metrics.MODEL_REQUESTS.labels("ok").inc()
            metrics.MODEL_LATENCY.observe(time.monotonic() - started)
            metrics.TOKENS.labels("prompt").inc(reply.usage.prompt_tokens)
            metrics.TOKENS.labels("completion").inc(reply.usage.completion_tokens)
            return reply
        metrics.MODEL_REQUESTS.labels("error").inc()
        self._last_error = "; ".join(failures)
        self._failures += 1
        if self._failures >= self.breaker_threshold:
            self._open_until = time.monotonic() + self.breaker_cooldown
            metrics.BREAKER_OPEN.set(1)
            await self._emit({"type": "breaker_open", "seconds": self.breaker_cooldown})
        label = "model endpoint" if n == 1 else "model endpoints"
        raise EndpointError(f"{label} failed: {self._last_error}")

    async def aclose(self) -> None:
        for client in self._clients:
            await client.close()

    async def _complete_on(self, index: int, messages: list[dict], tools: list[dict], max_tokens: int) -> Reply:
        endpoint = self.endpoints[index]
        for attempt in range(self.retries + 1):
            try:
                stream = await self._stream(index, messages, tools, max_tokens)
                reply = build_reply(stream, tools, max_tokens)
                reply.endpoint = endpoint.display
                return reply
            except openai.APIStatusError as exc:
                status, text = exc.status_code, self._error_text(exc, endpoint)
                if status == 400 and _CONTEXT_RE.search(text):
                    raise ContextLengthError(f"model endpoint {endpoint.display}: prompt too long: {text}") from None
                if status == 400 and tools and self._tool_choice == "auto" and _NO_TOOL_PARSER_RE.search(text):
                    # no server-side tool parser: send tool_choice "none" (the template still shows the
                    # tools) and read M2's <minimax:tool_call> XML from the content, from now on
                    self._tool_choice = "none"
                    await self._emit({"type": "tool_choice_fallback", "endpoint": endpoint.display, "error": text})
                    return await self._complete_on(index, messages, tools, max_tokens)
                if status in (400, 422):
                    raise EndpointError(
                        f"model endpoint {endpoint.display} rejected the request (HTTP {status}): {text}") from None
                error = f"HTTP {status}: {text}"
                if not (status in (408, 429) or status >= 500):  # 401/403/404: this endpoint is wrong
                    raise _EndpointFailed(error) from None
            except (openai.APIError, httpx2.TransportError) as exc:  # connect errors, timeouts, broken streams
                error = self._error_text(exc, endpoint)
            if attempt == self.retries:
                raise _EndpointFailed(f"{error}; gave up after {attempt} {'retry' if attempt == 1 else 'retries'}")
            delay = self.backoff_base * 2 ** attempt * random.uniform(0.8, 1.2)
            metrics.MODEL_RETRIES.inc()
            # "retry N of M", the same count the final "gave up after M retries" uses
            await self._emit({"type": "retry", "attempt": attempt + 1, "retries": self.retries,
                              "endpoint": endpoint.display, "delay": round(delay, 3), "error": error})
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _stream(self, index: int, messages: list[dict], tools: list[dict], max_tokens: int) -> _Stream:
        kwargs: dict[str, Any] = dict(
            model=self.endpoints[index].model, messages=messages, stream=True,
            stream_options={"include_usage": True}, temperature=self.temperature, top_p=self.top_p,
            user=self.session_id, **length_fields(self.endpoints[index].base_url, max_tokens, self.top_k))
        if tools:
            kwargs.update(tools=tools, tool_choice=self._tool_choice)
        stream = await self._clients[index].chat.completions.create(**kwargs)
        acc, last_event = _Stream(), time.monotonic()
        try:
            async for chunk in stream:
                acc.add(chunk)
                if self.on_event and time.monotonic() - last_event >= self.event_interval:
                    last_event = time.monotonic()
                    await self._emit({"type": "delta", "chars": acc.chars})
        finally:
            await stream.close()
        return acc

    async def _emit(self, event: dict) -> None:
        if self.on_event is not None:
            result = self.on_event(event)
            if inspect.isawaitable(result):
                await result

    @staticmethod
    def _error_text(exc: BaseException, endpoint: Endpoint) -> str:
        """One short line describing `exc`, with the API key scrubbed."""
        if isinstance(exc, openai.APIStatusError):
            body = exc.body
            text = body.get("message") if isinstance(body, dict) else None
            text = text or exc.message
        else:
            text = str(exc).rstrip(".") or type(exc).__name__
            cause = exc.__cause__
            if cause is not None and str(cause) and str(cause) not in text:
                text = f"{text} ({type(cause).__name__}: {cause})"
        text = " ".join(str(text).split())
        key = endpoint.api_key
        if key and len(key) >= 4 and key != "EMPTY":
            text = text.replace(key, "***")
        return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + "..."


def build_reply(stream: _Stream, tools: list[dict] | None, max_tokens: int | None = None) -> Reply:
    """Turn an assembled completion into a Reply (parsed calls, raw M2 XML, or text).

    The output counts as cut at max_tokens when the server says so (`finish_reason: length`,
    vLLM 0.33), when the reported completion tokens reach `max_tokens` (vLLM 0.11 reports
    `tool_calls` for a cut call), or, without usage, when the last call's arguments are
    unparsable or miss required parameters. A cut turn's calls are never run."""
    content = "".join(stream.content) or None
    reasoning = "".join(stream.reasoning) or None
    thinking, visible = m2_format.split_thinking(content, reasoning)
    finish = stream.finish_reason
    cut = finish == "length" or bool(stream.usage_seen and max_tokens and stream.usage.completion_tokens >= max_tokens)
    calls: list[ToolCall] = []
    source, error, history = "none", None, m2_format.history_content(content, reasoning)
    if stream.calls:
        source = "parsed"
        for slot in stream.calls:
            arguments, arg_error = _json_arguments(slot["arguments"])
            if not slot["name"]:
                arguments, arg_error = None, "tool call without a name"
            calls.append(ToolCall(id=slot["id"] or _new_call_id(), name=slot["name"], arguments=arguments,
                                  raw_arguments=slot["arguments"], error=arg_error))
        last_cut = _looks_cut(calls[-1], tools) and not stream.calls[-1]["restarted"]
        if (cut and (last_cut or any(c.error for c in calls))) or (last_cut and not stream.usage_seen):
            cut, calls, error = True, [], "output was cut off at max_tokens inside a tool call"
    elif m2_format.TOOL_CALL_START in visible:
        source = "xml"
        parsed = m2_format.parse_tool_calls(visible, tools)
        raw = content or ""
        start = raw.find(m2_format.TOOL_CALL_START, max(raw.rfind(m2_format.THINK_END), 0))
        history = m2_format.history_content(raw[:start], reasoning)
        visible = parsed.content or ""
        error = parsed.error
        calls = [ToolCall(id=_new_call_id(), name=c.name, arguments=c.arguments, raw_arguments=c.raw)
                 for c in parsed.calls]
        if cut and calls and _looks_cut(calls[-1], tools):
            calls, error = [], "output was cut off at max_tokens inside a tool call"
    truncated = cut and not calls
    if truncated and error is None:
        error = "output was cut off at max_tokens before a tool call or final answer was complete"
    message: dict[str, Any] = {"role": "assistant", "content": history}
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments if c.arguments is not None else {},
                                                                  ensure_ascii=False)}}
            for c in calls]
    return Reply(message=message, content=visible, thinking=thinking, tool_calls=calls, finish_reason=finish,
                 usage=stream.usage, source=source, truncated=truncated, error=error,
                 empty=not calls and not visible.strip() and error is None, raw_content=content or "",
                 reasoning_field=bool(reasoning))


def _looks_cut(call: ToolCall, tools: list[dict] | None) -> bool:
    """Arguments a cut stream leaves: unparsable JSON, or `{}`-like with required parameters missing."""
    if call.error:
        return True
    required = m2_format.required_parameters(tools).get(call.name, [])
    return any(name not in (call.arguments or {}) for name in required)


def _json_arguments(text: str) -> tuple[dict | None, str | None]:
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        return None, f"arguments are not valid JSON: {exc}"
    if not isinstance(value, dict):
        return None, f"arguments must be a JSON object, got {type(value).__name__}"
    return value, None


def _new_call_id() -> str:
    return "call_" + secrets.token_hex(12)
