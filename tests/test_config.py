"""`m2-mcp config CLIENT [--write]`: each client's snippet, merge-writing, and that the snippet really starts the server."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest
from conftest import make_repo, run_cli

from _mcp import connect
from m2_mcp.tools import registry

ENV = {"M2_BASE_URL": "http://gpu-box:8000/v1", "M2_MODEL": "MiniMaxAI/MiniMax-M2", "M2_API_KEY": "sk-never-written"}
NO_ENDPOINT = {"M2_BASE_URL": "", "M2_MODEL": "", "M2_API_KEY": "sk-never-written"}
FILES = {"cursor": ".cursor/mcp.json", "claude-code": ".mcp.json", "vscode": ".vscode/mcp.json",
         "codex": ".codex/config.toml"}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "proj", {"main.py": "print(1)\n"})


def config(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return run_cli("config", *args, env=env or ENV, cwd=cwd, timeout=60)


def entry_of(client: str, text: str) -> dict:
    if client == "codex":
        return tomllib.loads(text)["mcp_servers"]["m2"]
    data = json.loads(text)
    return data["servers" if client == "vscode" else "mcpServers"]["m2"]


@pytest.mark.parametrize("client", list(FILES))
def test_snippet(client: str, repo: Path) -> None:
    proc = config(client, "--repo", str(repo))
    assert proc.returncode == 0, proc.stderr
    assert "sk-never-written" not in proc.stdout + proc.stderr
    entry = entry_of(client, proc.stdout)
    assert Path(entry["command"]).is_absolute() and os.access(entry["command"], os.X_OK)
    assert entry["args"][-3:] == ["serve", "--repo", str(repo.resolve())]
    assert entry["env"] == {"M2_BASE_URL": ENV["M2_BASE_URL"], "M2_MODEL": ENV["M2_MODEL"]}
    if client in ("claude-code", "vscode"):
        assert entry["type"] == "stdio"
    if client == "codex":
        assert entry["tool_timeout_sec"] == 600
    if client == "claude-code":
        assert "claude mcp add -s project" in proc.stderr and " m2 -- " in proc.stderr


def test_snippet_without_endpoint_env_and_repo_from_cwd(repo: Path) -> None:
    proc = config("cursor", env=NO_ENDPOINT, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    entry = entry_of("cursor", proc.stdout)
    assert "env" not in entry
    assert entry["args"][-1] == str(repo.resolve())


@pytest.mark.anyio
async def test_snippet_command_starts_the_server(repo: Path) -> None:
    """Launch exactly what the config says, the way the IDE would, and list the tools."""
    from mcp import StdioServerParameters

    entry = entry_of("claude-code", config("claude-code", "--repo", str(repo)).stdout)
    params = StdioServerParameters(command=entry["command"], args=entry["args"],
                                   env={**os.environ, **entry["env"]}, cwd="/")
    async with connect(params) as client:
        assert set(registry.load_all()) <= {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("read_file", {"path": "main.py"})
        assert not result.is_error and "print(1)" in result.structured_content["content"]


@pytest.mark.parametrize("client", ["cursor", "claude-code", "vscode"])
def test_write_json_keeps_other_servers(client: str, repo: Path) -> None:
    top = "servers" if client == "vscode" else "mcpServers"
    path = repo / FILES[client]
    path.parent.mkdir(exist_ok=True)
    other = {"command": "npx", "args": ["-y", "other-server"]}
    path.write_text(json.dumps({"inputs": [{"id": "tok"}], top: {"other": other, "m2": {"command": "stale"}}}))

    proc = config(client, "--write", "--repo", str(repo))
    assert proc.returncode == 0, proc.stderr
    assert str(path) in proc.stdout
    data = json.loads(path.read_text())
    assert data["inputs"] == [{"id": "tok"}]
    assert data[top]["other"] == other
    assert data[top]["m2"]["args"][-1] == str(repo.resolve())
    assert "sk-never-written" not in path.read_text()

    first = path.read_text()
    assert config(client, "--write", "--repo", str(repo)).returncode == 0
    assert path.read_text() == first  # idempotent


@pytest.mark.parametrize("client", list(FILES))
def test_write_keeps_the_users_keys_on_the_m2_entry(client: str, repo: Path) -> None:
    """docs/clients.md tells users to add M2_API_KEY to the entry's env: a later --write must keep it."""
    path = repo / FILES[client]
    path.parent.mkdir(exist_ok=True)
    user = {"command": "old-m2-mcp", "args": ["serve"], "env": {"M2_API_KEY": "sk-users-own", "M2_MODEL": "old"},
            "disabled": False}
    if client == "codex":
        path.write_text('[mcp_servers.m2]\ncommand = "old-m2-mcp"\nargs = ["serve"]\ndisabled = false\n'
                        'tool_timeout_sec = 900\nenv = { M2_API_KEY = "sk-users-own", M2_MODEL = "old" }\n')
    else:
        top = "servers" if client == "vscode" else "mcpServers"
        path.write_text(json.dumps({top: {"m2": {**user, "url": "http://127.0.0.1:9/mcp"}}}))
    proc = config(client, "--write", "--repo", str(repo))
    assert proc.returncode == 0, proc.stderr
    entry = entry_of(client, path.read_text())
    assert entry["env"] == {"M2_API_KEY": "sk-users-own", "M2_BASE_URL": ENV["M2_BASE_URL"], "M2_MODEL": ENV["M2_MODEL"]}
    assert entry["disabled"] is False and entry["command"] != "old-m2-mcp"
    assert entry["args"][-3:] == ["serve", "--repo", str(repo.resolve())]
    assert "url" not in entry  # the stdio form replaces an HTTP one
    if client == "codex":
        assert entry["tool_timeout_sec"] == 900  # the user's own timeout (ours is only the default, 600)
    assert config(client, "--write", "--repo", str(repo)).returncode == 0
    assert entry_of(client, path.read_text()) == entry  # idempotent


def test_write_creates_file(repo: Path) -> None:
    proc = config("vscode", "--write", "--repo", str(repo))
    assert proc.returncode == 0, proc.stderr
    assert entry_of("vscode", (repo / ".vscode/mcp.json").read_text())["type"] == "stdio"


def test_write_toml_keeps_the_rest_byte_identical(repo: Path) -> None:
    path = repo / FILES["codex"]
    path.parent.mkdir()
    head = '# my settings\nmodel = "o3"  # inline comment\n\n[mcp_servers.other]\ncommand = "other"\nargs = ["x"]\n\n'
    tail = '# profile notes\n[profiles.fast]\nmodel = "o4-mini"\n'
    path.write_text(head + '[mcp_servers.m2]\ncommand = "stale"\n\n[mcp_servers.m2.env]\nX = "1"\n\n' + tail)

    proc = config("codex", "--write", "--repo", str(repo))
    assert proc.returncode == 0, proc.stderr
    text = path.read_text()
    assert text.startswith(head) and text.endswith("\n" + tail)
    data = tomllib.loads(text)
    assert data["mcp_servers"]["other"] == {"command": "other", "args": ["x"]}
    assert data["profiles"] == {"fast": {"model": "o4-mini"}}
    m2 = data["mcp_servers"]["m2"]
    assert m2["tool_timeout_sec"] == 600  # ours updated, the user's own env variable kept
    assert m2["env"] == {"X": "1", "M2_BASE_URL": ENV["M2_BASE_URL"], "M2_MODEL": ENV["M2_MODEL"]}
    assert "stale" not in text


def test_write_toml_appends(repo: Path) -> None:
    path = repo / FILES["codex"]
    path.parent.mkdir()
    old = 'model = "o3"\n\n[mcp_servers.other]\nurl = "http://127.0.0.1:9/mcp"'  # no final newline
    path.write_text(old)
    assert config("codex", "--write", "--repo", str(repo)).returncode == 0
    text = path.read_text()
    assert text.startswith(old + "\n")
    assert set(tomllib.loads(text)["mcp_servers"]) == {"other", "m2"}


@pytest.mark.parametrize("client, bad", [
    ("cursor", '{"mcpServers": {"other": {}},'),
    ("vscode", '{\n  // a comment\n  "servers": {}\n}'),
    ("claude-code", '["not", "an", "object"]'),
    ("codex", '[mcp_servers.other\ncommand = "x"\n'),
    ("codex", 'mcp_servers.m2.command = "inline"\n'),
])
def test_write_refuses_malformed_file(client: str, bad: str, repo: Path) -> None:
    path = repo / FILES[client]
    path.parent.mkdir(exist_ok=True)
    path.write_text(bad)
    proc = config(client, "--write", "--repo", str(repo))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and str(path) in proc.stderr, proc.stderr
    assert path.read_text() == bad
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".") and p.suffix == ".tmp") == []


@pytest.mark.parametrize("args", [["emacs"], [], ["cursor", "--repo", "/no/such/dir"], ["cursor", "--bogus"]])
def test_bad_usage_exit_2(args: list[str]) -> None:
    proc = config(*args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("client, name", [("cursor", "cursor-mcp.json"), ("claude-code", "claude-code-mcp.json"),
                                          ("vscode", "vscode-mcp.json"), ("codex", "codex-config.toml")])
def test_examples_parse(client: str, name: str) -> None:
    """examples/clients/ hold the same shape `config` writes."""
    entry = entry_of(client, (Path(__file__).parent.parent / "examples" / "clients" / name).read_text())
    assert entry["args"][:2] == ["serve", "--repo"] and entry["command"].endswith("m2-mcp")
    assert not any("KEY" in k for k in entry.get("env", {}))
