"""`m2-mcp model serve|plan|k8s`: run MiniMax-M2 on your GPUs (vLLM or SGLang), size it, deploy it."""

from __future__ import annotations

import argparse
import sys

HELP = "run MiniMax-M2 on your GPUs: serve (start or --dry-run), plan (memory), k8s (manifest)"

SERVE_HELP = ("start vLLM (or SGLang) for MiniMax-M2 with M2's tool-call and reasoning parsers, wait until it "
              "answers, check one tool call, print the M2_BASE_URL to use; Ctrl-C stops it. "
              "Exit 0 stopped on request, 1 the engine failed or exited, 2 engine not installed/bad flag.")
PLAN_HELP = ("does MiniMax-M2 fit on these GPUs, how many KV-cache tokens are left, and which flags to use; "
             "with --runs N, the replicas, nodes and GPUs for N agent runs at once (exit 0 fits, 1 does not fit)")
K8S_HELP = ("print a Kubernetes manifest for MiniMax-M2: the engine (Deployment, or LeaderWorkerSet with --nodes 2), "
            "model-cache PVC, Service, optional HPA, and vllm-router in front when there is more than one replica")


def add_arguments(parser) -> None:
    from m2_mcp.commands import finite_float

    from m2_mcp.serving.engine import ENGINES, GPU_COUNTS, add_engine_arguments
    from m2_mcp.serving.k8s import ROUTER_IMAGE, ROUTER_PACKAGE, ROUTER_POLICIES, ROUTERS

    sub = parser.add_subparsers(dest="model_command", metavar="SUBCOMMAND", parser_class=type(parser))

    def subparser(name: str, help: str, run):
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
        p.set_defaults(_model_run=run)
        return p

    serve = subparser("serve", SERVE_HELP, _serve)
    add_engine_arguments(serve, host_note="; vLLM's own default is 0.0.0.0, so pass --host 0.0.0.0 to serve "
                         "other machines")
    serve.add_argument("--dry-run", action="store_true", help="print the exact command and environment, then exit")
    serve.add_argument("--timeout", type=finite_float, default=1800, metavar="SECONDS",
                       help="how long to wait for the engine to load and answer /health (default 1800)")

    plan = subparser("plan", PLAN_HELP, _plan)
    plan.add_argument("--gpus", type=int, choices=GPU_COUNTS, required=True, help="GPUs per node (4 or 8)")
    plan.add_argument("--gpu-mem", type=finite_float, required=True, metavar="GB", help="memory per GPU in GB (e.g. 96)")
    plan.add_argument("--context", type=int, metavar="TOKENS",
                      help="context per request (with --runs: per agent run, default M2's window 196,608; "
                           "without: default as much as fits)")
    plan.add_argument("--concurrency", type=int, metavar="K", help="requests served at once (sets --max-num-seqs)")
    plan.add_argument("--runs", type=int, metavar="N",
                      help="plan for a team: N agent runs at once; prints replicas, GPUs and the `model k8s` command")
    plan.add_argument("--nodes", type=int, metavar="N",
                      help="nodes per model instance (with --runs; default: 1, or 2 when one node cannot hold a run)")
    plan.add_argument("--gpu-mem-util", type=finite_float, default=0.9, metavar="FRACTION",
                      help="share of each GPU the engine may use, like vLLM's --gpu-memory-utilization (default 0.9)")
    plan.add_argument("--engine", choices=ENGINES, default="vllm", help="engine whose flags to print (default vllm)")
    plan.add_argument("--json", action="store_true", help="machine-readable output")

    k8s = subparser("k8s", K8S_HELP, _k8s)
    add_engine_arguments(k8s, host_default="0.0.0.0", host_note=": the pod must accept traffic from its Service")
    k8s.add_argument("--name", default="minimax-m2", help="name of the Kubernetes objects (default minimax-m2)")
    k8s.add_argument("--namespace", default="default", help="namespace (default default)")
    k8s.add_argument("--image", help="container image (default vllm/vllm-openai:v0.11.2 or lmsysorg/sglang:v0.5.4.post3)")
    k8s.add_argument("--replicas", type=int, default=1, help="replicas (default 1; the HPA takes over with --hpa)")
    k8s.add_argument("--nodes", type=int, default=1,
                     help="nodes per replica (default 1); 2 or more: one instance spans nodes of --gpus GPUs each "
                          "(a LeaderWorkerSet: install LWS in the cluster)")
    k8s.add_argument("--router", choices=ROUTERS,
                     help="router in front of the replicas (default: vllm-router when --replicas > 1 or --hpa, else "
                          "none); none: a plain Service")
    k8s.add_argument("--router-policy", choices=ROUTER_POLICIES, default="consistent_hash",
                     help="vllm-router policy (default consistent_hash: one agent run, one replica, by X-Session-Id)")
    k8s.add_argument("--router-image", default=ROUTER_IMAGE,
                     help=f"router image (default {ROUTER_IMAGE}; {ROUTER_PACKAGE} is installed at start unless "
                          "the image has it)")
    k8s.add_argument("--hpa", action="store_true", help="add a HorizontalPodAutoscaler on the engine's queue length")
    k8s.add_argument("--min-replicas", type=int, default=1, help="HPA minimum (default 1)")
    k8s.add_argument("--max-replicas", type=int, default=4, help="HPA maximum (default 4)")
    cache = k8s.add_mutually_exclusive_group()
    cache.add_argument("--cache-pvc", default="minimax-m2-cache", metavar="NAME",
                       help="PersistentVolumeClaim for the Hugging Face cache, created by the manifest (default minimax-m2-cache)")
    cache.add_argument("--cache-host-path", metavar="DIR", help="use this node directory for the model cache instead of a PVC")
    k8s.add_argument("--cache-size", default="300Gi", help="PVC size (default 300Gi; the weights are ~220 GB)")


def run(args) -> int:
    handler = getattr(args, "_model_run", None)
    if handler is None:
        from m2_mcp.errors import UsageError

        raise UsageError("choose serve, plan or k8s (see 'm2-mcp model --help')")
    return handler(args)


def _serve(args) -> int:
    from m2_mcp.errors import UsageError
    from m2_mcp.serving.engine import ENV, engine_command, shell_line, spec_from_args
    from m2_mcp.serving.launch import serve, with_vllm_version

    spec = with_vllm_version(spec_from_args(args))
    if args.dry_run:
        print(shell_line(engine_command(spec), ENV))
        return 0
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    return serve(spec, ready_timeout=args.timeout)


def _plan(args) -> int:
    import json

    from m2_mcp.errors import UsageError
    from m2_mcp.serving.engine import plain_command, shell_line
    from m2_mcp.serving.plan import make_plan, render

    if args.gpu_mem <= 0 or not 0 < args.gpu_mem_util <= 1:
        raise UsageError("--gpu-mem must be positive and --gpu-mem-util in (0, 1]")
    if any(v is not None and v <= 0 for v in (args.context, args.concurrency, args.runs, args.nodes)):
        raise UsageError("--context, --concurrency, --runs and --nodes must be positive")
    if args.runs is not None or args.nodes is not None:
        return _team_plan(args)
    plan = make_plan(args.gpus, args.gpu_mem, context=args.context, concurrency=args.concurrency,
                     gpu_mem_util=args.gpu_mem_util, engine=args.engine)
    command = shell_line(plain_command(args.engine) + plan.engine_args) if plan.fits else ""
    if args.json:
        print(json.dumps({**plan.to_dict(), "command": command}, indent=2))
    else:
        print(render(plan, command))
    return 0 if plan.fits else 1


def _team_plan(args) -> int:
    import json

    from m2_mcp.errors import UsageError
    from m2_mcp.serving.plan import WINDOW, make_team_plan, render_team

    if args.concurrency is not None:
        raise UsageError("--concurrency is per instance: with --runs the plan works it out")
    plan = make_team_plan(args.runs or 1, args.context or WINDOW, args.gpus, args.gpu_mem, nodes=args.nodes,
                          gpu_mem_util=args.gpu_mem_util, engine=args.engine)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else render_team(plan))
    return 0 if plan.fits else 1


def _k8s(args) -> int:
    from m2_mcp.errors import UsageError
    from m2_mcp.serving.engine import spec_from_args
    from m2_mcp.serving.k8s import manifest, to_yaml

    if args.replicas < 1 or args.min_replicas < 1 or args.max_replicas < args.min_replicas:
        raise UsageError("need --replicas >= 1 and 1 <= --min-replicas <= --max-replicas")
    if args.nodes < 1:
        raise UsageError("--nodes must be 1 or more")
    import re

    # Kubernetes names (RFC 1123 labels); the objects add suffixes such as `-router-discovery` to --name
    label = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
    for flag, value, longest in (("--name", args.name, 40), ("--namespace", args.namespace, 63),
                                 ("--cache-pvc", args.cache_pvc or "x", 63)):
        if not label.fullmatch(value) or len(value) > longest:
            raise UsageError(f"{flag} must be lowercase letters, digits and '-', starting and ending with a letter "
                             f"or digit, at most {longest} characters: {value!r}")
    if not re.fullmatch(r"\d+(\.\d+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?", args.cache_size):
        raise UsageError(f"--cache-size must be a Kubernetes quantity such as 300Gi, not {args.cache_size!r}")
    docs = manifest(
        spec_from_args(args), name=args.name, namespace=args.namespace, image=args.image,
        replicas=args.min_replicas if args.hpa else args.replicas, nodes=args.nodes, hpa=args.hpa,
        min_replicas=args.min_replicas, max_replicas=args.max_replicas, cache_pvc=args.cache_pvc,
        cache_size=args.cache_size, cache_host_path=args.cache_host_path, router=args.router,
        router_policy=args.router_policy, router_image=args.router_image,
    )
    sys.stdout.write(to_yaml(docs))
    return 0
