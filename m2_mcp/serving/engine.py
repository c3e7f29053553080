"""The one place that spells the engine command for MiniMax-M2 (used by serve, plan and k8s).

Flags follow MiniMax's and vLLM's deployment guides: TP4 on 4 GPUs, TP8 plus expert
parallel on 8, M2's tool-call parser and the reasoning parser that keeps `</think>` on the
engine's version (parsers.reasoning_parser), and SAFETENSORS_FAST_GPU=1 for faster weight loading.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass, field

from m2_mcp.endpoint import DEFAULT_MODEL
from m2_mcp.errors import UsageError
from m2_mcp.serving.parsers import NEWEST_TESTED_VLLM, OLDEST_TESTED_VLLM, reasoning_parser, version_tuple

ENGINES = ("vllm", "sglang")
GPU_COUNTS = (4, 8)
ENV = {"SAFETENSORS_FAST_GPU": "1"}
DEFAULT_PORT = 8000
LOCAL_HOST = "127.0.0.1"  # vLLM and SGLang bind 0.0.0.0 by default; we don't unless asked

# How each engine spells the same setting.
_FLAGS = {
    "vllm": {
        "model": None,  # positional after `vllm serve`
        "tp": "--tensor-parallel-size",
        "tool_parser": ["--enable-auto-tool-choice", "--tool-call-parser", "minimax_m2"],
        "reasoning_parser": "--reasoning-parser",  # the value depends on the version: parsers.py
        "max_model_len": "--max-model-len",
        "max_num_seqs": "--max-num-seqs",
        "mem_util": "--gpu-memory-utilization",
        "chunked_prefill": ["--enable-chunked-prefill"],
        "metrics": [],  # /metrics is always on
    },
    "sglang": {
        "model": "--model-path",
        "tp": "--tp-size",
        "tool_parser": ["--tool-call-parser", "minimax-m2"],
        "reasoning_parser": "--reasoning-parser",
        "max_model_len": "--context-length",
        "max_num_seqs": "--max-running-requests",
        "mem_util": "--mem-fraction-static",
        "chunked_prefill": [],  # SGLang chunks long prefills by default
        "metrics": ["--enable-metrics"],
    },
}


@dataclass(frozen=True)
class EngineSpec:
    """Everything that decides the engine's command line."""

    engine: str = "vllm"
    gpus: int = 4
    model: str = DEFAULT_MODEL
    host: str = LOCAL_HOST
    port: int = DEFAULT_PORT
    max_model_len: int | None = None
    served_model_name: str | None = None
    extra: tuple[str, ...] = field(default=())  # passed through unchanged, last
    vllm_version: str | None = None  # picks the reasoning parser; None = the newest tested

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise UsageError(f"unknown engine {self.engine!r} (choose from {', '.join(ENGINES)})")
        if self.gpus not in GPU_COUNTS:
            raise UsageError(f"--gpus must be 4 (TP4) or 8 (TP8 + expert parallel), not {self.gpus}")

    @property
    def request_model(self) -> str:
        """The model name clients send (M2_MODEL)."""
        return self.served_model_name or self.model


def engine_args(spec: EngineSpec) -> list[str]:
    """The engine's arguments after its executable (`vllm serve` / `python -m sglang.launch_server`)."""
    f = _FLAGS[spec.engine]
    args = [spec.model] if f["model"] is None else [f["model"], spec.model]
    args += ["--trust-remote-code", f["tp"], str(spec.gpus)]
    if spec.gpus == 8:
        args += ["--enable-expert-parallel"] if spec.engine == "vllm" else ["--ep-size", "8"]
    args += f["tool_parser"] + [f["reasoning_parser"], reasoning_parser(spec.engine, spec.vllm_version)] + f["metrics"]
    args += ["--host", spec.host, "--port", str(spec.port)]
    if spec.served_model_name:
        args += ["--served-model-name", spec.served_model_name]
    if spec.max_model_len:
        args += [f["max_model_len"], str(spec.max_model_len)]
    return args + list(spec.extra)


def tuning_args(engine: str, max_num_seqs: int | None = None, gpu_mem_util: float | None = None,
                chunked_prefill: bool = False) -> list[str]:
    """Capacity flags in the engine's spelling (what `model plan` recommends)."""
    f = _FLAGS[engine]
    args = [f["max_num_seqs"], str(max_num_seqs)] if max_num_seqs else []
    if gpu_mem_util is not None:
        args += [f["mem_util"], f"{gpu_mem_util:g}"]
    return args + (f["chunked_prefill"] if chunked_prefill else [])


def executable(engine: str, environ: dict[str, str] | None = None) -> list[str]:
    """The engine's executable on this machine; M2_MCP_VLLM / M2_MCP_SGLANG override it (a shell word list)."""
    environ = os.environ if environ is None else environ
    if engine == "vllm":
        return shlex.split(environ["M2_MCP_VLLM"]) if environ.get("M2_MCP_VLLM") else ["vllm"]
    if environ.get("M2_MCP_SGLANG"):
        return shlex.split(environ["M2_MCP_SGLANG"])
    return [sys.executable, "-m", "sglang.launch_server"]


def plain_command(engine: str) -> list[str]:
    """The engine's command as typed in a shell or run in its official container image."""
    return ["vllm", "serve"] if engine == "vllm" else ["python3", "-m", "sglang.launch_server"]


def engine_command(spec: EngineSpec, environ: dict[str, str] | None = None) -> list[str]:
    """Full argv for this machine."""
    subcommand = ["serve"] if spec.engine == "vllm" else []
    return executable(spec.engine, environ) + subcommand + engine_args(spec)


def shell_line(argv: list[str], env: dict[str, str] = ENV) -> str:
    """`KEY=value cmd args...`, shell-quoted so it can be pasted into a terminal."""
    return " ".join([f"{k}={shlex.quote(v)}" for k, v in env.items()] + [shlex.quote(a) for a in argv])


def add_engine_arguments(parser, host_default: str = LOCAL_HOST, host_note: str = "") -> None:
    """The flags `model serve` and `model k8s` share; `spec_from_args` reads them back."""
    parser.add_argument("--engine", choices=ENGINES, default="vllm", help="inference engine (default vllm)")
    parser.add_argument("--gpus", type=int, choices=GPU_COUNTS, default=4,
                        help="4 = tensor parallel 4; 8 = tensor parallel 8 + expert parallel (default 4)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"Hugging Face model id or local path (default {DEFAULT_MODEL})")
    parser.add_argument("--host", default=host_default, help=f"address the engine binds (default {host_default}{host_note})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"engine port (default {DEFAULT_PORT})")
    parser.add_argument("--max-model-len", type=int, metavar="TOKENS",
                        help="context window per request (M2's own is 196,608; see `m2-mcp model plan`)")
    parser.add_argument("--served-model-name", metavar="NAME", help="model name clients send (M2_MODEL); default: --model")
    parser.add_argument("--vllm-version", metavar="X.Y.Z",
                        help="vLLM version the engine runs; picks the reasoning parser that keeps </think> "
                             "(default: serve detects the installed vLLM, k8s reads the image tag)")
    parser.add_argument("extra", nargs="*", metavar="-- ENGINE_FLAGS",
                        help="anything after `--` is passed to the engine unchanged")


def spec_from_args(args) -> EngineSpec:
    """The engine spec from the shared flags; UsageError for a value no engine would take."""
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be from 1 to 65535, not {args.port}")
    if args.max_model_len is not None and args.max_model_len < 1:
        raise UsageError(f"--max-model-len must be a positive number of tokens, not {args.max_model_len}")
    version = getattr(args, "vllm_version", None)
    if version is not None:
        if not re.fullmatch(r"v?\d+\.\d+(\.\d+)?\S*", version.strip()):
            raise UsageError(f"--vllm-version must look like {NEWEST_TESTED_VLLM}, not {version!r}")
        if not version_tuple(OLDEST_TESTED_VLLM) <= version_tuple(version) <= version_tuple(NEWEST_TESTED_VLLM):
            sys.stderr.write(f"m2-mcp: warning: vLLM {version} is outside the tested range ({OLDEST_TESTED_VLLM} "
                             f"to {NEWEST_TESTED_VLLM}); the reasoning parser is chosen as for the nearest tested\n")
    return EngineSpec(
        engine=args.engine, gpus=args.gpus, model=args.model, host=args.host, port=args.port,
        max_model_len=args.max_model_len, served_model_name=args.served_model_name, extra=tuple(args.extra),
        vllm_version=getattr(args, "vllm_version", None),
    )
