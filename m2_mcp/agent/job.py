"""One agent job from start to result: workspace, tests before, loop, tests after, result object.

Shared by `m2-mcp fix` and the `m2_task` MCP tool, so both give the same result.
"""

from __future__ import annotations

import functools
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from m2_mcp import metrics
from m2_mcp.agent import prompt
from m2_mcp.agent.loop import Emit, Limits, Loop, LoopState, emit_event
from m2_mcp.agent.model_client import ModelClient
from m2_mcp.agent.result import RunResult, TestCounts, Usage
from m2_mcp.errors import UsageError
from m2_mcp.home import state_dir
from m2_mcp.repo import DEFAULT_TEST_CMD, Repo
from m2_mcp.tools.testing import TestRun, not_runnable, run_test_command
from m2_mcp.workspace import TestGuard, Workspace, close_checkpoint
from m2_mcp.workspace.patch import MergeOutcome, merge_into_worktree

DEFAULT_TASK = "make the failing tests pass"
REPO_MAP_TOKENS = 1024
BUDGET_STOPS = {"max_steps", "timeout", "cost", "tokens"}
FINAL_RUN_GRACE_S = 30  # the test run after the loop decides the status: it gets at least this


@dataclass
class JobSpec:
    repo: Path
    task: str = DEFAULT_TASK
    test_cmd: str = DEFAULT_TEST_CMD
    branch: str | None = None
    from_snapshot: bool = False  # with branch: start from the user's working tree, not HEAD (m2_task)
    apply_result: bool = False  # with branch: a fixed result is merged into the user's working tree (m2_task)
    allow_test_edits: bool = False
    limits: Limits = field(default_factory=Limits)
    test_timeout: float = 600.0


counts = TestCounts.of


def failures_text(run: TestRun, limit: int = 20) -> str:
    head = f"{run.passed} passed, {run.failed} failed, {run.errors} errors, {run.skipped} skipped (exit code {run.exit_code})"
    lines = [head] + [f"- {f.kind} {f.test_id} ({f.location or '?'}): {f.message}" for f in run.failures[:limit]]
    return "\n".join(lines)


def mentioned_paths(root: Path, *texts: str) -> list[str]:
    """Repo files named in the task or in failure output, to focus the repo map."""
    found = []
    for token in re.findall(r"[\w./-]+\.\w+", " ".join(texts)):
        token = token.split("::")[0].strip("./") if not token.startswith("./") else token[2:]
        if token and (root / token).is_file() and token not in found:
            found.append(token)
    return found[:20]


class Job:
    """Run with `await job.run()`; `job.cancel()` stops it within seconds with status `cancelled`.

    One cancel scope, owned by the job, covers the test run before, the loop and the
    `--timeout` deadline; the test run after the loop always happens (it decides the
    status), except on cancel. Whatever happens, the worktree is removed and test files
    are restored.
    """

    def __init__(self, spec: JobSpec, client: ModelClient, emit: Emit | None = None):
        self.spec, self.client, self.emit = spec, client, emit
        # UsageError for a bad repo or branch
        self.workspace = Workspace(spec.repo, spec.branch, from_snapshot=spec.from_snapshot)
        self.applied_checkpoint: str | None = None  # taken before a result was merged into the user's tree
        self.loop: Loop | None = None
        self.guard: TestGuard | None = None
        self.cancelled = False
        self.result: RunResult | None = None
        self.endpoint_failed = False
        self._scope = anyio.CancelScope()
        self._no_loop = LoopState(messages=[])
        self.errors: list[str] = []  # the job's own (test runs); the loop's are in its state

    @property
    def checkpoint(self) -> str | None:
        cp = self.workspace.checkpoint
        return cp.ref if cp else self.applied_checkpoint

    def cancel(self) -> None:
        self.cancelled = True
        self._scope.cancel()

    def _state(self) -> LoopState:
        """The loop's state, or (before the loop started) an empty one that lasts for the run."""
        return self.loop.state if self.loop is not None else self._no_loop

    async def run(self) -> RunResult:
        spec, ws = self.spec, self.workspace
        self.client.on_event = self.emit  # retries and streaming progress reach the same listener
        await anyio.to_thread.run_sync(ws.start)
        repo = Repo(ws.root, test_cmd=spec.test_cmd, protect_tests=not spec.allow_test_edits,
                    env=run_env(ws.root, isolated=bool(spec.branch)))
        before = None
        try:
            with self._scope:
                self._scope.deadline = anyio.current_time() + spec.limits.timeout_s
                before = await run_test_command(repo, timeout=spec.test_timeout)
                check_test_command(before, spec.test_cmd, spec.allow_test_edits)
                if before.timed_out:
                    self.errors.append(f"the test run before the agent did not finish ({before.note})")
                await emit_event(self.emit, {"type": "tests_before", **counts(before).model_dump()})
                if before.exit_code == 0 and spec.task == DEFAULT_TASK:
                    return self._finish(repo, counts(before), counts(before), "tests already pass; nothing to do")
                self.guard = TestGuard(repo) if repo.protect_tests else None
                repo_map = await anyio.to_thread.run_sync(self._repo_map, repo, spec.task, before.output or "")
                messages = [
                    {"role": "system", "content": prompt.SYSTEM},
                    {"role": "user", "content": prompt.task_message(
                        spec.task, spec.test_cmd, "" if before.exit_code == 0 else failures_text(before), repo_map)},
                ]
                self.loop = Loop(repo, self.client, spec.limits, emit=self.emit, guard=self.guard)
                await self.loop.run(messages)
            state = self._state()
            before_counts = counts(before) if before else TestCounts()
            if self.cancelled:
                return self._finish(repo, before_counts, TestCounts(), "cancelled", stop="cancelled")
            if self._scope.cancelled_caught:
                state.stop, state.summary = "timeout", f"stopped: --timeout of {spec.limits.timeout_s:g}s reached"
            left = self._scope.deadline - anyio.current_time()  # the --timeout deadline set above
            after = await run_test_command(repo, timeout=int(max(FINAL_RUN_GRACE_S, min(spec.test_timeout, left))))
            if after.timed_out:
                self.errors.append(f"the final test run did not finish ({after.note})")
            finish = functools.partial(self._finish, repo, before_counts, counts(after), state.summary,
                                       passed_before=before is not None and before.exit_code == 0)
            return await anyio.to_thread.run_sync(finish)  # git work: keep the event loop (progress) free
        except anyio.get_cancelled_exc_class():
            # cancelled from outside (e.g. the MCP client dropped the call): record, then let it propagate
            self.result = self._finish(repo, counts(before) if before else TestCounts(), TestCounts(), "cancelled",
                                       stop="cancelled")
            raise
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        """After an unexpected error: restore test files, remove the worktree (best effort)."""
        try:
            if self.guard is not None:
                self.guard.revert_changes()
            self._close_checkpoint()
            self.workspace.finish(keep_branch=False)
        except Exception:
            pass

    def _close_checkpoint(self) -> None:
        """Drop the checkpoint if the run changed nothing; else record the files the run created
        (undo deletes only those). On failure the checkpoint stays as taken."""
        ws = self.workspace
        if ws.checkpoint is not None:
            try:
                ws.checkpoint = close_checkpoint(ws.user_root, ws.checkpoint)
            except Exception as exc:
                self.errors.append(f"checkpoint kept as taken (files the run created are not recorded): {exc}")

    def _repo_map(self, repo: Repo, task: str, test_output: str) -> str:
        try:
            from m2_mcp.repomap import build_map

            focus = mentioned_paths(repo.root, task, test_output)
            return build_map(repo.root, focus=focus, max_tokens=REPO_MAP_TOKENS).map
        except Exception:  # the map is a help, never a reason to fail a run
            return ""

    def _finish(self, repo: Repo, before: TestCounts, after: TestCounts, summary: str, *,
                passed_before: bool = False, stop: str | None = None) -> RunResult:
        """Diff, commit (branch mode), status. Synchronous git work only, so it also runs on cancel."""
        ws, limits, state = self.workspace, self.spec.limits, self._state()
        if stop:
            state.stop = stop
        if self.guard is not None:
            self.guard.revert_changes()
        files, diff = ws.changes()
        self._close_checkpoint()
        errors = self.errors + list(state.errors)
        status = _status(state, before, after, files, passed_before, errors)
        if status == "error":
            self.endpoint_failed = True
        commits = ws.commit(f"m2-mcp: {self.spec.task}\n\n{summary[:2000]}") if files else []
        applied, patch, conflicts = self._deliver(status, files, errors)
        keep = bool(commits) and not applied
        branch = ws.branch if keep else None
        ws.finish(keep_branch=keep)
        metrics.RUNS.labels(status=status).inc()
        self.result = RunResult(
            status=status, tests_before=before, tests_after=after, files_changed=files, diff=diff,
            branch=branch, commits=commits, steps=state.steps, tool_calls=state.tool_calls,
            usage=Usage(prompt_tokens=state.prompt_tokens, completion_tokens=state.completion_tokens,
                        cost_usd=state.cost(limits)),
            errors=errors, summary=summary, applied=applied, patch=patch, conflicts=conflicts,
        )
        return self.result

    def _deliver(self, status: str, files: list[str], errors: list[str]) -> tuple[bool | None, str | None, list[str]]:
        """(applied, patch, conflicts): where the run's change goes.

        In the user's tree (`fix`): it is there already. On a branch (`--branch`, `m2_task`
        with `branch`): it stays there. `m2_task` without `branch`: saved as a patch, and if
        the run is `fixed`, merged 3-way into the user's working tree after a checkpoint."""
        ws = self.workspace
        if not files:
            return None, None, []
        if ws.worktree is None:
            return True, None, []
        if not self.spec.apply_result:
            return None, None, []
        name = ws.branch.replace("/", "-")
        patch = str(ws.save_patch(state_dir() / "patches" / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}.patch"))
        kept = f"the change is kept in {patch} and on branch {ws.branch}"
        if status != "fixed":
            errors.append(f"not applied to your working tree (the run ended {status}); {kept}")
            return False, patch, []
        try:
            outcome = merge_into_worktree(ws.user_root, ws.base, ws.result_tree, f"before applying {ws.branch}")
        except Exception as exc:  # never lose the change over a failed merge
            outcome = MergeOutcome(False, error=f"{type(exc).__name__}: {exc}")
        if outcome.applied:
            self.applied_checkpoint = outcome.checkpoint
            return True, patch, []
        reason = (f"you changed {', '.join(outcome.conflicts)} meanwhile, where the change collides with yours"
                  if outcome.conflicts else outcome.error)
        how = (f"; to merge it yourself: git add {' '.join(outcome.conflicts)} && git apply --3way {patch}"
               if outcome.conflicts else "")
        errors.append(f"not applied to your working tree: {reason}; nothing was overwritten; {kept}{how}")
        return False, patch, outcome.conflicts


def _status(state: LoopState, before: TestCounts, after: TestCounts, files: list[str], passed_before: bool,
            errors: list[str]) -> str:
    """The run's status from how the loop stopped and the test runs before and after."""
    if state.stop == "cancelled":
        return "cancelled"
    if state.steps == 0 and before.exit_code == 0:
        return "already_passing"
    if state.stop == "endpoint":
        return "error"
    if after.exit_code == 0 and _total(after) < _total(before):
        errors.append(f"test count dropped from {_total(before)} to {_total(after)}")
        return "failed"
    if after.exit_code == 0:
        return "already_passing" if passed_before and not files else "fixed"
    return "budget_exhausted" if state.stop in BUDGET_STOPS else "failed"


def check_test_command(run: TestRun, test_cmd: str, allow_test_edits: bool = False) -> None:
    """A test command that cannot start, or finds no tests, is a usage error, not a reason to call the model."""
    reason = not_runnable(run)
    if reason:
        raise UsageError(reason)
    if run.exit_code == 5 and not (run.passed or run.failed or run.errors) and not allow_test_edits:
        raise UsageError(f"the test command found no tests to run (pytest exit 5): {test_cmd}; "
                         "pass --test-cmd, or add tests (or --allow-test-edits to let the agent write them)")


def run_env(root: Path, isolated: bool) -> dict[str, str]:
    """Environment for the agent's test and shell commands: no bytecode files in the diff and,
    in a worktree, the worktree's code first on the path (an editable install of the user's
    checkout must not be what the tests import)."""
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    if isolated:
        paths = [str(root), str(root / "src"), os.environ.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def _total(c: TestCounts) -> int:
    return c.passed + c.failed + c.errors


async def run_job(spec: JobSpec, client: ModelClient, emit: Emit | None = None) -> tuple[RunResult, bool]:
    """Convenience: run a job; returns (result, endpoint_failed)."""
    job = Job(spec, client, emit)
    started = time.monotonic()
    result = await job.run()
    await emit_event(emit, {"type": "done", "status": result.status, "elapsed": round(time.monotonic() - started, 1)})
    return result, job.endpoint_failed
