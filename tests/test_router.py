"""The session id on the wire, end to end: the real vllm-router (PyPI, the policy `model k8s` sets) on
loopback in front of two M2 stand-ins, two real `m2-mcp fix` runs at once through it. Every request of
a run lands on one backend. Then the same requests again, with only the header, and with no session at
all, to show what the router does then."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from _mcp import free_port
from conftest import ROOT, make_repo
from m2_mcp.agent.model_client import SESSION_HEADER
from m2_mcp.serving.k8s import ROUTER_PACKAGE
from standin import start_standin

pytestmark = pytest.mark.slow
pytest.importorskip("vllm_router", reason=f"{ROUTER_PACKAGE} is not installed (pip install -e '.[test]')")

READ = {"name": "read_file", "arguments": {"path": "calc.py"}}
FIND = {"name": "find_files", "arguments": {"pattern": "*.py"}}
TURNS = [
    {"think": "Read the code first.", "tool_calls": [READ]},
    {"think": "Which files are there?", "tool_calls": [FIND]},
    {"think": "Look once more.", "tool_calls": [READ]},
    {"think": "Nothing to change.", "text": "calc.py is fine as it is."},
]
PASSING = {
    "calc.py": "def add(a, b):\n    return a + b\n",
    "tests/test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    "pytest.ini": "[pytest]\npythonpath = .\n",
}
TASKS = ("Review calc.py (run A).", "Review calc.py (run B).")


@contextlib.contextmanager
def vllm_router(workers: list[str], policy: str = "consistent_hash"):
    """The router as `model k8s` runs it (static workers instead of pod discovery); yields (url, metrics url)."""
    port, metrics = free_port(), free_port()
    argv = [sys.executable, "-m", "vllm_router.launch_router", "--host", "127.0.0.1", "--port", str(port),
            "--worker-urls", *workers, "--policy", policy, "--prometheus-host", "127.0.0.1",
            "--prometheus-port", str(metrics), "--log-level", "warning", "--worker-startup-check-interval", "1"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"vllm-router exited: {proc.stderr.read().decode()[-2000:]}"
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{base}/readiness", timeout=2) as r:
                    if json.loads(r.read()).get("healthy_workers") == len(workers):
                        break
            assert time.monotonic() < deadline, "vllm-router did not become ready"
            time.sleep(0.3)
        yield base, f"http://127.0.0.1:{metrics}/metrics"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        proc.stderr.close()


def task_of(body: dict) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user").split("\n")[0]


def backends_by_task(backends, since: list[int]) -> dict[str, Counter]:
    """{run's task line (from the request): Counter(backend index)} for requests after `since`."""
    seen: dict[str, Counter] = {}
    for i, m2 in enumerate(backends):
        for body in m2.requests()[since[i]:]:
            task = next(t for t in TASKS if t in json.dumps(body["messages"]))
            seen.setdefault(task, Counter())[i] += 1
    return seen


def post(url: str, body: dict, headers: dict) -> None:
    request = urllib.request.Request(f"{url}/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=60) as r:
        r.read()


def test_each_agent_run_stays_on_one_backend_behind_vllm_router(tmp_path: Path):
    scenario = {"scripts": [{"turns": TURNS}]}
    with start_standin(scenario, tmp_path / "a") as a, start_standin(scenario, tmp_path / "b") as b:
        backends = [a, b]
        workers = [m2.base_url.removesuffix("/v1") for m2 in backends]
        with vllm_router(workers) as (router, metrics):
            runs = []
            for n, task in enumerate(TASKS):
                repo = make_repo(tmp_path / f"repo{n}", PASSING)
                runs.append(subprocess.Popen(
                    [sys.executable, "-m", "m2_mcp", "fix", "--repo", str(repo), "--task", task,
                     "--base-url", f"{router}/v1", "--timeout", "120"],
                    cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            outputs = [run.communicate(timeout=180) for run in runs]
            for (out, err), run in zip(outputs, runs):
                assert json.loads(out)["steps"] == len(TURNS), err
            recorded = [m2.requests() for m2 in backends]

            # Every request of a run carries the run's id (OpenAI's `user` field; the header goes with it),
            # the two runs have different ids, and all of a run's requests went to one backend.
            ids = {task: {(i, body.get("user")) for i, bodies in enumerate(recorded) for body in bodies
                          if task in json.dumps(body["messages"])} for task in TASKS}
            for task, seen in ids.items():
                assert len(seen) == 1, f"{task}: requests split over backends/ids {seen}"
            (backend_a, id_a), (backend_b, id_b) = (next(iter(ids[t])) for t in TASKS)
            assert id_a and id_b and id_a != id_b
            assert sum(len(bodies) for bodies in recorded) == 2 * len(TURNS)
            with urllib.request.urlopen(metrics, timeout=10) as r:
                text = r.read().decode()
            processed = {line.split('worker="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                         for line in text.splitlines() if line.startswith("vllm_router_processed_requests_total{")}
            assert sum(processed.values()) == 2 * len(TURNS)  # the router's own count, as docs/serving.md reads it

            # Replay the same requests, interleaved, once with only the header (no `user`): still one
            # backend per run; then with no session at all: whatever the policy does (reported, not asserted).
            bodies = {task: [b for bodies in recorded for b in bodies if task in json.dumps(b["messages"])]
                      for task in TASKS}
            for task in TASKS:
                bodies[task].sort(key=lambda body: len(body["messages"]))
            sessions = {TASKS[0]: id_a, TASKS[1]: id_b}
            report = {}
            for mode in ("header only", "no session"):
                since = [len(m2.requests()) for m2 in backends]
                for step in range(len(TURNS)):
                    for task in TASKS:
                        body = {k: v for k, v in bodies[task][step].items() if k != "user"}
                        post(router, body, {SESSION_HEADER: sessions[task]} if mode == "header only" else {})
                report[mode] = backends_by_task(backends, since)
            for task, spread in report["header only"].items():
                assert len(spread) == 1 and sum(spread.values()) == len(TURNS), (task, spread)
    print(f"\nvllm-router consistent_hash, requests per backend (index: count) for each run: "
          f"with the session: {dict(ids)}; header only: {report['header only']}; "
          f"no session (the body hash decides): {report['no session']}")
