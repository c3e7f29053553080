"""Benchmark: a bounded loopback load test of the streamable HTTP server.

Not a test. Starts `m2-mcp serve --transport http` on a copy of a tree (default: a small
generated repo), then N concurrent SDK clients each make M tool calls (read_file, search,
find_files, git_status in turn). Prints errors, p50/p99 latency and the server's RSS (current
and peak, from /proc).

    python benchmarks/bench_load.py [--clients N] [--calls M] [--root DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _mcp import connect, start_http_server  # noqa: E402

CALLS = [
    ("read_file", {"path": "pkg/mod0.py"}),
    ("search", {"pattern": r"def \w+", "max_results": 20}),
    ("find_files", {"pattern": "*.py"}),
    ("git_status", {}),
]


def make_tree(root: Path, files: int = 200) -> Path:
    (root / "pkg").mkdir(parents=True)
    for i in range(files):
        body = "".join(f"def f{i}_{j}(x):\n    return x + {j}\n\n" for j in range(30))
        (root / "pkg" / f"mod{i}.py").write_text(body)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


def rss_kb(pid: int) -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


async def client_run(url: str, calls: int, latencies: list[float], errors: list[str]) -> None:
    async with connect(url) as client:
        for i in range(calls):
            name, args = CALLS[i % len(CALLS)]
            start = time.perf_counter()
            try:
                result = await client.call_tool(name, args)
                if result.is_error:
                    errors.append(f"{name}: {result.content[0].text if result.content else '?'}")
            except Exception as exc:  # noqa: BLE001 - a benchmark counts failures, it does not stop
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
            latencies.append(time.perf_counter() - start)


async def run(url: str, clients: int, calls: int) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(clients):
            tg.start_soon(client_run, url, calls, latencies, errors)
    return latencies, errors, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--calls", type=int, default=25, help="calls per client")
    parser.add_argument("--root", type=Path, help="repo to serve (default: a generated 200-file repo)")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = opts.root.resolve() if opts.root else make_tree(Path(tmp) / "repo")
        with start_http_server(root, "http") as (url, proc):
            idle_rss, _ = rss_kb(proc.pid)
            latencies, errors, wall = anyio.run(run, url, opts.clients, opts.calls)
            rss, peak = rss_kb(proc.pid)
        latencies.sort()
        n = len(latencies)
        print(f"{opts.clients} clients x {opts.calls} calls = {n} calls in {wall:.1f} s ({n / wall:.0f}/s)")
        print(f"errors: {len(errors)}" + "".join(f"\n  {e}" for e in errors[:10]))
        print(f"latency p50 {statistics.median(latencies) * 1e3:.0f} ms, p99 {latencies[int(n * 0.99) - 1] * 1e3:.0f} ms, "
              f"max {latencies[-1] * 1e3:.0f} ms")
        print(f"server RSS: {idle_rss / 1024:.0f} MB idle, {rss / 1024:.0f} MB after, {peak / 1024:.0f} MB peak")


if __name__ == "__main__":
    main()
