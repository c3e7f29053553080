"""The `m2-mcp` command line: a thin layer over the core; each command lives in m2_mcp/commands/."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from m2_mcp import __version__
from m2_mcp.errors import M2Error

ERROR = "m2-mcp: error: "  # the one prefix of every error line, whatever the subcommand

# (command, module): each module has HELP, add_arguments(parser) and run(args) -> exit code.
COMMANDS = [
    ("serve", "m2_mcp.commands.serve"),
    ("fix", "m2_mcp.commands.fix"),
    ("model", "m2_mcp.commands.model"),
    ("doctor", "m2_mcp.commands.doctor"),
    ("config", "m2_mcp.commands.config"),
    ("runs", "m2_mcp.commands.runs"),
    ("undo", "m2_mcp.commands.undo"),
    ("demo", "m2_mcp.commands.demo"),
]


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit code 2 (the contract's usage error)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{ERROR}{message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def build_parser() -> Parser:
    parser = Parser(
        prog="m2-mcp",
        description="MCP server and coding agent for MiniMax-M2 (vLLM, SGLang or MiniMax's API).",
        epilog="Exit codes: 0 success, 1 job ran but did not succeed, 2 usage/config error, "
        "3 model endpoint unreachable. Endpoint: --base-url/M2_BASE_URL, --model/M2_MODEL, "
        "key from M2_API_KEY or OPENAI_API_KEY.",
    )
    parser.add_argument("--version", action="version", version=f"m2-mcp {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, module_name in COMMANDS:
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except M2Error as exc:
        if args.debug:
            raise
        sys.stderr.write(f"{ERROR}{exc}\n")
        return exc.exit_code
    except BrokenPipeError:  # the reader went away (`| head`): end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("m2-mcp: interrupted\n")
        return 130
    except Exception as exc:  # one line at the user, never a traceback unless --debug
        if args.debug:
            raise
        sys.stderr.write(f"{ERROR}{type(exc).__name__}: {exc} (rerun with --debug for details)\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
