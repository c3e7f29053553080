"""`m2-mcp runs`: the run ledger (past `fix` and `m2_task` runs), and a per-day cost summary for budget alerts."""

from __future__ import annotations

HELP = "list past agent runs, or summarize runs, tokens and cost per day (--summary)"


def add_arguments(parser) -> None:
    from m2_mcp.commands import finite_float

    parser.add_argument("--limit", type=int, default=20, metavar="N", help="show the N newest runs (default 20)")
    parser.add_argument("--repo", metavar="DIR", help="only runs in this repository")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--summary", action="store_true", help="runs, success rate, tokens and cost per day")
    parser.add_argument("--days", type=int, default=7, metavar="N", help="days in the summary (default 7)")
    parser.add_argument("--budget-usd", type=finite_float, metavar="X",
                        help="with --summary (implied): exit 1 if today's cost exceeds X dollars")


def run(args) -> int:
    import json
    import sys

    from m2_mcp import ledger
    from m2_mcp.errors import UsageError

    if not 1 <= args.limit <= 1_000_000:
        raise UsageError("--limit must be from 1 to 1000000")
    if not 1 <= args.days <= 36_500:
        raise UsageError("--days must be from 1 to 36500")
    if args.budget_usd is not None and args.budget_usd < 0:
        raise UsageError("--budget-usd must not be negative")
    if args.budget_usd is not None or args.summary:
        if args.repo:
            raise UsageError("--repo applies to the run list, not to --summary")
        report = ledger.summary(args.days)
        if args.json:
            print(json.dumps(report, indent=2))
        elif report["totals"]["runs"]:
            print(_summary_table(report))
        else:
            print(f"No runs in the last {args.days} day(s) (ledger: {ledger.ledger_path()}).")
        spent = report["today"]["cost_usd"]
        if args.budget_usd is not None and spent > args.budget_usd:
            sys.stderr.write(f"m2-mcp: budget exceeded: today's cost ${spent:.4f} > budget ${args.budget_usd:.4f}\n")
            return 1
        return 0

    _sweep_interrupted()
    runs = ledger.list_runs(args.limit, args.repo, with_result=args.json)
    if args.json:
        print(json.dumps(runs, indent=2))
    elif runs:
        print(_runs_table(runs))
    else:
        where = f" for {args.repo}" if args.repo else ""
        print(f"No runs recorded yet{where} (ledger: {ledger.ledger_path()}). "
              "Runs of 'm2-mcp fix' and the m2_task tool are recorded here.")
    return 0


def _sweep_interrupted() -> None:
    """Tasks whose server died (killed, crashed) are recorded as `interrupted` before listing."""
    import contextlib

    from m2_mcp.taskstore import TaskStore

    with contextlib.suppress(Exception):  # listing must work even if the task state is unreadable
        TaskStore().sweep_orphans()


def _tokens(n: int) -> str:
    return f"{n / 1_000_000:.1f}M" if n >= 1_000_000 else f"{n / 1000:.1f}k" if n >= 1000 else str(n)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for r in [header, *rows]:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _runs_table(runs: list[dict]) -> str:
    from datetime import datetime

    rows = []
    for r in runs:
        task = " ".join(r["task"].split())
        rows.append([
            datetime.fromtimestamp(r["started_at"]).strftime("%Y-%m-%d %H:%M"), r["status"], str(r["steps"]),
            _tokens(r["prompt_tokens"] + r["completion_tokens"]), f"${r['cost_usd']:.4f}", _duration(r["duration_s"]),
            r["branch"] or "-", task if len(task) <= 48 else task[:47] + "…",
        ])
    return _table(["WHEN", "STATUS", "STEPS", "TOKENS", "COST", "TIME", "BRANCH", "TASK"], rows, {2, 3, 4, 5})


def _summary_table(report: dict) -> str:
    def cells(label: str, d: dict) -> list[str]:
        return [label, str(d["runs"]), str(d["fixed"]), f"{d['success_rate']:.0%}", _tokens(d["prompt_tokens"]),
                _tokens(d["completion_tokens"]), f"${d['cost_usd']:.4f}"]

    rows = [cells(d["day"], d) for d in report["days"]]
    rows.append(cells(f"total since {report['since']}", report["totals"]))
    header = ["DAY", "RUNS", "FIXED", "SUCCESS", "PROMPT", "COMPLETION", "COST"]
    return _table(header, rows, {1, 2, 3, 4, 5, 6})
