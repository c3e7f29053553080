"""Delegating to M2 over MCP: `m2_task`, `m2_task_status`, `m2_task_cancel`.

- `m2_task` runs the same Job as `m2-mcp fix` and sends progress notifications every
  few seconds (step N of max, what M2 is doing, tests so far), so clients that reset
  their call timeout on progress keep waiting. Cancelling the call stops the model
  request and any test/shell process group, and records status `cancelled`.
- With `background: true` it returns `{task_id, status}` at once; `m2_task_status`
  (optionally waiting) and `m2_task_cancel` follow. Task state lives in the on-disk
  TaskStore, so a restarted server still reports finished tasks, and tasks cut off by
  a crash show as `interrupted`.
- Each task starts from the user's current state (a snapshot commit of the working tree:
  uncommitted and untracked files included) in its own git worktree on its own branch
  (`m2/task-<id>` unless a branch is given), so the user keeps editing and several tasks
  can run at once. A `fixed` result without `branch` is merged 3-way into the user's working
  tree (after a checkpoint); on a collision with the user's edits nothing is overwritten and
  the change stays as a patch file and on the branch. With `branch` it stays on the branch.
  A per-server limit (env `M2_MCP_MAX_TASKS`, default 2) queues the rest.
- The seam for the SDK's MCP Tasks extension, once it ships, is `TaskRunner`: its
  `start`/`status`/`cancel` are what `tasks/*` handlers would call (see taskstore.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError as SDKToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from m2_mcp.agent.job import DEFAULT_TASK, Job, JobSpec
from m2_mcp.agent.loop import Limits
from m2_mcp.agent.model_client import ModelClient
from m2_mcp.agent.result import RunResult
from m2_mcp.endpoint import check_endpoints, endpoints_from
from m2_mcp.envcheck import number
from m2_mcp.errors import M2Error, UsageError
from m2_mcp.repo import DEFAULT_TEST_CMD, Repo
from m2_mcp.taskstore import FINAL, TaskStore
from m2_mcp.workspace.gitutil import open_git
from m2_mcp.workspace.worktree import remove_stale_worktrees

log = logging.getLogger("m2_mcp.delegate")
HEARTBEAT_S = 2.0
MAX_WAIT_S = 300.0


class TaskOutput(RunResult):
    """The section-5 result object plus the task id; a background start fills only id, status and branch."""

    task_id: str | None = None
    status: str  # also "queued" for a background start


class TaskStatus(BaseModel):
    task_id: str
    status: str
    task: str
    branch: str | None = None
    progress: dict[str, Any] = Field(default_factory=dict)
    result: RunResult | None = None


def describe(event: dict[str, Any], max_steps: int) -> str | None:
    """A one-line progress message for a loop event."""
    kind = event.get("type")
    if kind == "model":
        return f"step {event['step']}/{max_steps}: M2 is thinking"
    if kind == "step":
        return f"step {event['step']}/{max_steps}: {event['tool']} {event['args']}".rstrip()
    if kind in ("tests", "tests_before"):
        return f"tests: {event['passed']} passed, {event['failed']} failed, {event['errors']} errors"
    if kind == "retry":
        return f"model request failed, retrying ({event.get('attempt')})"
    return None


class TaskRunner:
    """Runs agent jobs for one server: foreground calls and background tasks."""

    def __init__(self, repo: Repo, store: TaskStore | None = None, max_concurrent: int | None = None,
                 keep_alive: bool = False):
        self.repo = repo
        self.keep_alive = keep_alive  # SSE: tasks outlive connections; they end with the process
        self.store = store or TaskStore()
        limit = max_concurrent or int(number("M2_MCP_MAX_TASKS", 2))  # checked when serve starts
        self.slots = asyncio.Semaphore(max(1, limit))
        self.jobs: dict[str, Job] = {}
        self.background: dict[str, asyncio.Task] = {}
        self.users = 0

    # lifecycle: entered once per process on stdio and HTTP, once per connection on SSE
    @contextlib.asynccontextmanager
    async def lifespan(self, server: MCPServer):
        if self.users == 0:
            for task_id in self.store.sweep_orphans():
                log.warning("task %s was interrupted by a server stop", task_id)
            with contextlib.suppress(Exception):  # not a git repository: nothing to clean
                for branch in await anyio.to_thread.run_sync(remove_stale_worktrees, open_git(self.repo.root)):
                    log.warning("removed the worktree and branch %s of an interrupted run", branch)
        self.users += 1
        try:
            yield self
        finally:
            self.users -= 1
            if self.users == 0 and not self.keep_alive:
                await self.shutdown()

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop background tasks (recorded as `interrupted`) and wait for their processes to be killed."""
        tasks = list(self.background.items())
        for task_id, task in tasks:
            self._finish(task_id, self.jobs.get(task_id), status="interrupted")
            task.cancel()
        if tasks:
            with anyio.move_on_after(grace_s), anyio.CancelScope(shield=True):
                await asyncio.gather(*(task for _, task in tasks), return_exceptions=True)

    def _spec(self, task: str, test_cmd: str | None, max_steps: int | None, branch: str, apply: bool) -> JobSpec:
        try:
            timeout_s = number("M2_MCP_TASK_TIMEOUT", 1800)
        except UsageError as exc:
            raise SDKToolError(str(exc)) from None
        limits = Limits(max_steps=max_steps or 50, timeout_s=timeout_s)
        return JobSpec(repo=self.repo.root, task=task or DEFAULT_TASK, test_cmd=test_cmd or DEFAULT_TEST_CMD,
                       branch=branch, from_snapshot=True, apply_result=apply, limits=limits)

    def create(self, task: str, test_cmd: str | None, max_steps: int | None, branch: str | None) -> tuple[dict, Job]:
        record = self.store.create(self.repo.root, task or DEFAULT_TASK,
                                   {"test_cmd": test_cmd, "max_steps": max_steps or 50, "branch": branch})
        apply = not branch  # without a branch of its own, a fixed result comes back to the working tree
        branch = branch or f"m2/task-{record['id'][2:]}"
        try:
            job = Job(self._spec(task, test_cmd, max_steps, branch, apply), ModelClient(endpoints_from()))
        except (M2Error, SDKToolError) as exc:
            self.store.update(record["id"], status="error", result=None,
                              progress={"message": str(exc)})
            raise SDKToolError(str(exc)) from None
        self.store.update(record["id"], branch=branch)
        self.jobs[record["id"]] = job
        return record, job

    async def run(self, task_id: str, job: Job, notify=None, cancelled_status: str = "cancelled") -> RunResult:
        """Run a created job under the concurrency limit, keeping its record up to date.

        `cancelled_status`: what an outside cancellation means: the client dropped a foreground
        call (`cancelled`), or the server is stopping under a background task (`interrupted`)."""
        max_steps = job.spec.limits.max_steps

        async def on_event(event: dict[str, Any]) -> None:
            message = describe(event, max_steps)
            if message is None:
                return
            progress: dict[str, Any] = {"message": message}
            if "step" in event:
                progress["step"] = event["step"]
            if event.get("type") in ("tests", "tests_before"):
                progress.update(tests_passed=event["passed"], tests_failed=event["failed"] + event["errors"])
            self.store.update(task_id, progress=progress)
            if notify is not None:
                await notify(progress)

        job.emit = on_event
        started_wall, started = time.time(), time.monotonic()
        try:
            async with self.slots:
                self.store.update(task_id, status="running", progress={"message": "starting"})
                result = await job.run()
        except asyncio.CancelledError:
            self._finish(task_id, job, status=cancelled_status, started_at=started_wall,
                         duration=time.monotonic() - started)
            raise
        except M2Error as exc:
            result = RunResult(status="error", errors=[str(exc)], summary=str(exc))
        except Exception as exc:  # never leave a record stuck in "running"
            log.exception("task %s failed", task_id)
            message = f"{type(exc).__name__}: {exc}"
            result = RunResult(status="error", errors=[message], summary=message)
        finally:
            with anyio.CancelScope(shield=True):
                await job.client.aclose()
        self._finish(task_id, job, result=result, started_at=started_wall, duration=time.monotonic() - started)
        return result

    def _finish(self, task_id: str, job: Job | None, status: str | None = None, result: RunResult | None = None,
                started_at: float | None = None, duration: float = 0.0) -> None:
        self.jobs.pop(task_id, None)
        self.background.pop(task_id, None)
        record = self.store.get(task_id)
        if record is None or record["status"] in FINAL:
            return
        result = result or (job.result if job is not None else None)
        final = status or (result.status if result else "error")
        dumped = result.model_dump(mode="json") if result else None
        if dumped is not None:
            dumped["status"] = final if final != "interrupted" else dumped["status"]
        self.store.update(task_id, status=final, result=dumped,
                          branch=dumped["branch"] if dumped is not None else record.get("branch"),
                          checkpoint=job.checkpoint if job is not None else None,
                          progress={"message": f"finished: {final}"})
        with contextlib.suppress(Exception):  # the ledger is bookkeeping; never fail a task over it
            from m2_mcp.ledger import record_run

            row = dumped or {"status": final, "branch": None, "summary": f"{final} before a result"}
            record_run({**row, "status": final}, task=record["task"], repo=record["repo"], source="mcp",
                       started_at=started_at or record["created_at"], duration_s=duration, run_id=task_id)

    def start_background(self, task_id: str, job: Job) -> None:
        self.background[task_id] = asyncio.get_running_loop().create_task(self._background(task_id, job))

    async def _background(self, task_id: str, job: Job) -> None:
        try:
            await self.run(task_id, job, cancelled_status="interrupted")
        except asyncio.CancelledError:
            pass
        except Exception:  # never let a background task die silently
            log.exception("background task %s failed", task_id)
            self._finish(task_id, job, status="error")

    async def cancel(self, task_id: str) -> dict | None:
        record = self.store.get(task_id)
        if record is None or record["status"] in FINAL:
            return record
        job = self.jobs.get(task_id)
        if job is None:
            return self.store.update(task_id, status="cancelled", progress={"message": "cancelled"})
        job.cancel()
        task = self.background.get(task_id)
        if task is not None and record["status"] == "queued":
            task.cancel()
        return await self.store.wait(task_id, 15.0)


def status_of(record: dict) -> TaskStatus:
    return TaskStatus(task_id=record["id"], status=record["status"], task=record["task"],
                      branch=record.get("branch"), progress=record.get("progress") or {},
                      result=RunResult.model_validate(record["result"]) if record.get("result") else None)


def register(runner: TaskRunner):
    """The server hook: adds the three delegation tools to an MCPServer."""

    def hook(server: MCPServer) -> None:
        async def m2_task(ctx: Context, task: str, test_cmd: str | None = None, max_steps: int | None = None,
                          branch: str | None = None, background: bool = False) -> TaskOutput:
            """Delegate a coding task to MiniMax-M2: it edits code and runs the tests until they pass or a budget ends. It starts from your current files (uncommitted ones included) in a separate worktree, and a fixed result is merged into your working tree (applied=true; `m2-mcp undo` takes it back); if you changed the same lines meanwhile nothing is overwritten (applied=false, conflicts, patch, branch). With branch=NAME the result stays on that branch. Sends progress while it runs; with background=true returns a task_id at once (poll m2_task_status)."""
            if max_steps is not None and max_steps < 1:
                raise SDKToolError("max_steps must be at least 1")
            if test_cmd is not None and not test_cmd.strip():
                raise SDKToolError(f"test_cmd must not be empty (leave it out for {DEFAULT_TEST_CMD!r})")
            try:  # a dead endpoint or a wrong model name: a one-line tool error in a second, no task
                answering = await anyio.to_thread.run_sync(check_endpoints, endpoints_from())
            except M2Error as exc:
                raise SDKToolError(str(exc)) from None
            record, job = runner.create(task, test_cmd, max_steps, branch)
            job.client.start_with(answering)
            if background:
                runner.start_background(record["id"], job)
                return TaskOutput(task_id=record["id"], status="queued", branch=job.spec.branch)
            latest: dict[str, Any] = {"message": "starting", "step": 0}
            total = float(job.spec.limits.max_steps)

            async def notify(progress: dict[str, Any]) -> None:
                latest.update(progress)
                await send(ctx, latest, total)

            async def heartbeat() -> None:
                while True:
                    await anyio.sleep(HEARTBEAT_S)
                    await send(ctx, latest, total)

            async with anyio.create_task_group() as tg:
                tg.start_soon(heartbeat)
                result = await runner.run(record["id"], job, notify)
                tg.cancel_scope.cancel()
            return TaskOutput(task_id=record["id"], **result.model_dump())

        async def m2_task_status(ctx: Context, task_id: str, wait_seconds: float = 0) -> TaskStatus:
            """State of a background M2 task: status, progress, branch, and the result object once finished. wait_seconds (max 300) waits for it to finish first, sending progress meanwhile."""
            record = runner.store.get(task_id)
            if record is None:
                raise SDKToolError(f"unknown task id: {task_id}")
            deadline = time.monotonic() + min(max(wait_seconds, 0.0), MAX_WAIT_S)
            while record["status"] not in FINAL and time.monotonic() < deadline:
                record = await runner.store.wait(task_id, min(HEARTBEAT_S, deadline - time.monotonic())) or record
                await send(ctx, record.get("progress") or {}, float((record.get("params") or {}).get("max_steps") or 0))
            return status_of(record)

        async def m2_task_cancel(task_id: str) -> TaskStatus:
            """Cancel a background M2 task; its model request and test/shell processes stop within seconds."""
            record = await runner.cancel(task_id)
            if record is None:
                raise SDKToolError(f"unknown task id: {task_id}")
            return status_of(record)

        long_running = ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False,
                                       openWorldHint=True)
        server.add_tool(m2_task, annotations=long_running, structured_output=True)
        server.add_tool(m2_task_status, annotations=ToolAnnotations(readOnlyHint=True), structured_output=True)
        server.add_tool(m2_task_cancel, annotations=long_running, structured_output=True)

    return hook


async def send(ctx: Context, progress: dict[str, Any], total: float) -> None:
    """A progress notification (if the client sent a token) and a log message."""
    message = progress.get("message") or ""
    with contextlib.suppress(Exception):
        await ctx.report_progress(float(progress.get("step") or 0), total or None, message)
    with contextlib.suppress(Exception), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        await ctx.info(message)
