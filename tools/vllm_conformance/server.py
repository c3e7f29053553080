"""OpenAI-compatible server answering with vLLM's real serving code and a scripted engine (vLLM venv).

    VLLM_PYTHON tools/vllm_conformance/server.py --scenario fix --mode split [--port 0] [--record DIR]

Prints `vLLM <version> conformance server listening on http://127.0.0.1:PORT/v1` when ready.
Each request is answered with the scenario turn chosen by the number of assistant messages in it;
a repeated request for the same turn (a resample) gets the turn's next attempt. With --record,
every request, the prompt vLLM rendered for it and the SSE frames sent go to DIR/exchanges.jsonl.
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
    scenario: dict
    group: int
    tool_parser: str | None
    reasoning_parser: str | None
    record: Path | None
    attempts: dict[int, int] = {}
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

    def do_GET(self):
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": vllm_driver.MODEL, "object": "model"}]})
        elif self.path in ("/health", "/version"):
            self._send(200, {"version": vllm_driver.VERSION})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}", "code": 404}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        exchange = {"request": body}
        problem = vllm_driver.check(body, self.tool_parser)
        if problem:
            exchange["status"] = 400
            self._save(exchange)
            return self._send(400, {"object": "error", "message": problem, "type": "BadRequestError",
                                    "param": None, "code": 400})
        messages = body.get("messages") or []
        with self.lock:
            key = sum(1 for m in messages if m.get("role") == "assistant")
            attempt = self.attempts.get(key, 0)
            self.attempts[key] = attempt + 1
        turn, raw = sc.turn_for(self.scenario, messages, attempt)
        exchange.update(turn=turn, attempt=attempt, prompt=vllm_driver.render(body))
        frames = vllm_driver.stream(body, raw, tool_parser=self.tool_parser, reasoning_parser=self.reasoning_parser,
                                    group=self.group)
        exchange.update(status=200, frames=frames)
        self._save(exchange)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for frame in frames:
            self.wfile.write(b"data: " + frame.encode() + b"\n\n")
        self.wfile.flush()

    def _save(self, exchange: dict) -> None:
        if self.record is not None:
            with self.lock, open(self.record / "exchanges.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(exchange, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="vLLM conformance server (scripted engine, real vLLM serving code)")
    parser.add_argument("--scenario", required=True, choices=sorted(sc.scenarios()))
    parser.add_argument("--mode", required=True, choices=sorted(sc.MODES))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", type=Path, help="directory for exchanges.jsonl")
    args = parser.parse_args(argv)
    Handler.scenario = sc.scenarios()[args.scenario]
    Handler.group = Handler.scenario.get("group", 1)
    Handler.tool_parser, Handler.reasoning_parser = sc.MODES[args.mode]
    Handler.record = args.record
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
