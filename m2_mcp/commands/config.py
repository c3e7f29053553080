"""`m2-mcp config CLIENT [--write]`: the client's MCP config for this server (stdio)."""

from __future__ import annotations

import sys

HELP = "print (or --write into the project) an IDE client's MCP config for this server"

CLIENT_NAMES = ("cursor", "claude-code", "vscode", "codex")


def add_arguments(parser) -> None:
    parser.add_argument("client", choices=CLIENT_NAMES,
                        help="cursor (.cursor/mcp.json), claude-code (.mcp.json), vscode (.vscode/mcp.json) "
                        "or codex (.codex/config.toml)")
    parser.add_argument("--write", action="store_true",
                        help="merge the server (key 'm2') into that file in the repo, keeping other servers, "
                        "and your own keys and env variables on the m2 entry")
    parser.add_argument("--repo", help="repository root (default: $M2_REPO, else the current directory)")
    parser.epilog = (
        "The server entry runs '<m2-mcp> serve --repo <repo>' over stdio and passes M2_BASE_URL and M2_MODEL "
        "when they are set (never an API key). Claude Code, same server from the command line: "
        "claude mcp add -s project m2 -- m2-mcp serve --repo /path/to/repo"
    )


def run(args) -> int:
    from m2_mcp import clients
    from m2_mcp.repo import Repo

    repo = Repo.open(args.repo).root
    if not args.write:
        sys.stdout.write(clients.snippet(repo, args.client))
        if args.client == "claude-code":
            sys.stderr.write(f"m2-mcp: or run: {clients.claude_add_command(repo)}\n")
        return 0
    path = clients.write_config(repo, args.client)
    sys.stdout.write(f"m2-mcp: wrote server '{clients.SERVER_KEY}' to {path}\n")
    return 0
