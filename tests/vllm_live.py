"""Start the vLLM conformance server (tools/vllm_conformance/server.py) with a vLLM interpreter.

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

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "tools" / "vllm_conformance" / "server.py"
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
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(startup_timeout)
        if not line or READY not in line[0]:
            proc.kill()
            proc.wait(timeout=10)
            errlog.seek(0)
            raise RuntimeError(f"vLLM conformance server did not start: {(line or [''])[0]!r} {errlog.read()[-3000:]}")
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
