"""Start the conformance server (server.py here) with a vLLM interpreter; for tests and record.py.
Standard library only: it runs in the project's interpreter, not in the vLLM venv.

    with start_vllm_server("/path/to/venv/bin/python", tmp_path) as server:
        base_url = server.base_url("run1", "fix", "split")   # scenario, mode: tools/vllm_conformance/
        ...
        server.exchanges("run1", "fix", "split")             # requests, rendered prompts, SSE frames
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

SERVER = Path(__file__).resolve().parent / "server.py"
READY = "conformance server listening on "


@dataclass
class VllmServer:
    root: str      # http://127.0.0.1:PORT
    version: str   # the vLLM version it runs

    def base_url(self, run: str, scenario: str, mode: str) -> str:
        return f"{self.root}/{run}/{scenario}/{mode}/v1"

    def exchanges(self, run: str, scenario: str, mode: str) -> list[dict]:
        with urllib.request.urlopen(self.base_url(run, scenario, mode) + "/_exchanges", timeout=30) as r:
            return json.loads(r.read())


@contextlib.contextmanager
def start_vllm_server(python: str, tmp_path: Path, startup_timeout: float = 600.0) -> Iterator[VllmServer]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    errlog = open(tmp_path / "vllm-server.err", "w+")
    proc = subprocess.Popen([python, str(SERVER), "--port", "0"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=errlog, text=True)
    try:
        line: list[str] = []
        ready = threading.Event()

        def read_stdout() -> None:  # vLLM may log to stdout, before the ready line and after it
            for text in proc.stdout:
                if not line and READY in text:
                    line.append(text)
                    ready.set()
            ready.set()

        threading.Thread(target=read_stdout, daemon=True).start()
        ready.wait(startup_timeout)
        if not line:
            proc.kill()
            proc.wait(timeout=10)
            errlog.seek(0)
            raise RuntimeError(f"vLLM conformance server did not start within {startup_timeout:g}s: "
                               f"{errlog.read()[-3000:]}")
        head, url = line[0].strip().split(READY)
        yield VllmServer(url.removesuffix("/v1"), head.split()[1])
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        proc.stdout.close()
        errlog.close()
