"""The background task store (m2_mcp/taskstore.py): real files, real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from m2_mcp.taskstore import FINAL, TaskStore


@pytest.fixture
def store(tmp_path: Path) -> TaskStore:
    return TaskStore(tmp_path / "tasks", instance="server-1")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid is free
    return proc.pid


def test_create_get_update(store: TaskStore, tmp_path: Path):
    rec = store.create(tmp_path, "make the tests pass", {"test_cmd": "pytest -q", "max_steps": 12, "branch": "m2/x"})
    assert rec["id"].startswith("t-") and len(rec["id"]) == 10
    assert rec["status"] == "queued" and rec["repo"] == str(tmp_path.resolve())
    assert rec["params"] == {"test_cmd": "pytest -q", "max_steps": 12, "branch": "m2/x"}
    assert rec["owner"]["pid"] == os.getpid() and rec["owner"]["instance"] == "server-1"
    assert rec["progress"]["max_steps"] == 12 and rec["branch"] == "m2/x" and rec["result"] is None
    assert store.get(rec["id"]) == rec

    running = store.update(rec["id"], status="running", checkpoint="abc123")
    assert running["started_at"] >= rec["created_at"] and running["finished_at"] is None
    store.update(rec["id"], progress={"step": 3, "message": "edit_file calc.py", "tests_failed": 1})
    store.update(rec["id"], progress={"tests_passed": 4})
    progress = store.get(rec["id"])["progress"]
    assert progress == {"step": 3, "max_steps": 12, "message": "edit_file calc.py", "tests_passed": 4,
                        "tests_failed": 1}

    result = {"status": "fixed", "steps": 3, "summary": "Fixed."}
    done = store.update(rec["id"], status="fixed", result=result)
    assert done["finished_at"] >= done["started_at"] and done["result"] == result
    assert done["checkpoint"] == "abc123"  # untouched fields stay

    with pytest.raises(ValueError):
        store.update(rec["id"], status="done")
    with pytest.raises(ValueError):
        store.update(rec["id"], id="t-00000000")
    with pytest.raises(KeyError):
        store.update("t-00000000", status="running")


def test_bad_ids_and_files(store: TaskStore, tmp_path: Path):
    rec = store.create(tmp_path, "x")
    for bad in ("../tasks/" + rec["id"], rec["id"] + "/", "t-XYZ", "", None):
        assert store.get(bad) is None
    (store.root / "t-0000beef.json").write_text("{not json")
    (store.root / "t-0000cafe.json").write_text(json.dumps({"id": "t-other"}))
    assert store.get("t-0000beef") is None and store.get("t-0000cafe") is None
    assert [r["id"] for r in store.list()] == [rec["id"]]
    assert not list(store.root.glob(".tmp-*"))  # atomic writes leave no temp files


def test_persists_across_instances_and_lists(store: TaskStore, tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    first = store.create(a, "one")
    second = store.create(b, "two")
    third = store.create(a, "three")
    store.update(first["id"], status="failed")

    other = TaskStore(store.root)  # e.g. a new server process
    assert other.get(first["id"])["status"] == "failed"
    assert [r["id"] for r in other.list()] == [third["id"], second["id"], first["id"]]
    assert [r["id"] for r in other.list(repo=a)] == [third["id"], first["id"]]
    assert TaskStore(tmp_path / "nowhere").list() == []


def test_default_root_is_state_dir(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("M2_MCP_HOME", str(tmp_path / "home"))
    rec = TaskStore().create(tmp_path, "x")
    assert (tmp_path / "home" / "tasks" / f"{rec['id']}.json").is_file()


def test_orphans_of_dead_processes(store: TaskStore, tmp_path: Path):
    orphan = store.create(tmp_path, "owner died")
    store.update(orphan["id"], status="running", checkpoint="refs/m2-mcp/checkpoints/1",
                 owner={"pid": dead_pid(), "instance": "server-0", "pid_start": None})
    queued_orphan = store.create(tmp_path, "never started")
    store.update(queued_orphan["id"], owner={"pid": dead_pid(), "instance": "server-0", "pid_start": None})
    finished = store.create(tmp_path, "finished earlier")
    store.update(finished["id"], status="fixed", owner={"pid": dead_pid(), "instance": "server-0"})
    mine = store.create(tmp_path, "running here")
    store.update(mine["id"], status="running")

    # A live process of another server keeps its task.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        foreign = store.create(tmp_path, "other server's task")
        store.update(foreign["id"], status="running", owner={"pid": other.pid, "instance": "server-9"})

        marked = store.mark_interrupted_orphans()
        assert sorted(marked) == sorted([orphan["id"], queued_orphan["id"]])
        rec = store.get(orphan["id"])
        assert rec["status"] == "interrupted" and rec["finished_at"] is not None
        assert rec["checkpoint"] == "refs/m2-mcp/checkpoints/1" and "interrupted" in rec["progress"]["message"]
        assert store.get(finished["id"])["status"] == "fixed"
        assert store.get(mine["id"])["status"] == "running"
        assert store.get(foreign["id"])["status"] == "running"
        assert store.mark_interrupted_orphans() == []
    finally:
        other.kill()
        other.wait()
    assert store.mark_interrupted_orphans() == [foreign["id"]]  # now its owner is gone too


def test_orphans_of_an_earlier_server_instance_in_this_process(store: TaskStore, tmp_path: Path):
    rec = store.create(tmp_path, "x")
    store.update(rec["id"], status="running")
    assert store.mark_interrupted_orphans() == []
    restarted = TaskStore(store.root, instance="server-2")
    assert restarted.mark_interrupted_orphans() == [rec["id"]]
    assert restarted.get(rec["id"])["status"] == "interrupted"


def test_wait(store: TaskStore, tmp_path: Path):
    rec = store.create(tmp_path, "x")
    store.update(rec["id"], status="running")

    async def main():
        timed_out = await store.wait(rec["id"], timeout_s=0.3, poll_s=0.05)
        assert timed_out["status"] == "running"

        async def finish_later():
            await anyio.sleep(0.2)
            store.update(rec["id"], status="cancelled")

        async with anyio.create_task_group() as tg:
            tg.start_soon(finish_later)
            done = await store.wait(rec["id"], timeout_s=30, poll_s=0.05)
        assert done["status"] == "cancelled" and done["status"] in FINAL
        assert (await store.wait(rec["id"], timeout_s=0))["status"] == "cancelled"
        assert await store.wait("t-00000000", timeout_s=1) is None

    anyio.run(main)
