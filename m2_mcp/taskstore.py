"""Persistent state of background delegation tasks (`m2_task` with `background: true`).

One JSON file per task under `state_dir()/tasks/`, written atomically (temp file +
os.replace) under a lock file, so a server restart, a second server or
`m2_task_status` from another process always reads a whole record. The store knows
nothing of MCP or the agent: the server creates a record, the runner updates it as
the loop goes, and `m2_task_status` reads it.

A record (a plain dict):
    id          "t-<8 hex>"
    repo, task  absolute repository root, the task text
    params      {"test_cmd", "max_steps", "branch"}
    status      queued | running | fixed | already_passing | failed | budget_exhausted
                | cancelled | error | interrupted
    created_at, started_at, finished_at   epoch seconds (or None)
    owner       {"pid", "instance", "pid_start"}: the server process that runs it
    progress    {"step", "max_steps", "message", "tests_passed", "tests_failed"}
    checkpoint  a ref from the workspace code (restore it after an interruption)
    branch      the branch the run commits to, or None
    result      the section-5 result object once finished, else None

MCP Tasks (the SEP-2663 extension `io.modelcontextprotocol/tasks`: `tasks/get`,
`tasks/update`, `tasks/cancel`, `notifications/tasks`) would plug in as a thin
adapter on the server side, not here: the extension's task id is a record id,
`tasks/get` maps to `get()` (status + progress, and the result once final),
`tasks/cancel` goes to the same cancel path as `m2_task_cancel` (which ends in
`update(id, status="cancelled")`), and `notifications/tasks` are sent from the
place that calls `update(id, progress=...)`. The record already holds everything
those methods return, so the store does not change when the SDK ships the extension.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import tempfile
import time
from pathlib import Path

import anyio

from m2_mcp.home import state_dir
from m2_mcp.redact import redact_obj

FINAL = frozenset({"fixed", "already_passing", "failed", "budget_exhausted", "cancelled", "error", "interrupted"})
STATUSES = FINAL | {"queued", "running"}
ID_RE = re.compile(r"t-[0-9a-f]{8}")
INSTANCE = secrets.token_hex(6)  # this process's server instance, unless the server passes its own

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: atomic replace still keeps each file whole
    fcntl = None


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def pid_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux), to tell a live owner from a reused pid."""
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def _alive(owner: dict) -> bool:
    """Whether the owner process still runs (and is the same process, where /proc tells)."""
    return process_alive(owner.get("pid"), owner.get("pid_start"))


def process_alive(pid, start: str | None = None) -> bool:
    """Whether process `pid` runs and (where /proc tells, and `start` is given) started at `start`."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    if os.path.exists("/proc/self/stat"):
        fields = _proc_stat(pid)
        if fields is None or fields[0] in ("Z", "X"):  # gone, or a zombie that runs nothing
            return False
        return start in (None, fields[19])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TaskStore:
    def __init__(self, root: Path | None = None, instance: str = INSTANCE):
        self.root = Path(root) if root else state_dir() / "tasks"
        self.instance = instance

    def _path(self, task_id: str) -> Path | None:
        return self.root / f"{task_id}.json" if isinstance(task_id, str) and ID_RE.fullmatch(task_id) else None

    @contextlib.contextmanager
    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as lock:
            if fcntl:
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _read(self, path: Path) -> dict | None:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("id") == path.stem else None

    def _write(self, record: dict) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(redact_obj(record), f, indent=1)  # no secret values on disk
            os.replace(tmp, self.root / f"{record['id']}.json")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def create(self, repo: str | Path, task: str, params: dict | None = None) -> dict:
        """A new `queued` record owned by this process."""
        params = params or {}
        with self._locked():
            while True:
                task_id = f"t-{secrets.token_hex(4)}"
                if not (self.root / f"{task_id}.json").exists():
                    break
            record = {
                "id": task_id, "repo": str(Path(repo).resolve()), "task": task,
                "params": {"test_cmd": params.get("test_cmd"), "max_steps": params.get("max_steps"),
                           "branch": params.get("branch")},
                "status": "queued", "created_at": time.time(), "started_at": None, "finished_at": None,
                "owner": {"pid": os.getpid(), "instance": self.instance, "pid_start": pid_start(os.getpid())},
                "progress": {"step": 0, "max_steps": params.get("max_steps"), "message": "queued",
                             "tests_passed": None, "tests_failed": None},
                "checkpoint": None, "branch": params.get("branch"), "result": None,
            }
            self._write(record)
        return record

    def get(self, task_id: str) -> dict | None:
        """The record, or None for an unknown (or malformed) id."""
        path = self._path(task_id)
        return self._read(path) if path else None

    def update(self, task_id: str, **fields) -> dict:
        """Set top-level fields; `progress` is merged into the current progress.

        Moving to `running` stamps started_at, and to a final status stamps
        finished_at, unless given. Raises KeyError for an unknown id.
        """
        path = self._path(task_id)
        if path is None:
            raise KeyError(task_id)
        unknown = set(fields) - {"status", "started_at", "finished_at", "owner", "progress", "checkpoint",
                                 "branch", "result", "params"}
        if unknown:
            raise ValueError(f"not task fields: {', '.join(sorted(unknown))}")
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"unknown task status {fields['status']!r}")
        with self._locked():
            record = self._read(path)
            if record is None:
                raise KeyError(task_id)
            if "progress" in fields:
                fields["progress"] = {**record.get("progress", {}), **fields["progress"]}
            status = fields.get("status")
            if status == "running" and not record.get("started_at"):
                fields.setdefault("started_at", time.time())
            if status in FINAL:
                fields.setdefault("finished_at", time.time())
            record.update(fields)
            self._write(record)
        return record

    def list(self, repo: str | Path | None = None) -> list[dict]:
        """All records, newest first, optionally only one repository's."""
        if not self.root.is_dir():
            return []
        records = [r for p in self.root.glob("t-*.json") if (r := self._read(p))]
        if repo is not None:
            wanted = str(Path(repo).resolve())
            records = [r for r in records if r.get("repo") == wanted]
        return sorted(records, key=lambda r: r.get("created_at") or 0, reverse=True)

    def mark_interrupted_orphans(self) -> list[str]:
        """Mark `queued`/`running` records whose owner is gone as `interrupted`; returns their ids.

        The owner is gone when its process is dead (or the pid now belongs to another
        process), or when it is this very process under an earlier server instance.
        Records of other live servers are left alone. The checkpoint is kept, so the
        user can restore the state from before the run.
        """
        marked = []
        for record in self.list():
            if record.get("status") not in ("queued", "running"):
                continue
            owner = record.get("owner") or {}
            ours = owner.get("pid") == os.getpid() and owner.get("pid_start") == pid_start(os.getpid())
            if (ours and owner.get("instance") != self.instance) or (not ours and not _alive(owner)):
                with self._locked():
                    current = self._read(self.root / f"{record['id']}.json")
                    if current is None or current.get("status") not in ("queued", "running"):
                        continue
                    current.update(status="interrupted", finished_at=time.time())
                    current["progress"] = {**current.get("progress", {}),
                                           "message": "interrupted: the server that ran this task stopped"}
                    self._write(current)
                marked.append(record["id"])
        return marked

    def sweep_orphans(self) -> list[str]:
        """`mark_interrupted_orphans`, and a ledger row for each task it marks (so `m2-mcp runs`
        lists interrupted tasks too); returns their ids."""
        from m2_mcp.ledger import record_run

        marked = self.mark_interrupted_orphans()
        for task_id in marked:
            record = self.get(task_id)
            if record is None:
                continue
            started = record.get("started_at") or record.get("created_at") or time.time()
            with contextlib.suppress(Exception):  # the ledger is bookkeeping
                record_run({"status": "interrupted", "branch": None,
                            "summary": "interrupted: the server that ran this task stopped"},
                           task=record.get("task") or "", repo=record.get("repo") or ".", source="mcp",
                           started_at=started, duration_s=max(0.0, (record.get("finished_at") or started) - started),
                           run_id=task_id)
        return marked

    async def wait(self, task_id: str, timeout_s: float, poll_s: float = 0.2) -> dict | None:
        """Poll until the task is final or `timeout_s` passes; returns the last record (None if unknown)."""
        record = self.get(task_id)
        with anyio.move_on_after(max(0.0, timeout_s)):
            while record is not None and record.get("status") not in FINAL:
                await anyio.sleep(poll_s)
                record = self.get(task_id)
        return record if record is None or record.get("status") in FINAL else self.get(task_id) or record
