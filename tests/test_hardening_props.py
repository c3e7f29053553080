"""Property tests (hypothesis) of every tool's arguments through the real stdio server:
no crash, no hang, no write outside the repo, every error a one-line bounded tool error."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _mcp import connect, error_text, stdio_params
from conftest import make_repo
from m2_mcp.tools import registry

pytestmark = pytest.mark.slow

PATHS = ["calc.py", "pkg/mod.py", "new/file.txt", "../outside/secret.txt", "/etc/passwd", ".git/config",
         "sub/.git/HEAD", "out/secret.txt", "out", "fifo", "zero", ".", "", " ", "a" * 300, "x\x00y", "~/x",
         "pkg/../calc.py", "pkg/", "tests/test_calc.py", "\n", "dir with space/é.py"]
# Tools that would run a command or call a model get arguments that are always refused.
REFUSED_ONLY = {"shell", "run_tests", "m2_task"}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def value_for(schema: dict[str, Any], name: str) -> st.SearchStrategy[Any]:
    kind = schema.get("type")
    if "anyOf" in schema:
        return st.one_of([value_for(s, name) for s in schema["anyOf"]])
    if kind == "string":
        return st.one_of(st.sampled_from(PATHS), st.text(max_size=40))
    if kind == "integer":
        return st.one_of(st.integers(-3, 5000), st.sampled_from([0, 2**31, -(2**40)]))
    if kind == "number":
        return st.floats(-1, 5, allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        if name == "edits":
            edit = st.fixed_dictionaries({"path": st.sampled_from(PATHS), "old_string": st.text(max_size=20),
                                          "new_string": st.text(max_size=20)},
                                         optional={"replace_all": st.booleans()})
            return st.one_of(st.lists(edit, max_size=3), st.text(max_size=20))
        return st.lists(st.one_of(st.sampled_from(PATHS), st.text(max_size=20)), max_size=3)
    return st.one_of(st.none(), st.text(max_size=10), st.integers())


@st.composite
def calls(draw, tools: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(sorted(tools)))
    schema = tools[name]
    props, required = schema.get("properties", {}), set(schema.get("required", []))
    args: dict[str, Any] = {}
    for key, sub in props.items():
        if key in required or draw(st.booleans()):
            args[key] = draw(value_for(sub, key) if draw(st.integers(0, 9)) else st.one_of(st.integers(), st.none()))
    if name in REFUSED_ONLY or draw(st.integers(0, 9)) == 0:
        args["zz_unknown"] = draw(st.text(max_size=5))
    return name, args


def test_every_tool_survives_fuzzed_arguments(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    repo = make_repo(tmp_path / "repo", {"calc.py": "def add(a, b):\n    return a + b\n", "pkg/mod.py": "X = 1\n",
                                        "tests/test_calc.py": "def test_x():\n    pass\n"})
    (repo / "out").symlink_to(outside)
    (repo / "zero").symlink_to("/dev/zero")
    os.mkfifo(repo / "fifo")
    make_repo(repo / "sub", {"s.py": "S = 1\n"})
    before_outside = snapshot(outside)
    git_config = (repo / ".git/config").read_bytes()

    with start_blocking_portal() as portal, portal.wrap_async_context_manager(connect(stdio_params(repo))) as client:
        listed = portal.call(client.list_tools)
        tools = {t.name: t.input_schema for t in listed.tools}
        assert set(registry.load_all()) <= set(tools)

        outcomes = {"ok": set(), "error": set()}

        async def one(name: str, args: dict[str, Any]) -> Any:
            with anyio.fail_after(60):  # a hang fails here instead of stalling the suite
                return await client.call_tool(name, args)

        @settings(max_examples=150, deadline=None, database=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(call=calls(tools))
        def check(call: tuple[str, dict[str, Any]]) -> None:
            name, args = call
            result = portal.call(one, name, args)
            outcomes["error" if result.is_error else "ok"].add(name)
            if result.is_error:
                text = error_text(result)
                assert text and "\n" not in text and len(text) <= 500, (name, args, text)
                assert "Traceback" not in text and "internal error" not in text, (name, args, text)
                if "zz_unknown" in args:
                    assert "zz_unknown" in text, (name, args, text)
            else:
                assert isinstance(result.structured_content, dict), (name, args)

        check()
        assert len(outcomes["error"]) >= 5, outcomes  # the refusal path was exercised
        # After the fuzzing the server still does real work: valid calls succeed (chance decides how many
        # random calls were valid, so the success path is checked here, not counted above).
        for name, args in [("read_file", {"path": "calc.py"}), ("find_files", {"pattern": "*.py"}),
                           ("search", {"pattern": "def add"}), ("git_status", {}), ("repo_map", {})]:
            result = portal.call(one, name, args)
            assert not result.is_error, (name, error_text(result))
            assert isinstance(result.structured_content, dict), name
    assert snapshot(outside) == before_outside
    assert (repo / ".git/config").read_bytes() == git_config
    assert not list(repo.rglob("*.m2tmp"))
