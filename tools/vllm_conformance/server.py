"""OpenAI-compatible server answering with vLLM's real serving code and a scripted engine (vLLM venv).

    VLLM_PYTHON tools/vllm_conformance/server.py [--scenario fix --mode split] [--port 0] [--record DIR]

Prints `vLLM <version> conformance server listening on http://127.0.0.1:PORT/v1` when ready.
Base URLs: `/v1` serves --scenario in --mode; `/<run>/<scenario>/<mode>/v1` serves any scenario
in any mode (modes in scenario.py), `<run>` being any name that keeps runs apart.
Each request is answered with the scenario turn chosen by the number of assistant messages in it;
a repeated request for the same turn (a resample) gets the turn's next attempt (or the one named
by an `X-Conformance-Attempt` header). Every exchange
(request, the prompt vLLM rendered for it, status, SSE frames) is kept: `GET <base>/_exchanges`
returns a run's, and with --record they are also appended to DIR/exchanges.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import scenario as sc
import vllm_driver

READY = "conformance server listening on "


class Handler(BaseHTTPRequestHandler):
    default: tuple[str, str] | None = None  # (scenario, mode) served under /v1
    record: Path | None = None
    attempts: dict[tuple[str, int], int] = {}
    exchanges: dict[str, list[dict]] = {}
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> tuple[str, str, str, str] | None:
        """(run key, scenario, mode, rest of the path) or None."""
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[0] == "v1" and self.default:
            return "default", *self.default, "/".join(parts[1:])
        if len(parts) >= 4 and parts[3] == "v1" and parts[1] in sc.scenarios() and parts[2] in sc.MODES:
            return "/".join(parts[:3]), parts[1], parts[2], "/".join(parts[4:])
        return None

    def do_GET(self):
        route = self._route()
        if self.path in ("/health", "/version"):
            self._send(200, {"version": vllm_driver.VERSION})
        elif route and route[3] == "models":
            self._send(200, {"object": "list", "data": [{"id": vllm_driver.MODEL, "object": "model"}]})
        elif route and route[3] == "_exchanges":
            with self.lock:
                self._send(200, list(self.exchanges.get(route[0], [])))
        else:
            self._send(404, {"error": {"message": f"no route {self.path}", "code": 404}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        route = self._route()
        if not route or route[3] != "chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}", "code": 404}})
        run, name, mode, _ = route
        scenario, (tool_parser, reasoning_parser) = sc.scenarios()[name], sc.MODES[mode]
        exchange = {"scenario": name, "mode": mode, "request": body}
        problem = vllm_driver.check(body, tool_parser)
        if problem:
            exchange["status"] = 400
            self._save(run, exchange)
            return self._send(400, {"object": "error", "message": problem, "type": "BadRequestError",
                                    "param": None, "code": 400})
        messages = body.get("messages") or []
        with self.lock:
            key = (run, sum(1 for m in messages if m.get("role") == "assistant"))
            attempt = self.attempts.get(key, 0)
            self.attempts[key] = attempt + 1
        if self.headers.get("X-Conformance-Attempt"):  # record.py asks for one attempt directly
            attempt = int(self.headers["X-Conformance-Attempt"])
        turn, raw = sc.turn_for(scenario, messages, attempt)
        exchange.update(turn=turn, attempt=attempt, prompt=vllm_driver.render(body))
        frames = vllm_driver.stream(body, raw, tool_parser=tool_parser, reasoning_parser=reasoning_parser,
                                    group=sc.group_for(scenario, vllm_driver.VERSION))
        exchange.update(status=200, frames=frames)
        self._save(run, exchange)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for frame in frames:
            self.wfile.write(b"data: " + frame.encode() + b"\n\n")
        self.wfile.flush()

    def _save(self, run: str, exchange: dict) -> None:
        with self.lock:
            self.exchanges.setdefault(run, []).append(exchange)
            if self.record is not None:
                with open(self.record / "exchanges.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps({"run": run, **exchange}, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="vLLM conformance server (scripted engine, real vLLM serving code)")
    parser.add_argument("--scenario", default="fix", choices=sorted(sc.scenarios()))
    parser.add_argument("--mode", default="split", choices=sorted(sc.MODES))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", type=Path, help="directory for exchanges.jsonl")
    args = parser.parse_args(argv)
    Handler.default, Handler.record = (args.scenario, args.mode), args.record
    if args.record:
        args.record.mkdir(parents=True, exist_ok=True)
    vllm_driver.render({"model": vllm_driver.MODEL, "messages": [{"role": "user", "content": "warm up"}]})
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"vLLM {vllm_driver.VERSION} {READY}http://127.0.0.1:{server.server_address[1]}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
