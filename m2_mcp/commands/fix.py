"""`m2-mcp fix`: the headless auto-fix front door for CI bots and terminals."""

from __future__ import annotations

import os
import sys

HELP = "run the M2 agent until the test command passes or a budget ends; result JSON on stdout"

EPILOG = """Prints one progress line per step on stderr and the result JSON (status fixed |
already_passing | failed | budget_exhausted | cancelled | error) on stdout.
Exit codes: 0 tests pass at the end, 1 not fixed (failed, budget exhausted,
cancelled), 2 usage error (bad flag, not a git repo), 3 model endpoint unreachable.
Without --branch, changes stay in the working tree (a checkpoint is taken first:
'm2-mcp undo' restores it). With --branch, the work is committed on that new
branch from a separate worktree; your checkout is not touched."""


def add_arguments(parser) -> None:
    from m2_mcp.commands import finite_float

    from m2_mcp.endpoint import add_endpoint_arguments
    from m2_mcp.repo import DEFAULT_TEST_CMD

    import argparse

    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--repo", help="repository root (env M2_REPO; default: current directory)")
    parser.add_argument("--task", default=None, help='what to do (default: "make the failing tests pass")')
    parser.add_argument("--test-cmd", default=DEFAULT_TEST_CMD, help=f"test command (default: {DEFAULT_TEST_CMD})")
    parser.add_argument("--max-steps", type=int, default=50, help="model turns at most (default: 50)")
    parser.add_argument("--timeout", type=finite_float, default=1800,
                        help="seconds for the run (default: 1800); the deciding test run after it gets at most 30 s more")
    parser.add_argument("--branch", help="work on this new branch in a separate worktree and commit there")
    parser.add_argument("--json-out", help="also write the result JSON to this file")
    parser.add_argument("--allow-test-edits", action="store_true", help="let the agent edit test files")
    add_endpoint_arguments(parser)
    parser.add_argument("--max-cost", type=finite_float, default=None, metavar="USD", help="stop once the run costs this much")
    parser.add_argument("--token-budget", type=int, default=None, metavar="N",
                        help="stop once prompt+completion tokens reach N")
    parser.add_argument("--no-progress", type=int, default=3, metavar="N",
                        help="stop when N test runs in a row fail the same way (default: 3)")
    parser.add_argument("--context-window", type=int, default=196_608, metavar="TOKENS",
                        help="the model's context window; older tool outputs are compacted near it (default: 196608)")
    parser.add_argument("--price-in", type=finite_float, default=None, metavar="USD",
                        help="USD per million prompt tokens (env M2_PRICE_IN; default 0.30)")
    parser.add_argument("--price-out", type=finite_float, default=None, metavar="USD",
                        help="USD per million completion tokens (env M2_PRICE_OUT; default 1.20)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    from m2_mcp.sandbox import add_arguments as add_sandbox_arguments

    add_sandbox_arguments(parser)


def run(args) -> int:
    from pathlib import Path

    import anyio

    from m2_mcp.errors import UsageError

    for name in ("max_steps", "no_progress", "token_budget", "max_cost", "timeout", "price_in", "price_out"):
        value = getattr(args, name)
        if value is not None and (value < 0 if name.startswith("price") else value <= 0):
            raise UsageError(f"--{name.replace('_', '-')} must be {'>= 0' if name.startswith('price') else 'positive'}")
    if args.context_window < 4096:
        raise UsageError("--context-window must be at least 4096 tokens")
    if not args.test_cmd.strip():
        raise UsageError("--test-cmd must not be empty")
    if args.json_out:
        target = Path(args.json_out).expanduser()
        if target.is_dir() or not target.parent.is_dir() or not os.access(target.parent, os.W_OK):
            raise UsageError(f"--json-out: cannot write {target}")
    from m2_mcp.envcheck import check_env
    from m2_mcp.sandbox import apply_cli

    check_env()  # M2_MCP_*, M2_PRICE_*: a bad value now, not after the test suite ran
    apply_cli(args, refuse_unavailable=True)  # every test run would be refused: say so now
    return anyio.run(_run, args)


async def _run(args) -> int:
    import json
    import sys
    import time
    from pathlib import Path

    import anyio

    from m2_mcp.agent.job import DEFAULT_TASK, Job, JobSpec
    from m2_mcp.agent.loop import Limits
    from m2_mcp.agent.model_client import ModelClient
    from m2_mcp.agent.result import RunResult, exit_code_for
    from m2_mcp.endpoint import check_endpoints, endpoints_from
    from m2_mcp.envcheck import number
    from m2_mcp.errors import EndpointError, M2Error
    from m2_mcp.repo import Repo
    from m2_mcp.tools.pyenv import resolve_command

    repo = Repo.open(args.repo)
    limits = Limits(
        max_steps=args.max_steps, timeout_s=args.timeout, max_cost_usd=args.max_cost, max_tokens=args.token_budget,
        no_progress_runs=args.no_progress, context_window=args.context_window,
        price_in=args.price_in if args.price_in is not None else number("M2_PRICE_IN", 0.30),
        price_out=args.price_out if args.price_out is not None else number("M2_PRICE_OUT", 1.20),
    )
    spec = JobSpec(repo=repo.root, task=args.task or DEFAULT_TASK, test_cmd=args.test_cmd, branch=args.branch,
                   allow_test_edits=args.allow_test_edits, limits=limits)
    endpoints = endpoints_from(args.base_url, args.model)
    from m2_mcp.redact import redact

    log = (lambda line: None) if args.quiet else (lambda line: print(redact(line), file=sys.stderr, flush=True))
    client = ModelClient(endpoints)
    job = Job(spec, client, emit=progress_printer(log))  # UsageError for a bad repo or branch
    log(f"m2-mcp fix: {repo.root} via {endpoints[0].display} ({endpoints[0].model})")
    started, started_wall = time.monotonic(), time.time()
    failure: M2Error | None = None
    try:
        # One quick look at the endpoint before the tests run: a dead one is exit 3 in a second
        # (with a result saying so), a wrong model name or key exit 2 (UsageError, raised as is).
        client.start_with(await anyio.to_thread.run_sync(check_endpoints, endpoints))
        log(f"running the tests before the run: {resolve_command(spec.test_cmd, repo.root)}")
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_on_signal, job, log)
            try:
                result = await job.run()
            except M2Error as exc:  # raised below, as itself (not inside an exception group)
                failure = exc
            finally:
                tg.cancel_scope.cancel()
    except EndpointError as exc:
        result = RunResult(status="error", errors=[str(exc)], summary=str(exc))
        job.endpoint_failed = True
    finally:
        await client.aclose()
    if failure is not None:
        raise failure
    duration = time.monotonic() - started
    text = json.dumps(result.model_dump(mode="json"), indent=2)
    # The file and the ledger first: they hold whatever happens to stdout's reader.
    if args.json_out:
        try:
            Path(args.json_out).expanduser().write_text(text + "\n")
        except OSError as exc:
            log(f"m2-mcp: warning: could not write --json-out: {exc}")
    _record(result, spec, started_wall, duration)
    _print_result(text, log)
    if result.status == "error" and result.errors:
        log(f"m2-mcp: error: {result.errors[-1]}")
    log(f"m2-mcp fix: {result.status} after {result.steps} steps, {duration:.1f}s, "
        f"{result.usage.prompt_tokens + result.usage.completion_tokens} tokens, ${result.usage.cost_usd:.4f}")
    return exit_code_for(result, job.endpoint_failed)


def _print_result(text: str, log) -> None:
    """The result on stdout; a reader that went away (`| head`, `| true`) does not change the outcome."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        log("m2-mcp: warning: stdout was closed before the result was written (see --json-out, m2-mcp runs)")


async def _cancel_on_signal(job, log) -> None:
    import signal

    import anyio

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            log("m2-mcp fix: cancelling (signal received)")
            job.cancel()


def progress_printer(log):
    """One line per step on stderr: step, tool, short args, elapsed, tokens."""

    def on_event(event: dict) -> None:
        kind = event.get("type")
        if kind == "step":
            mark = "ok" if event["ok"] else "error"
            log(f"[step {event['step']}/{event['max_steps']}] {event['tool']} {event['args']} -> {mark} "
                f"({event['elapsed']}s, {event['tokens']} tokens)")
        elif kind == "tests_before":
            log(f"tests before: {event['passed']} passed, {event['failed']} failed, {event['errors']} errors")
        elif kind == "tests":
            log(f"  tests: {event['passed']} passed, {event['failed']} failed, {event['errors']} errors")
        elif kind == "retry":
            log(f"  model request failed ({event.get('error')}); retry {event.get('attempt')} of {event.get('retries')}")
        elif kind == "resample":
            log(f"  step {event['step']}: {event['problem']}; sampling the turn again (max_tokens {event['max_tokens']})")
        elif kind == "tool_choice_fallback":
            log(f"  {event['endpoint']} has no tool parser ({event['error']}); "
                "sending tool_choice \"none\" and reading M2's tool-call XML here for the rest of the run")

    return on_event


def _record(result, spec, started_at: float, duration: float) -> None:
    try:
        from m2_mcp.ledger import record_run

        record_run(result.model_dump(mode="json"), task=spec.task, repo=str(spec.repo), source="cli",
                   started_at=started_at, duration_s=duration)
    except Exception as exc:  # the ledger is bookkeeping; never fail a run over it
        import sys

        print(f"m2-mcp: warning: run not recorded in the ledger: {exc}", file=sys.stderr)
