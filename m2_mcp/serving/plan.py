"""GPU memory arithmetic for MiniMax-M2: do the weights fit, and how many KV-cache tokens remain.

Figures from MiniMax's deployment guides: ~220 GB of weights, ~240 GB of KV cache per
1M context tokens, a 196,608-token window per request. Per GPU we count
`gpu_mem x gpu_mem_util` (as vLLM's --gpu-memory-utilization does) and reserve
RESERVE_GB_PER_GPU of that for what is not weights or KV cache (activation peak,
CUDA graphs, NCCL buffers). With that reserve the guides' two configurations come
out as documented: 4 x 96 GB -> ~400K tokens, 8 x 144 GB -> ~3M tokens.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field

from m2_mcp.serving.engine import EngineSpec, engine_args, tuning_args

WEIGHTS_GB = 220.0
KV_GB_PER_M_TOKENS = 240.0
WINDOW = 196_608  # M2's max context per request
RESERVE_GB_PER_GPU = 8.0
CHUNKED_PREFILL_ABOVE = 32_768  # long contexts: prefill in chunks so decodes keep flowing
MIN_USEFUL_CONTEXT = 8_192


@dataclass
class Plan:
    gpus: int
    gpu_mem_gb: float
    gpu_mem_util: float
    reserve_gb_per_gpu: float
    concurrency: int
    usable_gb: float
    weights_gb: float
    kv_gb: float
    kv_tokens: int
    per_request_tokens: int  # max context per request with `concurrency` requests at once
    max_model_len: int | None
    fits: bool
    reasons: list[str] = field(default_factory=list)
    engine_args: list[str] = field(default_factory=list)  # after `vllm serve` / `python -m sglang.launch_server`
    serve_command: list[str] = field(default_factory=list)  # the same through `m2-mcp model serve`

    def to_dict(self) -> dict:
        return asdict(self)


def make_plan(gpus: int, gpu_mem_gb: float, *, context: int | None = None, concurrency: int | None = None,
              gpu_mem_util: float = 0.9, engine: str = "vllm", reserve_gb_per_gpu: float = RESERVE_GB_PER_GPU) -> Plan:
    """Plan for `gpus` GPUs of `gpu_mem_gb` each; `concurrency` None means one request (and no --max-num-seqs)."""
    k = concurrency or 1
    usable = gpus * (gpu_mem_gb * gpu_mem_util - reserve_gb_per_gpu)
    kv_gb = usable - WEIGHTS_GB
    kv_tokens = max(0, int(kv_gb / KV_GB_PER_M_TOKENS * 1_000_000))
    per_request = min(WINDOW, kv_tokens // k)
    reasons = []
    if kv_gb <= 0:
        reasons.append(f"the weights ({WEIGHTS_GB:.0f} GB) do not fit in {usable:.1f} GB usable GPU memory")
    elif context is not None:
        if context > WINDOW:
            reasons.append(f"--context {context:,} is above M2's window of {WINDOW:,} tokens")
        elif context * k > kv_tokens:
            reasons.append(f"{k} requests x {context:,} tokens need {context * k:,} KV tokens, only {kv_tokens:,} fit: "
                           f"lower --concurrency to {kv_tokens // context} or --context to {kv_tokens // k:,}, "
                           f"or add GPU memory")
    elif per_request < MIN_USEFUL_CONTEXT:
        reasons.append(f"only {per_request:,} tokens per request at {k} concurrent requests "
                       f"(under {MIN_USEFUL_CONTEXT:,}): lower --concurrency or add GPU memory")
    fits = not reasons
    max_model_len = (context if context is not None else per_request // 1024 * 1024) if fits else None
    args: list[str] = []
    serve: list[str] = []
    if fits:
        tuning = tuning_args(engine, concurrency, gpu_mem_util, max_model_len > CHUNKED_PREFILL_ABOVE)
        args = engine_args(EngineSpec(engine=engine, gpus=gpus, max_model_len=max_model_len, extra=tuple(tuning)))
        serve = ["m2-mcp", "model", "serve", "--engine", engine, "--gpus", str(gpus),
                 "--max-model-len", str(max_model_len), "--", *tuning]
    return Plan(
        gpus=gpus, gpu_mem_gb=gpu_mem_gb, gpu_mem_util=gpu_mem_util, reserve_gb_per_gpu=reserve_gb_per_gpu,
        concurrency=k, usable_gb=round(usable, 1), weights_gb=WEIGHTS_GB, kv_gb=round(max(kv_gb, 0.0), 1),
        kv_tokens=kv_tokens, per_request_tokens=per_request, max_model_len=max_model_len,
        fits=fits, reasons=reasons, engine_args=args, serve_command=serve,
    )


def short_tokens(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1_000_000 else f"{n / 1e3:.0f}K"


def render(plan: Plan, command: str) -> str:
    """Human-readable plan; `command` is the engine's shell line (empty when it doesn't fit)."""
    p = plan
    lines = [
        f"MiniMax-M2 on {p.gpus} x {p.gpu_mem_gb:g} GB",
        f"  usable:    {p.gpus} x ({p.gpu_mem_gb:g} GB x {p.gpu_mem_util:g} - {p.reserve_gb_per_gpu:g} GB reserved) "
        f"= {p.usable_gb:,.1f} GB",
        "             (reserved per GPU: activation peak, CUDA graphs, NCCL buffers; an estimate, vLLM measures it at start-up)",
        f"  weights:   {p.weights_gb:.0f} GB",
        f"  KV cache:  {p.kv_gb:,.1f} GB -> {p.kv_tokens:,} tokens in total (~{short_tokens(p.kv_tokens)}; "
        f"{KV_GB_PER_M_TOKENS:.0f} GB per 1M tokens)",
        f"  per request at {p.concurrency} concurrent: {p.per_request_tokens:,} tokens"
        + (" (M2's window)" if p.per_request_tokens == WINDOW else ""),
    ]
    if p.fits:
        lines.append(f"fits: yes, --max-model-len {p.max_model_len:,}")
        lines += ["command:", f"  {command}", "or, through m2-mcp:", f"  {shlex.join(p.serve_command)}"]
    else:
        lines += [f"fits: no: {reason}" for reason in p.reasons]
    return "\n".join(lines)
