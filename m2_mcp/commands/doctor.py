"""`m2-mcp doctor`: check the model endpoint and this machine, one line per check with the fix to try."""

from __future__ import annotations

HELP = ("check the model endpoint (reachable, model served, a tool call parses, thinking comes back) and this "
        "machine (git, ripgrep, the test command as it will run, command sandbox (bubblewrap), repo). "
        "Exit 0 all required checks pass, 1 a required check failed, 3 no model endpoint is reachable.")


def add_arguments(parser) -> None:
    from m2_mcp.commands import finite_float

    from m2_mcp.endpoint import add_endpoint_arguments

    add_endpoint_arguments(parser)
    parser.add_argument("--repo", help="repository to inspect (env M2_REPO; default current directory)")
    parser.add_argument("--timeout", type=finite_float, default=5.0, metavar="SECONDS",
                        help="per-request timeout for the endpoint (default 5; the tool-call round trip gets 6x)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.epilog = "✓ passed  ✗ failed (required)  ! optional, worth fixing  - skipped. The API key is never shown."


def run(args) -> int:
    from m2_mcp import doctor
    from m2_mcp.endpoint import endpoints_from
    from m2_mcp.errors import UsageError

    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    endpoints = endpoints_from(args.base_url, args.model)
    if not endpoints:
        raise UsageError("no base URL given (--base-url / M2_BASE_URL)")
    checks = doctor.endpoint_checks(endpoints, args.timeout) + doctor.local_checks(args.repo)
    if args.json:
        print(doctor.to_json(checks, endpoints))
    else:
        print(f"m2-mcp doctor: {', '.join(e.display for e in endpoints)} (model {endpoints[0].model})")
        print(doctor.render(checks))
    return doctor.exit_code(checks)
