"""Which reasoning parser keeps M2's `</think>` on the vLLM version in use (serve, k8s, docs).

Measured by driving vLLM's own serving code (tools/vllm_conformance/):
- vLLM 0.11.2: `minimax_m2_append_think` keeps `<think>...</think>` in the content;
  `minimax_m2` (split) delivers the thinking as plain content.
- vLLM 0.33.0: `minimax_m2` (split) is clean (thinking in `reasoning`);
  `minimax_m2_append_think` drops `</think>`, so every reply looks like thinking.
Between them only code was read: from 0.18 the split parser fills `reasoning`, so split is
chosen from 0.18 on. The tested range is also the `serve` extra's pin in pyproject.toml.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

OLDEST_TESTED_VLLM = "0.11.2"
NEWEST_TESTED_VLLM = "0.33.0"  # the one pin: .ci/run installs it, pyproject's `serve` extra stops at it
SPLIT_FROM = (0, 18)
SERVE_REQUIREMENT = f"vllm>={OLDEST_TESTED_VLLM},<={NEWEST_TESTED_VLLM}"
SGLANG_REASONING_PARSER = "minimax-append-think"


def version_tuple(version: str | None) -> tuple[int, ...] | None:
    m = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", (version or "").strip())
    return tuple(int(g or 0) for g in m.groups()) if m else None


def reasoning_parser(engine: str, vllm_version: str | None) -> str:
    """The `--reasoning-parser` that keeps M2's thinking closed on this engine version
    (vLLM version unknown: the newest tested)."""
    if engine != "vllm":
        return SGLANG_REASONING_PARSER
    version = version_tuple(vllm_version) or version_tuple(NEWEST_TESTED_VLLM)
    return "minimax_m2" if version[:2] >= SPLIT_FROM else "minimax_m2_append_think"


def version_of_image(image: str | None) -> str | None:
    """`vllm/vllm-openai:v0.11.2` -> "0.11.2" (None for `latest` or a digest)."""
    tag = (image or "").rsplit("/", 1)[-1].partition(":")[2]
    return ".".join(map(str, version_tuple(tag))) if version_tuple(tag) else None


def installed_vllm_version(executable: str) -> str | None:
    """The vLLM version behind a `vllm` executable (read from its Python's package metadata;
    vLLM itself is not imported). None when it cannot be told."""
    path = shutil.which(executable)
    if not path:
        return None
    python = path if os.path.basename(path).startswith("python") else _shebang(path)
    if not python:
        return None
    try:
        done = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('vllm'))"],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _shebang(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            first = f.readline(300).decode("utf-8", "replace")
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    words = first[2:].split()
    if words and os.path.basename(words[0]) == "env" and len(words) > 1:
        return shutil.which(words[1])
    return words[0] if words else None
