"""`m2-mcp model serve`: start the engine, stream its log, wait until it answers, check one
tool-call round trip, then keep it running until Ctrl-C / SIGTERM, and stop it cleanly.

The engine runs in its own process group; stopping sends SIGTERM to the group, waits
STOP_GRACE_S, then SIGKILLs what is left, so no worker outlives us.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from m2_mcp.endpoint import Endpoint
from m2_mcp.errors import M2Error, UsageError
from m2_mcp.proc import kill_group
from m2_mcp.serving.engine import ENV, EngineSpec, engine_command, executable
from m2_mcp.serving.parsers import NEWEST_TESTED_VLLM, installed_vllm_version, reasoning_parser, version_of_image

STOP_GRACE_S = 30.0
POLL_S = 1.0
LOG_TAIL = 20


class EngineExited(M2Error):
    """The engine stopped on its own (exit 1)."""


class _Stop(BaseException):
    """Raised in the main thread by SIGINT/SIGTERM."""


def check_installed(spec: EngineSpec, argv: list[str]) -> None:
    """One-line UsageError (exit 2) when the engine is not installed here."""
    if spec.engine == "vllm" and not os.environ.get("M2_MCP_VLLM") and not shutil.which(argv[0]):
        raise UsageError("vLLM is not installed (no `vllm` on PATH): pip install 'm2-mcp[serve]'")
    if spec.engine == "sglang" and not os.environ.get("M2_MCP_SGLANG") and not importlib.util.find_spec("sglang"):
        raise UsageError("SGLang is not installed: pip install 'sglang>=0.5.4.post3' "
                         "(or use the default engine: pip install 'm2-mcp[serve]')")


def with_vllm_version(spec: EngineSpec, image: str | None = None) -> EngineSpec:
    """The spec with the vLLM version that picks its reasoning parser: --vllm-version if given, else the
    image's tag (k8s), else the installed vLLM (serve); unknown -> the newest tested (parsers.py)."""
    if spec.engine != "vllm" or spec.vllm_version:
        return spec
    found = version_of_image(image) if image else installed_vllm_version(executable("vllm")[0])
    return dataclasses.replace(spec, vllm_version=found) if found else spec


def local_base(spec: EngineSpec) -> str:
    """The URL clients on this machine use: a wildcard bind is reached through loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(spec.host, spec.host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{spec.port}"


class Engine:
    """The engine subprocess, its log pump and its stop."""

    def __init__(self, log=sys.stderr) -> None:
        self.tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
        self.process: subprocess.Popen | None = None
        self._log = log
        self._pump = threading.Thread(target=self._copy_log, daemon=True)

    def start(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(
            argv, env={**os.environ, **ENV, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._pump.start()

    def _copy_log(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line)
            try:
                self._log.write(line + "\n")
                self._log.flush()
            except (OSError, ValueError):
                pass

    def exited(self) -> int | None:
        return self.process.poll()

    def last_lines(self) -> str:
        self._pump.join(timeout=2)
        return "\n".join(f"  | {line}" for line in self.tail)

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM the process group, wait `grace` seconds, then SIGKILL the group; reap."""
        if self.process is None:
            return
        kill_group(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        kill_group(self.process.pid, signal.SIGKILL)  # also workers left in the group after the leader exits
        self.process.wait()
        self._pump.join(timeout=2)


def _answers(url: str, api_key: str) -> bool:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def wait_ready(engine: Engine, base: str, api_key: str, timeout: float) -> None:
    """Until GET /health and GET /v1/models both answer 200; EngineExited / TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        code = engine.exited()
        if code is not None:
            raise EngineExited(f"the engine exited with code {code} before it was ready; last log lines:\n"
                               + engine.last_lines())
        if _answers(f"{base}/health", api_key) and _answers(f"{base}/v1/models", api_key):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the engine did not answer {base}/health within {timeout:g}s")
        time.sleep(POLL_S)


def serve(spec: EngineSpec, *, ready_timeout: float, check_timeout: float = 20.0, out=sys.stdout,
          err=sys.stderr) -> int:
    """Start the engine and keep it running; the exit code for the CLI."""
    from m2_mcp.doctor import model_checks, render

    spec = with_vllm_version(spec)
    argv = engine_command(spec)
    check_installed(spec, argv)
    api_key = os.environ.get("M2_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"
    base = local_base(spec)
    endpoint = Endpoint(f"{base}/v1", spec.request_model, api_key)

    def on_signal(signum, frame):
        raise _Stop(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    engine = Engine(log=err)  # exists before the process does, so `finally` always sees what to stop
    try:
        err.write(f"m2-mcp: starting {spec.engine}; waiting up to {ready_timeout:g}s for {base}/health\n")
        if spec.engine == "vllm":
            err.write(f"m2-mcp: vLLM {spec.vllm_version or 'version unknown (assuming ' + NEWEST_TESTED_VLLM + ')'}: "
                      f"--reasoning-parser {reasoning_parser('vllm', spec.vllm_version)} (keeps </think> there)\n")
        engine.start(argv)
        err.write(f"m2-mcp: engine pid {engine.process.pid}\n")
        err.flush()
        try:
            wait_ready(engine, base, api_key, ready_timeout)
        except TimeoutError as exc:
            raise EngineExited(f"{exc}; last log lines:\n{engine.last_lines()}") from None
        checks = model_checks(endpoint, check_timeout)
        err.write(render(checks) + "\n")
        if any(c.status == "fail" for c in checks):
            err.write("m2-mcp: warning: the engine is up, but a check above failed; it keeps running\n")
        out.write(f"ready: export M2_BASE_URL={endpoint.base_url} M2_MODEL={shlex.quote(endpoint.model)}\n")
        out.flush()
        code = engine.process.wait()
        raise EngineExited(f"the engine exited with code {code}; last log lines:\n{engine.last_lines()}")
    except _Stop:
        err.write("m2-mcp: stopping the engine\n")
        return 0
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the clean stop
        engine.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
