"""Benchmark: our `search` tool (through the registry) against raw `rg --json` on a large tree.

Not a test. Default tree: a copy of the installed Python stdlib (without site-packages and
__pycache__). Each query runs best-of-N; the table shows the ratio ours/raw, where "raw" is
the same ripgrep command line our tool runs, its output read fully into memory.

    python benchmarks/bench_search.py [--root DIR] [--repeat N] [--fallback]
"""

from __future__ import annotations

import argparse
import os
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


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


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
    parser.add_argument("--repeat", type=int, default=5, help="best of N (default 5)")
    parser.add_argument("--fallback", action="store_true", help="also time the pure-Python fallback (slow)")
    opts = parser.parse_args()

    binary = rg.find_rg()
    if not binary:
        raise SystemExit("ripgrep not found; nothing to compare against")
    with tempfile.TemporaryDirectory() as tmp:
        root = opts.root.resolve() if opts.root else stdlib_copy(Path(tmp) / "stdlib")
        files = sum(len(f) for _, _, f in os.walk(root))
        mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
        print(f"tree: {root} ({files} files, {mb:.0f} MB); rg: {binary}; best of {opts.repeat}; "
              f"cpus: {os.cpu_count()}")
        repo = Repo(root)
        header = f"{'query':<34} {'total':>7} {'shown':>5} {'rg raw':>9} {'rg unsorted':>11} {'ours':>9} {'ours/raw':>8}"
        if opts.fallback:
            header += f" {'fallback':>9}"
        print(header)
        print("-" * len(header))
        for query in QUERIES:
            result = ours(repo, query)
            t_raw = best(lambda: raw(binary, root, query), opts.repeat)
            t_unsorted = best(lambda: raw(binary, root, query, sort=False), opts.repeat)
            t_ours = best(lambda: ours(repo, query), opts.repeat)
            label = ", ".join(f"{k}={v!r}" for k, v in query.items())[:34]
            row = (
                f"{label:<34} {result['total_matches']:>7} {len(result['matches']):>5} "
                f"{t_raw * 1e3:>7.0f}ms {t_unsorted * 1e3:>9.0f}ms {t_ours * 1e3:>7.0f}ms {t_ours / t_raw:>7.2f}x"
            )
            if opts.fallback:
                os.environ["M2_MCP_RG"] = "none"
                rg.find_rg.cache_clear()
                t_fb = best(lambda: ours(repo, query), 1)
                del os.environ["M2_MCP_RG"]
                rg.find_rg.cache_clear()
                row += f" {t_fb * 1e3:>7.0f}ms"
            print(row, flush=True)


if __name__ == "__main__":
    main()
