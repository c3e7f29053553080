"""Async streaming client for MiniMax-M2 on an OpenAI-compatible endpoint (vLLM, SGLang).

`ModelClient.complete(messages, tools)` streams one chat completion and returns a `Reply`:
the tool calls (parsed by the server, or read from raw `<minimax:tool_call>` XML in the
content when the server runs without M2's tool parser), the thinking, the visible text,
and `Reply.message`, the assistant message to append to the history unchanged so M2
sees its own `<think>` blocks next turn (wire-format.md sections 2-3).

Failures: connect errors, timeouts, 429 and 5xx are retried with exponential backoff and
jitter (`retries` retries after the first attempt: 1 s, 2 s, 4 s by default), then the
next endpoint is tried; when all fail, `EndpointError` (exit 3) names the base URLs, and a
circuit breaker makes the following calls fail fast for `breaker_cooldown` seconds.
A 400 is the request's fault and is raised at once: `ContextLengthError` when the prompt
is too long (the loop can compact and retry), `EndpointError` otherwise.

How the loop reads a Reply: `tool_calls` to run (a call with `error` set gets that error
as its tool result); no calls and `truncated` or `error` set -> the output was cut or
malformed, nudge the model; no calls otherwise -> the final answer.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
import re
import secrets
import time
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
_MAX_ERROR_CHARS = 300
SESSION_HEADER = "X-Session-Id"  # vllm-router's consistent_hash reads it (and, without it, the body's `user`)


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
    truncated: bool = False  # finish_reason "length" and no usable tool call
    error: str | None = None  # why the output holds no usable tool call (cut or malformed XML)
    endpoint: str = ""       # base URL that answered


class _EndpointFailed(Exception):
    """This endpoint is out for this call (retries spent or a non-retryable status)."""


@dataclass
class _Stream:
    """What the chunks of one streamed completion add up to."""
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, dict] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    chars: int = 0

    def add(self, chunk) -> None:
        if chunk.usage:
            self.usage = Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
        for choice in chunk.choices or []:
            delta = choice.delta
            if delta is not None:
                if delta.content:
                    self.content.append(delta.content)
                    self.chars += len(delta.content)
                extra = delta.model_extra or {}
                reasoning = extra.get("reasoning_content") or extra.get("reasoning")
                if isinstance(reasoning, str) and reasoning:
                    self.reasoning.append(reasoning)
                    self.chars += len(reasoning)
                for tc in delta.tool_calls or []:
                    slot = self.calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                    if tc.id:
                        slot["id"] = tc.id
                    if tc.function is not None:
                        slot["name"] += tc.function.name or ""
                        slot["arguments"] += tc.function.arguments or ""
                        self.chars += len(tc.function.arguments or "")
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason


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
                reply = build_reply(stream, tools)
                reply.endpoint = endpoint.display
                return reply
            except openai.APIStatusError as exc:
                status, text = exc.status_code, self._error_text(exc, endpoint)
                if status == 400 and _CONTEXT_RE.search(text):
                    raise ContextLengthError(f"model endpoint {endpoint.display}: prompt too long: {text}") from None
                if status in (400, 422):
                    raise EndpointError(
                        f"model endpoint {endpoint.display} rejected the request (HTTP {status}): {text}") from None
                error = f"HTTP {status}: {text}"
                if not (status in (408, 429) or status >= 500):  # 401/403/404: this endpoint is wrong
                    raise _EndpointFailed(error) from None
            except (openai.APIError, httpx2.TransportError) as exc:  # connect errors, timeouts, broken streams
                error = self._error_text(exc, endpoint)
            if attempt == self.retries:
                raise _EndpointFailed(f"{error}; gave up after {attempt + 1} attempts ({attempt} retries)")
            delay = self.backoff_base * 2 ** attempt * random.uniform(0.8, 1.2)
            metrics.MODEL_RETRIES.inc()
            await self._emit({"type": "retry", "attempt": attempt + 2, "endpoint": endpoint.display,
                              "delay": round(delay, 3), "error": error})
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _stream(self, index: int, messages: list[dict], tools: list[dict], max_tokens: int) -> _Stream:
        kwargs: dict[str, Any] = dict(
            model=self.endpoints[index].model, messages=messages, stream=True,
            stream_options={"include_usage": True}, temperature=self.temperature, top_p=self.top_p,
            max_tokens=max_tokens, user=self.session_id, extra_body={"top_k": self.top_k})
        if tools:
            kwargs.update(tools=tools, tool_choice="auto")
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


def build_reply(stream: _Stream, tools: list[dict] | None) -> Reply:
    """Turn an assembled completion into a Reply (parsed calls, raw M2 XML, or text)."""
    content = "".join(stream.content) or None
    reasoning = "".join(stream.reasoning) or None
    thinking, visible = m2_format.split_thinking(content, reasoning)
    finish = stream.finish_reason
    calls: list[ToolCall] = []
    source, error, history = "none", None, m2_format.history_content(content, reasoning)
    if stream.calls:
        source = "parsed"
        for index in sorted(stream.calls):
            slot = stream.calls[index]
            arguments, arg_error = _json_arguments(slot["arguments"])
            if not slot["name"]:
                arguments, arg_error = None, "tool call without a name"
            calls.append(ToolCall(id=slot["id"] or _new_call_id(), name=slot["name"], arguments=arguments,
                                  raw_arguments=slot["arguments"], error=arg_error))
        if finish == "length" and any(c.error for c in calls):
            calls, error = [], "output was cut off at max_tokens inside a tool call"
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
    truncated = finish == "length" and not calls
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
                 usage=stream.usage, source=source, truncated=truncated, error=error)


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
