#!/usr/bin/env python3
"""A fake `vllm` for `m2-mcp model serve` tests: M2_MCP_VLLM="python tests/fake_engine.py".

Checks it was called as `vllm serve MODEL ...` with M2's flags and SAFETENSORS_FAST_GPU=1,
prints some log lines (including its pid and its worker's pid), then runs the M2 stand-in
(tools/m2_standin.py) as a child "worker" on the requested host and port, like vLLM's
API server with its engine workers. `--fake-exit-early` makes it fail at start-up instead.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = ["--trust-remote-code", "--enable-auto-tool-choice", "--tool-call-parser minimax_m2",
            "--reasoning-parser minimax_m2", "--tensor-parallel-size"]  # split or append_think: by version


def value(argv: list[str], flag: str, default: str | None = None) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else default


def main(argv: list[str]) -> int:
    print(f"INFO fake vllm pid {os.getpid()} argv: {' '.join(argv)}", flush=True)
    line = " ".join(argv)
    problems = [flag for flag in REQUIRED if flag not in line]
    if not argv or argv[0] != "serve":
        problems.insert(0, "first argument must be `serve`")
    if os.environ.get("SAFETENSORS_FAST_GPU") != "1":
        problems.append("SAFETENSORS_FAST_GPU=1 not set")
    if "--fake-exit-early" in argv:
        problems.append("asked to fail (--fake-exit-early)")
    if problems:
        print(f"ERROR fake vllm: bad start: {'; '.join(problems)}", flush=True)
        return 1
    model = value(argv, "--served-model-name", argv[1])
    scenario = {"model": model, "tool_parser": True, "scripts": [{"turns": [
        {"think": "The check wants the time.", "text": "",
         "tool_calls": [{"name": "get_time", "arguments": {"timezone": "UTC"}}]}], "repeat_last": True}]}
    path = Path(tempfile.mkdtemp(prefix="fake-vllm-")) / "scenario.json"
    path.write_text(json.dumps(scenario))
    print("INFO loading weights (pretend)", flush=True)
    worker = subprocess.Popen([sys.executable, str(ROOT / "tools" / "m2_standin.py"), "--scenario", str(path),
                               "--host", value(argv, "--host", "0.0.0.0"), "--port", value(argv, "--port", "8000")])
    print(f"INFO fake vllm worker pid {worker.pid}", flush=True)
    return worker.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
