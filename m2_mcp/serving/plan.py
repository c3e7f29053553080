"""GPU memory arithmetic for MiniMax-M2: do the weights fit, how many KV-cache tokens remain, and
for a team, how many replicas (and nodes per replica) N concurrent agent runs need.

Figures from MiniMax's deployment guides (the vLLM guide, MiniMax-M2 on Hugging Face): ~220 GB
of weights, ~240 GB of KV cache per 1M context tokens (FP8), a 196,608-token window per request. Per GPU we count
`gpu_mem x gpu_mem_util` (as vLLM's --gpu-memory-utilization does) and reserve
RESERVE_GB_PER_GPU of that for what is not weights or KV cache (activation peak,
CUDA graphs, NCCL buffers). With that reserve the guides' two configurations come
out as documented: 4 x 96 GB -> ~400K tokens, 8 x 144 GB -> ~3M tokens.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field

from m2_mcp.serving.engine import GPU_COUNTS, EngineSpec, engine_args, tuning_args

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


def capacity(gpus: int, gpu_mem_gb: float, gpu_mem_util: float = 0.9,
             reserve_gb_per_gpu: float = RESERVE_GB_PER_GPU) -> tuple[float, float, int]:
    """(usable GB, KV-cache GB, KV-cache tokens) of one model instance over `gpus` GPUs in all."""
    usable = round(gpus * (gpu_mem_gb * gpu_mem_util - reserve_gb_per_gpu), 6)  # round: 313.6, not 313.59999
    kv_gb = round(usable - WEIGHTS_GB, 6)
    return usable, kv_gb, max(0, int(round(kv_gb * 1_000_000 / KV_GB_PER_M_TOKENS, 3)))


def make_plan(gpus: int, gpu_mem_gb: float, *, context: int | None = None, concurrency: int | None = None,
              gpu_mem_util: float = 0.9, engine: str = "vllm", reserve_gb_per_gpu: float = RESERVE_GB_PER_GPU) -> Plan:
    """Plan for `gpus` GPUs of `gpu_mem_gb` each; `concurrency` None means one request (and no --max-num-seqs)."""
    k = concurrency or 1
    usable, kv_gb, kv_tokens = capacity(gpus, gpu_mem_gb, gpu_mem_util, reserve_gb_per_gpu)
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


# ---- a team: N agent runs at once --------------------------------------------------------------------
# An agent run has one request in flight at a time, and each step extends the last one's prompt. Sizing
# every run's whole context into the KV cache at once keeps each run's history cached between its steps
# (the router keeps a run on one replica), so a step prefills only what is new.

MAX_NODES = 2  # how far the plan looks for nodes per instance


@dataclass
class TeamPlan:
    runs: int
    context: int
    gpus_per_node: int
    gpu_mem_gb: float
    gpu_mem_util: float
    reserve_gb_per_gpu: float
    nodes: int                 # nodes per instance
    usable_gb: float           # per instance
    kv_gb: float
    kv_tokens: int
    runs_per_instance: int
    replicas: int
    total_gpus: int
    fits: bool
    multinode: str = ""        # why several nodes per instance are needed, or worth it
    reasons: list[str] = field(default_factory=list)
    k8s_command: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _team(runs: int, context: int, gpus: int, gpu_mem_gb: float, nodes: int, util: float, reserve: float,
          engine: str) -> TeamPlan:
    usable, kv_gb, kv_tokens = capacity(gpus * nodes, gpu_mem_gb, util, reserve)
    per_instance = kv_tokens // context
    replicas = -(-runs // per_instance) if per_instance else 0
    reasons = []
    if kv_gb <= 0:
        reasons.append(f"the weights ({WEIGHTS_GB:.0f} GB) do not fit in {usable:,.1f} GB usable GPU memory")
    elif not per_instance:
        reasons.append(f"one run of {context:,} tokens needs more KV cache than the {kv_tokens:,} tokens left")
    command: list[str] = []
    if not reasons:
        k = min(per_instance, runs)
        tuning = tuning_args(engine, k, util, context > CHUNKED_PREFILL_ABOVE)
        command = ["m2-mcp", "model", "k8s", "--engine", engine, "--gpus", str(gpus)]
        command += (["--nodes", str(nodes)] if nodes > 1 else []) + ["--replicas", str(replicas)]
        command += ["--max-model-len", str(context), "--", *tuning]
    return TeamPlan(runs=runs, context=context, gpus_per_node=gpus, gpu_mem_gb=gpu_mem_gb, gpu_mem_util=util,
                    reserve_gb_per_gpu=reserve, nodes=nodes, usable_gb=usable, kv_gb=max(kv_gb, 0.0),
                    kv_tokens=kv_tokens, runs_per_instance=per_instance, replicas=replicas,
                    total_gpus=replicas * gpus * nodes, fits=not reasons, reasons=reasons, k8s_command=command)


def make_team_plan(runs: int, context: int, gpus: int, gpu_mem_gb: float, *, nodes: int | None = None,
                   gpu_mem_util: float = 0.9, engine: str = "vllm",
                   reserve_gb_per_gpu: float = RESERVE_GB_PER_GPU) -> TeamPlan:
    """Replicas of `nodes` nodes x `gpus` GPUs for `runs` concurrent agent runs of `context` tokens each.
    `nodes` None: one node per instance, or the fewest nodes that hold one run when one node cannot."""
    if context > WINDOW:
        plan = _team(runs, context, gpus, gpu_mem_gb, nodes or 1, gpu_mem_util, reserve_gb_per_gpu, engine)
        plan.fits, plan.k8s_command = False, []
        plan.reasons = [f"--context {context:,} is above M2's window of {WINDOW:,} tokens"]
        return plan
    options = [_team(runs, context, gpus, gpu_mem_gb, n, gpu_mem_util, reserve_gb_per_gpu, engine)
               for n in range(1, MAX_NODES + 1)]
    if nodes is not None:
        plan = _team(runs, context, gpus, gpu_mem_gb, nodes, gpu_mem_util, reserve_gb_per_gpu, engine)
    else:
        plan = next((p for p in options if p.fits), options[0])
    single, multi = options[0], options[-1]
    if plan.fits and plan.nodes > 1 and not single.fits:
        plan.multinode = (f"needed: one node of {gpus} x {gpu_mem_gb:g} GB cannot hold one run "
                          f"({single.reasons[0]})")
    elif gpus == max(GPU_COUNTS) and single.fits and multi.fits and multi.total_gpus < single.total_gpus:
        plan.multinode = (f"worth it: instances of {multi.nodes} nodes hold the weights once per "
                          f"{multi.nodes * gpus} GPUs and need {multi.total_gpus} GPUs in all instead of "
                          f"{single.total_gpus}; memory only: fewer GPUs is less compute per run, and the "
                          "pipeline stages talk over the network")
    elif plan.fits and plan.nodes > 1:
        plan.multinode = (f"as asked (--nodes {plan.nodes}); not needed: one node of {gpus} x {gpu_mem_gb:g} GB "
                          "holds a run")
    return plan


def render_team(p: TeamPlan) -> str:
    """Human-readable team plan, with the arithmetic."""
    instance = f"{p.nodes} x {p.gpus_per_node}" if p.nodes > 1 else f"{p.gpus_per_node}"
    g = p.gpus_per_node * p.nodes
    lines = [
        f"MiniMax-M2 for {p.runs} agent runs at once, up to {p.context:,} tokens of context each",
        f"  figures: weights ~{WEIGHTS_GB:.0f} GB, KV cache ~{KV_GB_PER_M_TOKENS:.0f} GB per 1M tokens (FP8), "
        "from MiniMax's vLLM deployment guide",
        f"one instance: {instance} x {p.gpu_mem_gb:g} GB" + (f" ({p.nodes} nodes)" if p.nodes > 1 else ""),
        f"  usable:    {g} x ({p.gpu_mem_gb:g} GB x {p.gpu_mem_util:g} - {p.reserve_gb_per_gpu:g} GB reserved) "
        f"= {p.usable_gb:,.1f} GB",
        f"  KV cache:  {p.usable_gb:,.1f} - {WEIGHTS_GB:.0f} GB weights = {p.kv_gb:,.1f} GB -> "
        f"{p.kv_gb:,.1f} / {KV_GB_PER_M_TOKENS:.0f} x 1M = {p.kv_tokens:,} tokens",
        f"  runs per instance: {p.kv_tokens:,} // {p.context:,} = {p.runs_per_instance}",
    ]
    if not p.fits:
        return "\n".join(lines + [f"fits: no: {reason}" for reason in p.reasons])
    lines += [
        f"replicas: ceil({p.runs} / {p.runs_per_instance}) = {p.replicas} -> {p.replicas} x {g} = {p.total_gpus} GPUs",
        f"multi-node: {p.multinode}" if p.multinode else "multi-node: not needed",
        "deploy (vllm-router in front when there is more than one replica):",
        f"  {shlex.join(p.k8s_command)}",
    ]
    return "\n".join(lines)
