"""Benchmark: the sandbox's per-call overhead, `shell` sandboxed against the same tool unsandboxed.

Not a test. Both sides go through the real `shell` tool (registry, proc.run, bash) on the same
temp git repo in the same run; "bare" is `M2_MCP_SANDBOX=off`. Each command runs N times,
interleaved; the table shows medians and the ratio sandboxed/bare.

    python benchmarks/bench_sandbox.py [--repeat N] [--files N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import anyio

from m2_mcp import sandbox
from m2_mcp.repo import Repo
from m2_mcp.tools import registry

COMMANDS = ["true", "ls -R . > /dev/null", "python -c 'import json'"]


def make_repo(root: Path, files: int) -> Path:
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    for i in range(files):  # a tree to walk for nested .git directories
        path = root / f"pkg{i % 20}" / f"mod{i}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"x = {i}\n")
    return root


async def timed(repo: Repo, command: str, sandboxed: bool) -> float:
    os.environ[sandbox.MODE_ENV] = "on" if sandboxed else "off"
    started = time.perf_counter()
    result = await registry.call(repo, "shell", {"command": command})
    elapsed = time.perf_counter() - started
    assert result["exit_code"] == 0, result
    return elapsed


async def main(repeat: int, files: int) -> None:
    state, detail = sandbox.status()
    if state != "on":
        raise SystemExit(f"bench_sandbox: the sandbox is not available here: {detail}")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Repo(make_repo(Path(tmp) / "repo", files))
        await timed(repo, "true", True)  # warm up (the availability probe runs once)
        print(f"{'command':<28} {'bare ms':>9} {'sandboxed ms':>13} {'ratio':>7}")
        for command in COMMANDS:
            bare, boxed = [], []
            for _ in range(repeat):
                bare.append(await timed(repo, command, False))
                boxed.append(await timed(repo, command, True))
            b, s = statistics.median(bare) * 1000, statistics.median(boxed) * 1000
            print(f"{command:<28} {b:>9.1f} {s:>13.1f} {s / b:>7.2f}")
    print(f"repo: {files} files; median of {repeat} interleaved calls each; {detail}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()
    anyio.run(main, args.repeat, args.files)
