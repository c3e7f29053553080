"""`m2-mcp serve`: the MCP server over stdio (default), legacy SSE or streamable HTTP."""

from __future__ import annotations

import logging
import os
import sys

from m2_mcp.transport import DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV, TRANSPORTS

HELP = "run the MCP server (stdio, or SSE at /sse, or streamable HTTP at /mcp)"


def add_arguments(parser) -> None:
    parser.add_argument(
        "--transport", choices=TRANSPORTS, default="stdio",
        help="stdio (default; what IDEs launch), sse (legacy SSE at /sse) or http (streamable HTTP at /mcp)",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST,
        help=f"address to bind for sse/http (default {DEFAULT_HOST}); any non-loopback address "
        f"requires {TOKEN_ENV}, which clients then send as 'Authorization: Bearer <token>'",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port for sse/http (default {DEFAULT_PORT})")
    parser.add_argument("--repo", help="repository root (default: $M2_REPO, else the current directory)")
    from m2_mcp.sandbox import add_arguments as add_sandbox_arguments

    add_sandbox_arguments(parser)
    parser.epilog = (
        "HTTP endpoints: /mcp or /sse, /health, /metrics (Prometheus). Requests with a non-local "
        f"Origin are refused. With {TOKEN_ENV} set, every request except /health needs the bearer token."
    )


def run(args) -> int:
    from m2_mcp.errors import UsageError
    from m2_mcp.repo import Repo
    from m2_mcp.transport import check_bind, serve

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    repo = Repo.open(args.repo)
    from m2_mcp.envcheck import check_env

    check_env()  # a bad numeric setting is one line now, not a surprise in the middle of a task
    token = os.environ.get(TOKEN_ENV) or None
    if args.transport != "stdio":
        check_bind(args.host, token)
    setup_logging(debug=getattr(args, "debug", False))
    from m2_mcp.sandbox import apply_cli

    apply_cli(args)  # --sandbox-network; a one-line warning when commands will not be sandboxed
    if not _in_git_work_tree(repo.root):
        sys.stderr.write(f"m2-mcp: warning: {repo.root} is not a git repository: the file tools work, but "
                         "git_status, git_diff, apply_patch and m2_task need one (git init)\n")

    from m2_mcp.delegate import TaskRunner, register
    from m2_mcp.server import build_server

    # m2_task, m2_task_status, m2_task_cancel: M2 as a delegate. Over SSE the SDK enters the
    # lifespan per connection, so background tasks must not end when one client disconnects.
    runner = TaskRunner(repo, keep_alive=args.transport == "sse")
    server = build_server(repo, extra_tools=[register(runner)], lifespan=runner.lifespan)
    if args.transport == "stdio":  # stdout is the protocol; one line on stderr says we are up
        sys.stderr.write(f"m2-mcp: serving {repo.root} over stdio; waiting for an MCP client\n")
        sys.stderr.flush()
    serve(server, args.transport, args.host, args.port, token)
    return 0


def _in_git_work_tree(root) -> bool:
    import git

    try:
        return git.Repo(root, search_parent_directories=True).working_tree_dir is not None
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return False


def setup_logging(debug: bool) -> None:
    """Diagnostics go to stderr (stdout is the protocol on stdio); warnings only unless --debug."""
    from m2_mcp.redact import LogFilter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("m2-mcp: %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(LogFilter())  # secret values never reach the log
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
