"""Run one command as a fresh subprocess: no stdin, own process group, timeout, bounded output.

On timeout or cancellation the whole process group is killed (SIGTERM, then SIGKILL)
and reaped, so no orphans survive a tool call. Commands the model or an IDE chose
(`untrusted=True`) also run in the sandbox (m2_mcp.sandbox: their own PID namespace, so nothing
they start survives them), without secret variables, and with secret values redacted from
their output (m2_mcp.redact).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import ByteReceiveStream

from m2_mcp import redact, sandbox
from m2_mcp.errors import ToolError, UsageError

# Raw capture cap per stream; tools truncate further to the output budget.
CAPTURE_HEAD = 256 * 1024
CAPTURE_TAIL = 256 * 1024
KILL_GRACE_S = 2.0


@dataclass
class ProcResult:
    exit_code: int | None  # None when killed on timeout
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float
    pid: int
    note: str | None = None  # said in the tool result: e.g. the command ran with network allowed


class _Capture:
    """Keeps the first CAPTURE_HEAD and the last CAPTURE_TAIL bytes of a stream."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def feed(self, chunk: bytes) -> None:
        room = CAPTURE_HEAD - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            excess = len(self.tail) - CAPTURE_TAIL
            if excess > 0:
                del self.tail[:excess]
                self.dropped += excess

    def text(self) -> str:
        middle = f"\n[... {self.dropped} bytes of output dropped ...]\n".encode() if self.dropped else b""
        return (bytes(self.head) + middle + bytes(self.tail)).decode("utf-8", errors="replace")


async def _drain(stream: ByteReceiveStream | None, capture: _Capture, done: anyio.Event) -> None:
    try:
        if stream is not None:
            async for chunk in stream:
                capture.feed(chunk)
    except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
        pass
    finally:
        done.set()


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def run(
    command: str | list[str],
    *,
    cwd: str | os.PathLike[str],
    timeout: float,
    env: dict[str, str | None] | None = None,
    untrusted: bool = False,
) -> ProcResult:
    """Run `command` (a string runs under `bash -c`) and return its exit code and output.

    `env` is added to the current environment; a None value unsets that variable. With
    `untrusted` (a command the model or an IDE chose): sandboxed per the settings, secret
    variables unset, secret values redacted from the output; raises SandboxUnavailable
    (a ToolError) when the sandbox is on but cannot work here.
    """
    argv = ["bash", "-c", command] if isinstance(command, str) else list(command)
    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    note = None
    if untrusted:
        try:
            settings = sandbox.Settings.from_env()
        except UsageError as exc:
            raise ToolError(str(exc)) from None
        full_env = redact.scrub_env(full_env)
        argv = await anyio.to_thread.run_sync(sandbox.wrap, argv, Path(cwd), settings)
        note = sandbox.result_note(settings)
    started = time.monotonic()
    with anyio.CancelScope(shield=True):  # a cancel mid-spawn would lose the handle, and with it the process
        process = await anyio.open_process(
            argv,
            cwd=str(cwd),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # own process group: killpg reaches every child
        )
    out, err = _Capture(), _Capture()
    timed_out = False
    try:
        async with anyio.create_task_group() as tg:
            done = [anyio.Event(), anyio.Event()]
            tg.start_soon(_drain, process.stdout, out, done[0])
            tg.start_soon(_drain, process.stderr, err, done[1])
            with anyio.move_on_after(timeout) as scope:
                await process.wait()
            timed_out = scope.cancelled_caught
            await _terminate(process)  # also kills background children left in the group
            with anyio.move_on_after(KILL_GRACE_S):  # a child that left the group may hold the pipes
                for event in done:
                    await event.wait()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await _terminate(process)
            with anyio.move_on_after(KILL_GRACE_S):
                await process.aclose()  # close the pipe transports too, even when cancelled mid-read
    stdout, stderr = out.text(), err.text()
    if untrusted:
        values = redact.secret_values()
        stdout, stderr = redact.redact(stdout, values), redact.redact(stderr, values)
    return ProcResult(
        exit_code=None if timed_out else process.returncode,
        stdout=stdout,
        stderr=stderr,
        timed_out=timed_out,
        duration_s=round(time.monotonic() - started, 3),
        pid=process.pid,
        note=note,
    )


async def _terminate(process: anyio.abc.Process) -> None:
    """SIGTERM the group, give it a moment, then SIGKILL the group and reap."""
    if process.returncode is None:
        kill_group(process.pid, signal.SIGTERM)
        with anyio.move_on_after(KILL_GRACE_S):
            await process.wait()
    kill_group(process.pid, signal.SIGKILL)
    if process.returncode is None:
        with anyio.move_on_after(KILL_GRACE_S):
            await process.wait()
