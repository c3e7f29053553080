"""Issue 11, file tools through the real server (stdio, SDK client) on real temp repos:
`.git` at any depth, submodules and nested clones, FIFOs and devices, exponential globs,
long names, unknown arguments on both front doors, one-line bounded errors, the budget."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import anyio
import pytest

from _mcp import connect, error_text, stdio_params
from conftest import make_repo
from m2_mcp.errors import ToolError
from m2_mcp.repo import Repo
from m2_mcp.tools import registry

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SECRET = "tok3n-s3cret"


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "protocol.file.allow=always", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repo with a submodule (`mod`), an untracked nested clone (`vendor/lib`) and a remote URL holding a token."""
    lib = make_repo(tmp_path / "lib", {"lib.py": "LIB = 1\n"})
    root = make_repo(tmp_path / "repo", {"calc.py": "def add(a, b):\n    return a + b\n"})
    git("submodule", "add", "-q", str(lib), "mod", cwd=root)
    git("commit", "-q", "-m", "add submodule", cwd=root)
    git("clone", "-q", str(lib), "vendor/lib", cwd=root)
    git("remote", "add", "origin", f"https://user:{SECRET}@example.com/x.git", cwd=root)
    (root / "notes.txt").write_text("plain notes\n")
    return root


async def call(client, name: str, args: dict) -> tuple[bool, str, dict | None]:
    result = await client.call_tool(name, args)
    return result.is_error, error_text(result), result.structured_content


async def refused(client, name: str, args: dict) -> str:
    is_error, text, _ = await call(client, name, args)
    assert is_error, (name, args, text)
    assert "\n" not in text and len(text) <= 500, text
    return text


async def test_git_dirs_at_any_depth_are_refused_and_never_listed(repo: Path) -> None:
    hooks = repo / "vendor/lib/.git/hooks/pre-commit"
    hook_before = hooks.read_bytes() if hooks.exists() else None
    mod_git = (repo / "mod/.git").read_bytes()
    (repo / "gitlink").symlink_to("vendor/lib/.git")
    with anyio.fail_after(120):
        async with connect(stdio_params(repo)) as client:
            for path in ("vendor/lib/.git/config", "mod/.git", ".git/config", "gitlink/config", "vendor/lib/.GIT/HEAD"):
                assert ".git/" in await refused(client, "read_file", {"path": path})
            assert ".git/" in await refused(client, "write_file", {"path": "vendor/lib/.git/hooks/pre-commit",
                                                                   "content": "echo pwned"})
            assert ".git/" in await refused(client, "write_file", {"path": "mod/.git", "content": "gitdir: /tmp"})
            assert ".git/" in await refused(client, "edit_file", {"path": "mod/.git", "old_string": "gitdir",
                                                                  "new_string": "x"})
            assert ".git/" in await refused(client, "search", {"pattern": "x", "path": "vendor/lib/.git"})
            assert ".git/" in await refused(client, "find_files", {"pattern": "*", "path": "mod/.git"})
            assert ".git/" in await refused(client, "repo_map", {"paths": ["vendor/lib/.git"]})
            for glob in ("*", "**", "**/config", ".git/*", "**/.git/**"):
                _, text, out = await call(client, "search", {"pattern": "url|gitdir|LIB", "glob": glob})
                assert out is not None, text
                assert not [m for m in out["matches"] if ".git" in m["path"].split("/")], (glob, out)
                assert SECRET not in text
            _, _, out = await call(client, "search", {"pattern": SECRET, "glob": "*"})
            assert out["total_matches"] == 0
            for pattern in ("*", "config", "**/HEAD", "**/.git/**"):
                _, _, out = await call(client, "find_files", {"pattern": pattern})
                assert not [f for f in out["files"] if ".git" in f.split("/")], (pattern, out["files"])
            _, _, out = await call(client, "find_files", {"pattern": "*.py"})
            assert "vendor/lib/lib.py" in out["files"]  # nested repos stay readable
    assert (repo / "mod/.git").read_bytes() == mod_git
    assert (hooks.read_bytes() if hooks.exists() else None) == hook_before


async def test_submodules_and_nested_clones_are_not_write_targets(repo: Path) -> None:
    before = {p: (repo / p).read_bytes() for p in ("mod/lib.py", "vendor/lib/lib.py")}
    with anyio.fail_after(120):
        async with connect(stdio_params(repo)) as client:
            for path, kind in (("mod/lib.py", "submodule"), ("vendor/lib/lib.py", "nested git repository"),
                               ("vendor/lib/new/deep.py", "nested git repository")):
                message = await refused(client, "write_file", {"path": path, "content": "X = 2"})
                assert kind in message, message
                message = await refused(client, "edit_file", {"path": path, "old_string": "LIB", "new_string": "X"})
                assert kind in message, message
                message = await refused(client, "multi_edit", {"edits": [
                    {"path": "calc.py", "old_string": "a + b", "new_string": "a - b"},
                    {"path": path, "old_string": "LIB", "new_string": "X"}]})
                assert kind in message and "no file was changed" in message, message
            is_error, text, out = await call(client, "read_file", {"path": "mod/lib.py"})
            assert not is_error and "LIB = 1" in out["content"], text
            is_error, text, out = await call(client, "search", {"pattern": "LIB = 1"})
            assert not is_error and {m["path"] for m in out["matches"]} == {"mod/lib.py", "vendor/lib/lib.py"}
    assert {p: (repo / p).read_bytes() for p in before} == before
    assert "a + b" in (repo / "calc.py").read_text()
    assert not (repo / "vendor/lib/new").exists()


async def test_fifos_devices_and_sockets_are_refused_without_hanging(repo: Path) -> None:
    fifos = [repo / f"pipe{i}.txt" for i in range(40)]
    for fifo in fifos:
        os.mkfifo(fifo)
    (repo / "zero.txt").symlink_to("/dev/zero")
    (repo / "tests").mkdir()
    os.mkfifo(repo / "tests/test_x.py")
    with anyio.fail_after(120):  # a hang would stop here, not pass slowly
        async with connect(stdio_params(repo)) as client:
            assert "FIFO" in await refused(client, "read_file", {"path": "pipe0.txt"})
            assert "outside" in await refused(client, "read_file", {"path": "zero.txt"})
            assert "FIFO" in await refused(client, "edit_file", {"path": "pipe0.txt", "old_string": "a",
                                                                 "new_string": "b"})
            assert "FIFO" in await refused(client, "write_file", {"path": "pipe0.txt", "content": "x"})
            assert "FIFO" in await refused(client, "search", {"pattern": "x", "path": "tests/test_x.py"})
            errors: list[str] = []

            async def read(fifo: Path) -> None:
                errors.append(await refused(client, "read_file", {"path": fifo.name}))

            async with anyio.create_task_group() as tg:  # ~40 at once froze the old server
                for fifo in fifos:
                    tg.start_soon(read, fifo)
            assert len(errors) == 40
            is_error, text, out = await call(client, "search", {"pattern": "plain"})  # walks past the FIFOs
            assert not is_error and out["total_matches"] == 1, text
            is_error, text, out = await call(client, "read_file", {"path": "notes.txt"})
            assert not is_error and "plain notes" in out["content"], text
    assert all(f.is_fifo() for f in fifos)


async def test_exponential_glob_and_long_names(repo: Path) -> None:
    (repo / ("a" * 200)).write_text("x\n")
    long_name = "n" * 251 + ".py"  # 254 bytes: the temp name must not push it over NAME_MAX
    longest = "m" * 255
    with anyio.fail_after(120):
        async with connect(stdio_params(repo)) as client:
            is_error, text, out = await call(client, "find_files", {"pattern": "*a*a*a*a*a*a*a*a*a*a*a*b"})
            assert not is_error and out["files"] == [], text
            is_error, text, out = await call(client, "search", {"pattern": "x", "glob": "*a*a*a*a*a*a*a*a*a*a*a*b"})
            assert not is_error and out["total_matches"] == 0, text
            for name in (long_name, longest, f"deep/{longest}/{long_name}"):
                is_error, text, out = await call(client, "write_file", {"path": name, "content": "v = 1"})
                assert not is_error and out["created"], text
                is_error, text, out = await call(client, "edit_file", {"path": name, "old_string": "v = 1",
                                                                       "new_string": "v = 2"})
                assert not is_error, text
            assert "too long" in await refused(client, "write_file", {"path": "x" * 256, "content": "v"})
    assert (repo / long_name).read_text() == "v = 2\n" and (repo / longest).read_text() == "v = 2\n"
    assert not list(repo.rglob("*.m2tmp"))


async def test_exponential_glob_in_the_fallback_search(repo: Path, monkeypatch) -> None:
    from m2_mcp import rg

    monkeypatch.setenv("M2_MCP_RG", "none")
    rg.find_rg.cache_clear()
    try:
        (repo / ("a" * 200 + ".txt")).write_text("needle\n")
        with anyio.fail_after(60):
            out = await registry.call(Repo(repo), "search", {"pattern": "needle", "glob": "*a*a*a*a*a*a*a*a*a*a*b"})
            assert out["total_matches"] == 0
            out = await registry.call(Repo(repo), "search", {"pattern": "needle", "glob": "!*a*a*a*a*a*a*a*a*a*a*b"})
            assert out["total_matches"] == 1
    finally:
        rg.find_rg.cache_clear()


async def test_unknown_arguments_are_refused_on_both_front_doors(repo: Path) -> None:
    args = {"path": "calc.py", "bogus": 1}
    with pytest.raises(ToolError) as agent_side:
        await registry.call(Repo(repo), "read_file", args)
    with anyio.fail_after(120):
        async with connect(stdio_params(repo)) as client:
            mcp_side = await refused(client, "read_file", args)
            assert "bogus" in mcp_side and "Extra inputs are not permitted" in mcp_side
            assert "bogus" in await refused(client, "git_status", {"bogus": True})
            assert "bogus" in await refused(client, "m2_task_status", {"task_id": "x", "bogus": True})
            # errors from the delegation tools are one bounded line too
            message = await refused(client, "m2_task_status", {"task_id": "line\n" * 5000})
            assert "unknown task id" in message and len(message) <= 500
    assert "bogus" in str(agent_side.value) and "Extra inputs are not permitted" in str(agent_side.value)


async def test_the_text_block_stays_within_the_budget_with_control_characters(repo: Path) -> None:
    (repo / "ctl.txt").write_text(("\x01\x02" * 900 + "\n") * 200)
    (repo / "wide.txt").write_text("\x7f\x1b[0m" * 400 + "\n")
    git("add", "ctl.txt", "wide.txt", cwd=repo)
    git("commit", "-q", "-m", "control characters", cwd=repo)
    tokens = 1000
    limit = tokens * 4
    with anyio.fail_after(120):
        async with connect(stdio_params(repo, env={"M2_MCP_OUTPUT_TOKENS": str(tokens)})) as client:
            for name, args in (
                ("read_file", {"path": "ctl.txt"}),
                ("search", {"pattern": "\x01", "max_results": 500, "context": 3}),
                ("edit_file", {"path": "ctl.txt", "old_string": "\x01", "new_string": "\x03", "replace_all": True}),
                ("git_diff", {}),
                ("shell", {"command": "cat ctl.txt"}),
            ):
                result = await client.call_tool(name, args)
                assert not result.is_error, (name, error_text(result))
                assert len(error_text(result)) <= limit, (name, len(error_text(result)))
                assert len(str(result.structured_content)) > 200, name  # something was shown
