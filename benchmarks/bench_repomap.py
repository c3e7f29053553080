"""Benchmark: our repo map (m2_mcp.repomap) against aider's RepoMap, same tree, same token budget.

Not a test; run on demand:

    python benchmarks/bench_repomap.py [--tree DIR] [--max-tokens N] [--repeat N]

aider-chat is installed into its own venv (benchmarks/.venv-aider, gitignored) so its many
pins never touch our environment. The tree is a temp git repo holding a copy of the `.py`
files of the installed Python stdlib (or of --tree). Each side runs in its own subprocess
and times only the map call (imports excluded): call 1 on an empty tags cache (cold), then
call 2 on a fresh instance over the cache call 1 left (warm). Best of --repeat runs.
Both sides count tokens the same way (characters / 4). aider is handed the `git ls-files`
list (as aider does itself); our call lists the files itself, inside the timed call.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_VENV = HERE / ".venv-aider"

AIDER_DRIVER = r'''
import json, os, sys, time
root, max_tokens, list_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
from aider.repomap import RepoMap

class Model:  # aider asks the model's tokenizer; use the same estimate as m2-mcp (chars / 4)
    def token_count(self, text):
        return (len(text) + 3) // 4

class IO:
    def read_text(self, filename, silent=False):
        try:
            with open(filename, encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeError):
            return None
    def tool_output(self, *args, **kwargs):
        pass
    tool_warning = tool_error = tool_output

files = [os.path.join(root, p) for p in open(list_file).read().split("\0") if p]
runs = []
for _ in range(2):  # cold, then warm (a new instance over the disk cache)
    rm = RepoMap(map_tokens=max_tokens, root=root, main_model=Model(), io=IO(), refresh="always")
    t = time.perf_counter()
    text = rm.get_repo_map([], files) or ""
    runs.append({"seconds": time.perf_counter() - t, "map": text})
print(json.dumps(runs))
'''

OURS_DRIVER = r'''
import json, sys, time
from pathlib import Path
from m2_mcp.repomap import build_map
root, max_tokens = Path(sys.argv[1]), int(sys.argv[2])
runs = []
for _ in range(2):  # cold (empty M2_MCP_CACHE_DIR), then warm
    t = time.perf_counter()
    result = build_map(root, max_tokens=max_tokens)
    runs.append({"seconds": time.perf_counter() - t, "map": result.map, "parsed": result.parsed})
print(json.dumps(runs))
'''


def ensure_aider(venv_dir: Path) -> Path | None:
    """The venv's python with aider-chat importable, installing it if needed; None (and why) if not."""
    py = venv_dir / "bin" / "python"
    if py.exists() and subprocess.run([py, "-c", "import aider.repomap"], capture_output=True).returncode == 0:
        return py
    print(f"installing aider-chat into {venv_dir} (its own venv; may take a few minutes)...", flush=True)
    try:
        venv.create(venv_dir, with_pip=True, clear=True)
        done = subprocess.run([py, "-m", "pip", "install", "-q", "aider-chat"], capture_output=True, text=True,
                              timeout=1800)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"cannot install aider-chat: {exc}")
        return None
    if done.returncode != 0:
        tail = [line for line in done.stderr.splitlines() if not line.startswith("WARNING: Location")][-5:]
        print("cannot install aider-chat: pip failed:\n  " + "\n  ".join(tail))
        return None
    check = subprocess.run([py, "-c", "import aider.repomap"], capture_output=True, text=True)
    if check.returncode != 0:
        print("aider-chat installed but aider.repomap does not import: " + check.stderr.strip().splitlines()[-1])
        return None
    return py


def make_tree(source: Path, dest: Path) -> int:
    """Copy `source` (every .py file, or every file for --tree) into a fresh committed git repo."""
    stdlib = source == Path(sysconfig.get_path("stdlib"))
    count = 0
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = [d for d in dirnames if d not in ("site-packages", "__pycache__", ".git")
                       and not d.startswith(".")]
        for name in filenames:
            if stdlib and not name.endswith(".py"):
                continue
            src = Path(dirpath) / name
            if src.is_symlink() or not src.is_file():
                continue
            target = dest / src.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            count += 1
    git = ["git", "-C", str(dest), "-c", "user.email=bench@example.com", "-c", "user.name=bench",
           "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(dest)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "tree"], check=True)
    return count


def run_json(cmd: list, env: dict | None = None) -> list[dict]:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def files_shown(text: str) -> int:
    return sum(1 for line in text.splitlines()
               if line and not line[0].isspace() and line[0] not in "│⋮" and line.rstrip().endswith(":"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", type=Path, default=Path(sysconfig.get_path("stdlib")),
                    help="source tree to copy and map (default: the installed Python stdlib, .py files)")
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3, help="runs per side; the best time is reported")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="where aider-chat is installed")
    args = ap.parse_args()

    aider_py = ensure_aider(args.venv)
    with tempfile.TemporaryDirectory(prefix="bench-repomap-") as tmp:
        tmp_path = Path(tmp)
        root = tmp_path / "tree"
        count = make_tree(args.tree.resolve(), root)
        listing = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=True).stdout
        (tmp_path / "files.lst").write_bytes(listing)
        (tmp_path / "aider_driver.py").write_text(AIDER_DRIVER)
        (tmp_path / "ours_driver.py").write_text(OURS_DRIVER)
        print(f"tree: copy of {args.tree} ({count} files), budget {args.max_tokens} tokens, "
              f"best of {args.repeat}, {os.cpu_count()} CPUs", flush=True)

        results: dict[str, list[list[dict]]] = {"aider": [], "ours": []}
        for i in range(args.repeat):
            if aider_py:
                for cache in root.glob(".aider.tags.cache.v*"):
                    shutil.rmtree(cache)
                results["aider"].append(run_json(
                    [str(aider_py), str(tmp_path / "aider_driver.py"), str(root), str(args.max_tokens),
                     str(tmp_path / "files.lst")]))
            cache_dir = tmp_path / f"m2-cache-{i}"
            env = {**os.environ, "M2_MCP_CACHE_DIR": str(cache_dir)}
            results["ours"].append(run_json(
                [sys.executable, str(tmp_path / "ours_driver.py"), str(root), str(args.max_tokens)], env))
            print(f"  run {i + 1}: " + ", ".join(
                f"{side} cold {runs[-1][0]['seconds']:.2f}s warm {runs[-1][1]['seconds']:.2f}s"
                for side, runs in results.items() if runs), flush=True)

    def best(side: str, k: int) -> float:
        return min(run[k]["seconds"] for run in results[side])

    print()
    print(f"{'':18} {'cold s':>8} {'warm s':>8} {'tokens':>7} {'files':>6}")
    for side, label in (("aider", "aider RepoMap"), ("ours", "m2-mcp repo_map")):
        if not results[side]:
            continue
        text = results[side][-1][1]["map"]
        print(f"{label:18} {best(side, 0):8.2f} {best(side, 1):8.2f} {(len(text) + 3) // 4:7d} "
              f"{files_shown(text):6d}")
    if not results["aider"]:
        print("\naider could not be run (see above): no ratio to report.")
        return 1
    cold, warm = best("aider", 0) / best("ours", 0), best("aider", 1) / best("ours", 1)
    ok = cold >= 2 and warm >= 2
    print(f"\nspeed-up (aider time / ours): cold {cold:.1f}x, warm {warm:.1f}x  "
          f"(target >= 2x both: {'met' if ok else 'NOT met'})")
    print("note: aider may go up to 15% over its budget by design; ours never exceeds it.")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
