"""M2 stand-in: a scripted OpenAI-compatible server that answers like MiniMax-M2 on vLLM.

THIS IS A TEST INSTRUMENT, NOT A MODEL. It replays scripted turns from a scenario file
in M2's real wire format so the client, the agent loop and the MCP tools can be tested
end to end without GPUs. See tools/README.md for the scenario format.

    python -m m2_mcp.standin --scenario FILE.json [--host 127.0.0.1] [--port 0] [--record FILE.jsonl]
    python tools/m2_standin.py ...   (the same, as a script)

Prints `M2 stand-in listening on http://HOST:PORT/v1` once ready and serves until killed.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_MODEL = "MiniMaxAI/MiniMax-M2"
CHUNK_CHARS = 16  # size of streamed text deltas
TOOL_ROLE_ERROR = "Message has tool role, but there was no previous assistant message with a tool call!"
DONE_TURN = {"text": "done."}


class StandIn:
    """The scenario and the server-side state: recorded requests, injected-error counters."""

    def __init__(self, scenario: dict, record_path: str | None = None):
        self.scenario = scenario
        self.model = scenario.get("model", DEFAULT_MODEL)
        self.record_path = record_path
        self.requests: list[dict] = []
        self.errors_served: dict[tuple[int, int], int] = {}
        self.lock = threading.Lock()

    def record(self, body: dict) -> None:
        with self.lock:
            self.requests.append(body)
            if self.record_path:
                with open(self.record_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(body, ensure_ascii=False) + "\n")

    def pick_turn(self, messages: list[dict]) -> tuple[int, int, dict]:
        """(script index, turn index, turn): chosen statelessly from the conversation."""
        first_user = next((_text(m.get("content")) for m in messages if m.get("role") == "user"), "")
        scripts = self.scenario.get("scripts") or []
        chosen = next((i for i, s in enumerate(scripts) if s.get("match") and s["match"] in first_user), None)
        if chosen is None:
            chosen = next((i for i, s in enumerate(scripts) if not s.get("match")), None)
        if chosen is None:
            return -1, 0, DONE_TURN
        script = scripts[chosen]
        turns = script.get("turns") or []
        index = sum(1 for m in messages if m.get("role") == "assistant")
        if index < len(turns):
            return chosen, index, turns[index]
        if script.get("repeat_last") and turns:
            return chosen, len(turns) - 1, turns[-1]
        return chosen, index, DONE_TURN

    def injected_error(self, script: int, turn_index: int, turn: dict) -> int | None:
        """The next HTTP status to inject for this (script, turn), if any are left."""
        errors = turn.get("errors") or []
        with self.lock:
            served = self.errors_served.get((script, turn_index), 0)
            if served < len(errors):
                self.errors_served[(script, turn_index)] = served + 1
                return int(errors[served])
        return None


def validate(messages: list[dict], standin: StandIn, model: str) -> tuple[int, str] | None:
    """The checks vLLM would make that are cheap to copy: (status, message) or None."""
    if model != standin.model:
        return 404, f"The model `{model}` does not exist."
    if not isinstance(messages, list) or not messages:
        return 400, "messages must be a non-empty list"
    previous_role, had_calls = None, False
    for m in messages:
        role = m.get("role")
        if role == "tool" and not (previous_role in ("assistant", "tool") and had_calls):
            return 400, TOOL_ROLE_ERROR
        if role != "tool":
            had_calls = role == "assistant" and bool(m.get("tool_calls"))
        previous_role = role
    limit = standin.scenario.get("max_context_tokens")
    prompt_tokens = estimate_prompt_tokens(messages)
    if limit and prompt_tokens > limit:
        return 400, (f"This model's maximum context length is {limit} tokens. However, your request has "
                     f"{prompt_tokens} input tokens. Please reduce the length of the input messages.")
    return None


def estimate_prompt_tokens(messages: list[dict]) -> int:
    return len(json.dumps(messages)) // 4


def render_turn(turn: dict, scenario: dict) -> dict:
    """What the server sends for one turn: content, reasoning, tool calls, finish reason."""
    tool_parser = turn.get("tool_parser", scenario.get("tool_parser", True))
    reasoning_mode = turn.get("reasoning", scenario.get("reasoning", "append"))
    calls = [{"name": c["name"], "arguments": c.get("arguments") or {}} for c in turn.get("tool_calls") or []]
    if "raw" in turn:
        content, reasoning, parsed = turn["raw"], None, []
    else:
        think, text = turn.get("think"), turn.get("text") or ""
        reasoning = None
        if think and reasoning_mode == "split":
            reasoning, prefix = think, ""
        elif think and reasoning_mode == "none":  # no reasoning parser: the prompt held `<think>\n`
            prefix = think + "\n</think>\n\n"
        elif think:
            prefix = "<think>\n" + think + "\n</think>\n\n"
        else:
            prefix = ""
        content = prefix + text
        parsed = calls if tool_parser else []
        if calls and not tool_parser:
            content += xml_tool_calls(calls)
    overrides = turn.get("raw_arguments") or {}
    tool_calls = []
    for i, call in enumerate(parsed):
        override = overrides.get(str(i))
        fragments = [override] if override is not None else argument_fragments(call["arguments"])
        tool_calls.append({"id": "call_" + secrets.token_hex(12), "name": call["name"], "fragments": fragments})
    finish = turn.get("finish_reason") or ("tool_calls" if tool_calls else "stop")
    field = turn.get("reasoning_field", scenario.get("reasoning_field", "reasoning_content"))
    return {"content": content or None, "reasoning": reasoning, "reasoning_field": field,
            "tool_calls": tool_calls, "finish_reason": finish}


def xml_tool_calls(calls: list[dict]) -> str:
    """M2's raw tool-call XML, as the chat template renders it."""
    out = ["<minimax:tool_call>\n"]
    for call in calls:
        out.append(f'<invoke name="{call["name"]}">\n')
        for key, value in call["arguments"].items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            out.append(f'<parameter name="{key}">{text}</parameter>\n')
        out.append("</invoke>\n")
    out.append("</minimax:tool_call>")
    return "".join(out)


def argument_fragments(arguments: dict) -> list[str]:
    """vLLM's streaming: `{"k": v`, then `, "k2": v2`, then `}`: one whole parameter each."""
    if not arguments:
        return ["{}"]
    frags = []
    for i, (key, value) in enumerate(arguments.items()):
        pair = json.dumps(key, ensure_ascii=False) + ": " + json.dumps(value, ensure_ascii=False)
        frags.append(("{" if i == 0 else ", ") + pair)
    frags.append("}")
    return frags


def usage_for(turn: dict, messages: list[dict], reply: dict) -> dict:
    if turn.get("usage"):
        u = dict(turn["usage"])
    else:
        out_chars = len(reply["content"] or "") + len(reply["reasoning"] or "")
        out_chars += sum(len(c["name"]) + len("".join(c["fragments"])) for c in reply["tool_calls"])
        u = {"prompt_tokens": estimate_prompt_tokens(messages), "completion_tokens": out_chars // 4}
    u["total_tokens"] = u.get("prompt_tokens", 0) + u.get("completion_tokens", 0)
    return u


class Handler(BaseHTTPRequestHandler):
    server_version = "m2-standin"
    standin: StandIn  # set on the class by main()

    def log_message(self, format, *args):  # quiet: tests read stdout
        pass

    def _json(self, status: int, payload) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        kind = {400: "BadRequestError", 404: "NotFoundError", 429: "RateLimitError"}.get(status, "InternalServerError")
        self._json(status, {"error": {"message": message, "type": kind, "param": None, "code": status}})

    def do_GET(self):
        if self.path == "/health":
            self._json(200, {"status": "ok"})
        elif self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [
                {"id": self.standin.model, "object": "model", "created": 0, "owned_by": "m2-standin"}]})
        elif self.path == "/_standin/requests":
            with self.standin.lock:
                self._json(200, list(self.standin.requests))
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self):
        if self.path != "/v1/chat/completions":
            return self._error(404, f"no route {self.path}")
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        except ValueError:
            return self._error(400, "request body is not JSON")
        self.standin.record(body)
        messages = body.get("messages") or []
        problem = validate(messages, self.standin, body.get("model"))
        if problem:
            return self._error(*problem)
        script, index, turn = self.standin.pick_turn(messages)
        status = self.standin.injected_error(script, index, turn)
        if status is not None:
            return self._error(status, f"injected error {status} (stand-in scenario)")
        if turn.get("delay"):
            time.sleep(float(turn["delay"]))
        reply = render_turn(turn, self.standin.scenario)
        usage = usage_for(turn, messages, reply)
        try:
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                self._stream(reply, usage if include_usage else None, float(turn.get("chunk_delay") or 0))
            else:
                self._json(200, self._completion(reply, usage))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (cancelled): nothing to do

    def _completion(self, reply: dict, usage: dict) -> dict:
        message = {"role": "assistant", "content": reply["content"]}
        if reply["reasoning"] is not None:
            message[reply["reasoning_field"]] = reply["reasoning"]
        if reply["tool_calls"]:
            message["tool_calls"] = [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": "".join(c["fragments"])}}
                for c in reply["tool_calls"]]
        return {"id": "chatcmpl-" + secrets.token_hex(8), "object": "chat.completion", "created": int(time.time()),
                "model": self.standin.model, "usage": usage,
                "choices": [{"index": 0, "message": message, "finish_reason": reply["finish_reason"], "logprobs": None}]}

    def _stream(self, reply: dict, usage: dict | None, chunk_delay: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        cid, created = "chatcmpl-" + secrets.token_hex(8), int(time.time())

        def send(delta: dict | None, finish: str | None = None, usage_: dict | None = None) -> None:
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": self.standin.model,
                     "choices": [] if delta is None else [
                         {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
            if usage_ is not None:
                chunk["usage"] = usage_
            self.wfile.write(b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n")
            self.wfile.flush()
            if chunk_delay:
                time.sleep(chunk_delay)

        send({"role": "assistant", "content": ""})
        for piece in _pieces(reply["reasoning"]):
            send({reply["reasoning_field"]: piece})
        for piece in _pieces(reply["content"]):
            send({"content": piece})
        for i, call in enumerate(reply["tool_calls"]):
            send({"tool_calls": [{"index": i, "id": call["id"], "type": "function", "function": {"name": call["name"]}}]})
            for frag in call["fragments"]:
                send({"tool_calls": [{"index": i, "function": {"arguments": frag}}]})
        send({"content": ""}, reply["finish_reason"])
        if usage is not None:
            send(None, usage_=usage)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def _pieces(text: str | None) -> list[str]:
    return [text[i:i + CHUNK_CHARS] for i in range(0, len(text or ""), CHUNK_CHARS)]


def _text(content) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Scripted M2 stand-in (a test instrument, not a model).")
    parser.add_argument("--scenario", required=True, help="scenario JSON file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    parser.add_argument("--record", help="append every request body to this JSONL file")
    args = parser.parse_args(argv)
    try:
        with open(args.scenario, encoding="utf-8") as f:
            scenario = json.load(f)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read scenario {args.scenario}: {exc}", file=sys.stderr)
        return 2
    Handler.standin = StandIn(scenario, args.record)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"M2 stand-in listening on http://{host}:{port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
