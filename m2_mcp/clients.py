"""IDE client configs for the stdio server: the snippet each client wants, and merge-writing it
into the project's config file without touching other servers or keys."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m2_mcp.errors import UsageError

SERVER_KEY = "m2"
PASSED_ENV = ("M2_BASE_URL", "M2_MODEL")  # never a key: clients inherit M2_API_KEY from their own env
TRANSPORT_KEYS = {"type", "url", "headers", "transport"}  # what says how a client reaches the server
CODEX_TOOL_TIMEOUT_SEC = 600  # Codex's default is 60 s; m2_task runs for minutes


@dataclass(frozen=True)
class ClientFormat:
    name: str
    path: str  # project-relative config file
    top_key: str | None  # JSON: the object holding the servers; None for Codex (TOML)
    with_type: bool  # `"type": "stdio"` in the entry


CLIENTS = {
    "cursor": ClientFormat("cursor", ".cursor/mcp.json", "mcpServers", with_type=False),
    "claude-code": ClientFormat("claude-code", ".mcp.json", "mcpServers", with_type=True),
    "vscode": ClientFormat("vscode", ".vscode/mcp.json", "servers", with_type=True),
    "codex": ClientFormat("codex", ".codex/config.toml", None, with_type=False),
}


def launch_command() -> list[str]:
    """How a client starts this installation: the `m2-mcp` script, else `python -m m2_mcp`."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "m2-mcp" and argv0.is_file():
        return [str(argv0.absolute())]
    sibling = Path(sys.executable).parent / "m2-mcp"  # this Python's own script
    found = str(sibling) if sibling.is_file() else shutil.which("m2-mcp")
    if found:
        return [str(Path(found).absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "m2_mcp"]


def server_entry(repo: Path, client: str) -> dict[str, Any]:
    """The `m2` server entry: command, args, and the endpoint env that is set (never a key)."""
    command, *prefix = launch_command()
    entry: dict[str, Any] = {"type": "stdio"} if CLIENTS[client].with_type else {}
    entry["command"] = command
    entry["args"] = [*prefix, "serve", "--repo", str(repo)]
    env = {name: os.environ[name] for name in PASSED_ENV if os.environ.get(name)}
    if env:
        entry["env"] = env
    return entry


def snippet(repo: Path, client: str) -> str:
    """The config text for `client`, as it would appear in its project file."""
    fmt = CLIENTS[client]
    entry = server_entry(repo, client)
    if fmt.top_key is None:
        return codex_table(entry)
    return json.dumps({fmt.top_key: {SERVER_KEY: entry}}, indent=2) + "\n"


def claude_add_command(repo: Path) -> str:
    """The same server as a `claude mcp add` command line."""
    entry = server_entry(repo, "claude-code")
    env = [arg for name, value in entry.get("env", {}).items() for arg in ("-e", f"{name}={value}")]
    return shlex.join(["claude", "mcp", "add", "-s", "project", *env, SERVER_KEY, "--", entry["command"], *entry["args"]])


# --- TOML (Codex) ---------------------------------------------------------------------------

def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # JSON string escapes are valid TOML basic strings


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_str(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return _toml_str(str(value))


def codex_table(entry: dict[str, Any]) -> str:
    """`[mcp_servers.m2]` with command, args and the timeout first, then any other keys (the user's)."""
    entry = {"tool_timeout_sec": CODEX_TOOL_TIMEOUT_SEC, **entry}
    order = ["command", "args", "tool_timeout_sec"]
    keys = [k for k in order if k in entry] + [k for k in entry if k not in order]
    lines = [f"[mcp_servers.{SERVER_KEY}]"] + [f"{_toml_key(k)} = {_toml_value(entry[k])}" for k in keys]
    return "\n".join(lines) + "\n"


def merged_entry(old: Any, ours: dict[str, Any]) -> dict[str, Any]:
    """Our keys updated, the user's kept: an existing `m2` entry's other keys and its own `env`
    variables (e.g. M2_API_KEY, which we never write) survive a `--write`."""
    if not isinstance(old, dict):
        return ours
    # an HTTP/SSE form of the entry (url, headers, type) gives way to the stdio one
    merged = {**ours, **{k: v for k, v in old.items() if k not in ours and k not in TRANSPORT_KEYS}}
    if isinstance(old.get("env"), dict):
        merged["env"] = {**old["env"], **ours.get("env", {})}
    return merged


_HEADER = re.compile(r"^\s*\[(\[)?\s*([^\[\]]+?)\s*\]\]?\s*(#.*)?$")


def _key_path(raw: str) -> list[str]:
    return [part.strip().strip("\"'") for part in raw.split(".")]


def merge_toml(old: str, table: str) -> str:
    """Replace the `[mcp_servers.m2]` table (and its subtables) or append it; the rest stays byte-identical.

    Comment lines right before the next table belong to that table and are kept."""
    out: list[str] = []
    dropped: list[str] = []
    inserted = in_ours = False
    for line in old.splitlines(keepends=True):
        match = _HEADER.match(line)
        if match:
            was_ours, in_ours = in_ours, _key_path(match.group(2))[:2] == ["mcp_servers", SERVER_KEY]
            if in_ours and not inserted:
                out.append(table)
                inserted = True
            elif was_ours and not in_ours:
                lead: list[str] = []
                while dropped and (not dropped[-1].strip() or dropped[-1].lstrip().startswith("#")):
                    lead.insert(0, dropped.pop())
                out.append("\n")
                out.extend(x for x in lead if x.strip())
                dropped = []
        (dropped if in_ours else out).append(line)
    text = "".join(out)
    if inserted:
        return text
    if text and not text.endswith("\n"):
        text += "\n"
    return text + ("\n" if text.strip() else "") + table


# --- writing ----------------------------------------------------------------------------------

def _without_ours(data: dict[str, Any]) -> dict[str, Any]:
    servers = dict(data.get("mcp_servers", {}))
    servers.pop(SERVER_KEY, None)
    return {**data, "mcp_servers": servers}


def merged_text(path: Path, client: str, repo: Path) -> str:
    """The new content of `path` with our server set; UsageError (file untouched) if it can't be merged."""
    fmt = CLIENTS[client]
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    entry = server_entry(repo, client)
    if fmt.top_key is None:
        try:
            before = tomllib.loads(old)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path} is not valid TOML ({exc}); fix or move it, then rerun") from None
        servers = before.get("mcp_servers")
        table = codex_table(merged_entry(servers.get(SERVER_KEY) if isinstance(servers, dict) else None, entry))
        new = merge_toml(old, table)
        try:
            after = tomllib.loads(new)
        except tomllib.TOMLDecodeError:
            after = None
        if after is None or _without_ours(after) != _without_ours(before) or (
            after["mcp_servers"][SERVER_KEY] != tomllib.loads(table)["mcp_servers"][SERVER_KEY]
        ):
            raise UsageError(
                f"cannot merge into {path}: [mcp_servers.{SERVER_KEY}] is defined in a form this tool does not "
                "edit (inline or dotted keys); replace it by hand with the output of `m2-mcp config codex`"
            )
        return new
    try:
        data = json.loads(old) if old.strip() else {}
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); fix or move it, then rerun") from None
    if not isinstance(data, dict) or not isinstance(data.get(fmt.top_key, {}), dict):
        raise UsageError(f"{path}: expected a JSON object with an object under '{fmt.top_key}'")
    servers = data.setdefault(fmt.top_key, {})
    servers[SERVER_KEY] = merged_entry(servers.get(SERVER_KEY), entry)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_config(repo: Path, client: str) -> Path:
    """Merge our server into the client's project file (atomically); returns the path written."""
    path = repo / CLIENTS[client].path
    if path.exists() and not path.is_file():
        raise UsageError(f"{path} exists and is not a file")
    text = merged_text(path, client, repo)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
