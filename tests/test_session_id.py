"""One session id per agent run on the wire (what a router such as vllm-router keys its affinity on):
the same id on every request of a run, a different one for the next run, through the CLI and through
`m2_task` over MCP, against one plain server (the stand-in), where it changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _mcp import connect, stdio_params
from conftest import make_repo, run_cli
from standin import start_standin

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PASSING = {
    "calc.py": "def add(a, b):\n    return a + b\n",
    "tests/test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    "pytest.ini": "[pytest]\npythonpath = .\n",
}
TURNS = [
    {"think": "Read it.", "tool_calls": [{"name": "read_file", "arguments": {"path": "calc.py"}}]},
    {"think": "Again.", "tool_calls": [{"name": "find_files", "arguments": {"pattern": "*.py"}}]},
    {"think": "Fine.", "text": "Nothing to change."},
]


def ids_per_run(requests: list[dict], tasks: tuple[str, ...]) -> dict[str, list]:
    return {task: [r.get("user") for r in requests if task in json.dumps(r["messages"])] for task in tasks}


def check(ids: dict[str, list]) -> None:
    for task, seen in ids.items():
        assert len(seen) == len(TURNS) and len(set(seen)) == 1 and seen[0], (task, seen)
    assert len({seen[0] for seen in ids.values()}) == len(ids)


async def test_each_cli_run_and_each_m2_task_has_its_own_session_id(tmp_path: Path):
    cli_tasks = ("Review calc.py (CLI).",)  # two concurrent CLI runs: tests/test_router.py
    mcp_tasks = ("Review calc.py (task one).", "Review calc.py (task two).")
    repo = make_repo(tmp_path / "proj", PASSING)
    with start_standin({"scripts": [{"turns": TURNS}]}, tmp_path) as m2:
        for task in cli_tasks:
            out = run_cli("fix", "--repo", str(repo), "--task", task, "--base-url", m2.base_url, timeout=120)
            assert json.loads(out.stdout)["steps"] == len(TURNS), out.stderr
        env = {"M2_BASE_URL": m2.base_url, "M2_MCP_HOME": str(tmp_path / "state")}
        async with connect(stdio_params(repo, env=env), mode="legacy") as client:
            for task in mcp_tasks:
                result = await client.call_tool("m2_task", {"task": task}, read_timeout_seconds=120)
                assert not result.is_error, result.content
        requests = m2.requests()
    check(ids_per_run(requests, cli_tasks))
    check(ids_per_run(requests, mcp_tasks))
    assert not set(ids_per_run(requests, cli_tasks)[cli_tasks[0]]) & set(ids_per_run(requests, mcp_tasks)[mcp_tasks[0]])
