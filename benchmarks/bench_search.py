"""Benchmark: our `search` tool (through the registry) against raw `rg --json` on a large tree.

Not a test. Default tree: a copy of the installed Python stdlib (without site-packages and
__pycache__). Each query runs N rounds, raw and ours alternating (so both see the same machine
load); the table shows medians and the ratio ours/raw, where "raw" is the same ripgrep command
line our tool runs, its output read fully into memory. The last line is the median ratio over
the queries (issue 13's goal: at most 1.2).

    python benchmarks/bench_search.py [--root DIR] [--repeat N] [--fallback]
"""

from __future__ import annotations

import argparse
import os
import statistics
import shutil
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path

import anyio

from m2_mcp import rg
from m2_mcp.repo import Repo
from m2_mcp.tools import registry
from m2_mcp.tools.search import rg_argv

QUERIES = [
    {"pattern": "xyzzy_not_anywhere"},
    {"pattern": "import os", "literal": True},
    {"pattern": r"def \w+_cache\("},
    {"pattern": "copyright", "case_sensitive": False, "glob": "*.py"},
    {"pattern": r"raise \w+Error", "context": 2},
    {"pattern": "self", "max_results": 500},
]


def stdlib_copy(dest: Path) -> Path:
    src = Path(sysconfig.get_path("stdlib"))
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("site-packages", "__pycache__"), symlinks=True)
    return dest


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternating(fns: list, repeat: int) -> list[float]:
    """Median time of each function, run in alternation `repeat` times."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            times[i].append(timed(fn))
    return [statistics.median(t) for t in times]


def raw(binary: str, root: Path, query: dict, sort: bool = True) -> None:
    argv = rg_argv(
        binary, query["pattern"], ".", query.get("glob"), query.get("literal", False),
        query.get("case_sensitive", True), query.get("context", 0),
    )
    if not sort:
        argv.remove("--sort")
        argv.remove("path")
    subprocess.run(argv, cwd=root, capture_output=True, stdin=subprocess.DEVNULL)


def ours(repo: Repo, query: dict) -> dict:
    return anyio.run(registry.call, repo, "search", query)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="tree to search in place (default: temp copy of the stdlib)")
    parser.add_argument("--repeat", type=int, default=15, help="rounds per query (default 15)")
    parser.add_argument("--fallback", action="store_true", help="also time the pure-Python fallback (slow)")
    opts = parser.parse_args()

    binary = rg.find_rg()
    if not binary:
        raise SystemExit("ripgrep not found; nothing to compare against")
    with tempfile.TemporaryDirectory() as tmp:
        root = opts.root.resolve() if opts.root else stdlib_copy(Path(tmp) / "stdlib")
        files = sum(len(f) for _, _, f in os.walk(root))
        mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
        print(f"tree: {root} ({files} files, {mb:.0f} MB); rg: {binary}; median of {opts.repeat}; "
              f"cpus: {os.cpu_count()}; load: {os.getloadavg()[0]:.1f}")
        repo = Repo(root)
        header = f"{'query':<34} {'total':>7} {'shown':>5} {'rg raw':>9} {'ours':>9} {'ours/raw':>8}"
        if opts.fallback:
            header += f" {'fallback':>9}"
        print(header)
        print("-" * len(header))
        ratios = []
        for query in QUERIES:
            result = ours(repo, query)
            raw(binary, root, query)  # warm the page cache for both
            t_raw, t_ours = alternating([lambda: raw(binary, root, query), lambda: ours(repo, query)], opts.repeat)
            ratios.append(t_ours / t_raw)
            label = ", ".join(f"{k}={v!r}" for k, v in query.items())[:34]
            row = (
                f"{label:<34} {result['total_matches']:>7} {len(result['matches']):>5} "
                f"{t_raw * 1e3:>7.0f}ms {t_ours * 1e3:>7.0f}ms {t_ours / t_raw:>7.2f}x"
            )
            if opts.fallback:
                os.environ["M2_MCP_RG"] = "none"
                rg.find_rg.cache_clear()
                t_fb = timed(lambda: ours(repo, query))
                del os.environ["M2_MCP_RG"]
                rg.find_rg.cache_clear()
                row += f" {t_fb * 1e3:>7.0f}ms"
            print(row, flush=True)
        print(f"median ours/raw over {len(QUERIES)} queries: {statistics.median(ratios):.2f}x (goal: at most 1.2x)")


if __name__ == "__main__":
    main()
