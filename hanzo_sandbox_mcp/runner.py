"""Run one command in a session's sandbox, supervise it, and return an `ExecResult`.

The call is handed to the session's sandbox (session_sandbox.py), which forks it inside (launcher.py),
with five pipes: stdin, stdout, stderr, the call's status (what fired, exit status, rusage) and its cancel
pipe. The runner then streams stdout and stderr with a cap per stream (memory stays bounded however much a
command prints), feeds stdin, reads the status pipe until its end (the call is over), enforces the
wall-clock timeout, lets the workdir's quota (quota.py) supervise the call, and on timeout, quota or
cancellation closes the cancel pipe, upon which the sandbox kills the call's whole process tree; a sandbox
that fails to do so within a grace period is killed itself (and made again for the next call).

Without a session (`run`, tests) the call gets a one-call session: the same sandbox, made for it and
closed after it. Nothing on this path walks the workdir: a call costs the same whatever the workdir holds.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from .config import OutputSettings
from .errors import RequestError, SandboxUnavailable
from .launch import LaunchReport, seal
from .launch_plan import LaunchPlan
from .netproxy.decisions import DecisionLog, NetworkDenial
from .output import CappedBuffer
from .policy import SandboxPolicy
from .quota import PolledQuota, QuotaLimits, WorkdirQuota
from .results import ExecResult, ResourceUsage
from .sandbox.base import Sandbox, require_workdir
from .session_sandbox import EgressProxies, SandboxGone, SandboxHolder, SessionSandbox
from .workdir import resolve_inside

__all__ = ["Call", "Outcome", "OutputCallback", "chunks", "open_call", "run_sandboxed", "write_all"]

OutputCallback = Callable[[str, bytes], Awaitable[None]]
IoTask = Callable[[], Coroutine[Any, Any, None]]
"""One of a call's stdio tasks (a pump or a writer), run beside it."""

_READ_CHUNK = 64 * 1024
#: How long a cancelled call's sandbox may take to kill the call's tree before the sandbox is killed.
_KILL_GRACE_S = 5.0
_DRAIN_GRACE_S = 2.0


@dataclasses.dataclass
class _CallState:
    report: LaunchReport = dataclasses.field(default_factory=LaunchReport)
    done: anyio.Event = dataclasses.field(default_factory=anyio.Event)
    """Set at the end of the status pipe: the call's init has exited (the call is over)."""
    timed_out: bool = False
    quota_stopped: bool = False
    quota_excess: str | None = None
    """Why the quota counts as exceeded (stopped by it, or the filesystem filled up), if it does."""
    restarted: str | None = None
    denied: tuple[NetworkDenial, ...] = ()
    """What the egress proxy refused for the session since its previous result."""
    sandbox: SessionSandbox | None = None


def _validate_argv(argv: Sequence[str]) -> None:
    if not argv:
        raise RequestError("empty command: give the program to run")
    if any("\x00" in arg for arg in argv):
        raise RequestError("the command contains a NUL byte, which no program argument can hold; remove it")


async def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to the non-blocking pipe `fd`, waiting for room; OSError (EPIPE) when the
    reader is gone."""
    view = memoryview(data)
    while view:
        await anyio.wait_writable(fd)
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            continue


async def _write_stdin(pipes: _Pipes, data: bytes | None) -> None:
    try:
        await write_all(pipes.stdin, data or b"")
    except OSError:
        pass  # the command does not read its stdin: not an error
    finally:
        pipes.close(pipes.stdin)  # end of file for the command


async def chunks(fd: int) -> AsyncIterator[bytes]:
    """What arrives on the non-blocking pipe `fd`, chunk by chunk, until its end."""
    while True:
        await anyio.wait_readable(fd)
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            continue
        if not chunk:
            return
        yield chunk


async def _read_status(fd: int, state: _CallState) -> None:
    pending = b""
    try:
        async for chunk in chunks(fd):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                state.report.feed(line)
    finally:
        state.done.set()


async def _pump(fd: int, buffer: CappedBuffer, name: str, on_output: OutputCallback | None) -> None:
    async for chunk in chunks(fd):
        buffer.feed(chunk)
        if on_output is not None:
            await on_output(name, chunk)


class _Pipes:
    """A call's five pipes: the sandbox's ends (sent with the call, then closed here) and ours (non-
    blocking, each closed once, by its task or at the end). On failure (EMFILE) every descriptor already
    made is closed."""

    def __init__(self) -> None:
        made: list[int] = []
        try:
            for _ in range(5):
                made.extend(os.pipe())
        except BaseException:
            for fd in made:
                os.close(fd)
            raise
        (
            stdin_r,
            self.stdin,
            self.stdout,
            stdout_w,
            self.stderr,
            stderr_w,
            self.status,
            status_w,
            cancel_r,
            self.cancel,
        ) = made
        self.theirs = [stdin_r, stdout_w, stderr_w, status_w, cancel_r]
        self._open = {self.stdin, self.stdout, self.stderr, self.status, self.cancel}
        for fd in (self.stdin, self.stdout, self.stderr, self.status):
            os.set_blocking(fd, False)

    def hand_over(self) -> None:
        """The sandbox has its ends (or will never get them): close ours of them."""
        for fd in self.theirs:
            os.close(fd)
        self.theirs = []

    def close(self, fd: int) -> None:
        if fd in self._open:
            self._open.discard(fd)
            os.close(fd)

    def cancel_call(self) -> None:
        """Closing the cancel pipe tells the sandbox to kill the call's tree."""
        self.close(self.cancel)

    def close_all(self) -> None:
        self.hand_over()
        for fd in list(self._open):
            self.close(fd)


def _prepare(
    sandbox: Sandbox,
    policy: SandboxPolicy,
    argv: Sequence[str],
    cwd: Path | str | None,
    env: Mapping[str, str] | None,
) -> LaunchPlan:
    _validate_argv(argv)
    workdir = require_workdir(policy)
    if not workdir.is_dir():
        raise RequestError(f"the working directory {workdir} does not exist")
    target = resolve_inside(workdir, cwd)
    plan = sandbox.harden(argv, policy, env=env)
    return plan.replace(cwd=str(target))


def _cap_file_size(plan: LaunchPlan, quota: WorkdirQuota) -> LaunchPlan:
    """No single file may outgrow what the quota leaves (the kernel enforces RLIMIT_FSIZE exactly)."""
    cap = quota.file_size_cap()
    if "fsize" not in plan.rlimits or cap is None:
        return plan
    return plan.replace(rlimits={**plan.rlimits, "fsize": min(plan.rlimits["fsize"], cap)})


def _out_of_descriptors(exc: OSError) -> RequestError:
    return RequestError(
        f"the server is out of file descriptors ({errno.errorcode.get(exc.errno or 0, 'EMFILE')}: too many calls "
        "or connections at once), so the command did not run; retry in a few seconds"
    )


async def run_sandboxed(
    sandbox: Sandbox,
    policy: SandboxPolicy,
    argv: Sequence[str],
    *,
    cwd: Path | str | None = None,
    stdin: bytes | None = None,
    timeout_s: float,
    output: OutputSettings | None = None,
    on_output: OutputCallback | None = None,
    env: Mapping[str, str] | None = None,
    quota: WorkdirQuota | None = None,
    holder: SandboxHolder | None = None,
) -> ExecResult:
    """Run `argv` confined by `sandbox` under `policy` (whose `session_workdir` must be set).

    `holder` is the session's sandbox; without one the call is a one-call session (a sandbox made for it
    and closed after it). `cwd` is relative to the workdir and may not leave it. `quota` is the workdir's
    (a session's); without one the workdir is counted during this call only, with the policy's
    `workdir_quota_mb`. Raises `RequestError` for unusable arguments and when the server is out of file
    descriptors (retryable), and `SandboxUnavailable` when a strict policy's layer could not be applied or
    the sandbox could not be made (the command did not run). Cancellation kills the process tree before it
    propagates.
    """
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise RequestError("timeout_s must be a positive number of seconds")
    output = output or OutputSettings()
    adhoc: PolledQuota | None = None
    if quota is None:  # a directory of the caller's (`run --workdir`, tests): counted for this call only
        quota = adhoc = PolledQuota(require_workdir(policy), QuotaLimits.of(policy.workdir_quota_mb), owned=False)
    try:
        if holder is not None:
            return await _run_in(sandbox, policy, argv, cwd, env, stdin, timeout_s, output, on_output, quota, holder)
        # A one-call session: its sandbox (and egress proxy) made for this call, closed after it.
        # The task group only serves the proxy: an error of the call itself leaves it unwrapped.
        failure: Exception | None = None
        async with anyio.create_task_group() as proxies_group:
            proxies = EgressProxies(proxies_group, DecisionLog())
            one_call = SandboxHolder(
                lambda plan: SessionSandbox.start(sandbox, policy, plan, template=None, proxies=proxies)
            )
            try:
                result = await _run_in(
                    sandbox, policy, argv, cwd, env, stdin, timeout_s, output, on_output, quota, one_call
                )
            except Exception as exc:
                failure = exc
            finally:
                with anyio.CancelScope(shield=True):
                    await one_call.aclose()
        if failure is not None:
            raise failure
        return result
    finally:
        if adhoc is not None:
            with anyio.CancelScope(shield=True):
                await adhoc.close()


async def _run_in(
    sandbox: Sandbox,
    policy: SandboxPolicy,
    argv: Sequence[str],
    cwd: Path | str | None,
    env: Mapping[str, str] | None,
    stdin: bytes | None,
    timeout_s: float,
    output: OutputSettings,
    on_output: OutputCallback | None,
    quota: WorkdirQuota,
    holder: SandboxHolder,
) -> ExecResult:
    stdout = CappedBuffer(output.max_stdout_bytes)
    stderr = CappedBuffer(output.max_stderr_bytes)
    async with open_call(sandbox, policy, argv, cwd=cwd, env=env, quota=quota, holder=holder) as call:
        await _supervise(call, stdin, timeout_s, stdout, stderr, on_output)
    return call.result(stdout, stderr)


@dataclasses.dataclass
class Call:
    """A call handed to its session's sandbox: its pipes (ours), its state, and what it answers to.

    Shared by the calls `run_sandboxed` waits for and the background processes (processes.py) that
    outlive the tool call that started them: both read the status pipe, stop the call the same way and
    phrase its outcome the same way; only how long they wait and where the output goes differ.
    """

    sandbox: Sandbox
    policy: SandboxPolicy
    pipes: _Pipes
    state: _CallState
    holder: SandboxHolder
    quota: WorkdirQuota
    started: float

    @property
    def done(self) -> anyio.Event:
        """Set once the call is over (the end of its status pipe)."""
        return self.state.done

    async def read_status(self) -> None:
        """Read the status pipe to its end (run as a task for the call's whole life)."""
        await _read_status(self.pipes.status, self.state)

    async def stop(self) -> None:
        """Kill the call's whole tree (see `_stop_call`); returns once it is over."""
        await _stop_call(self.pipes, self.state, self.holder)

    async def supervise_quota(self) -> None:
        """Run beside the call: the workdir's quota stops it when it must (see quota.py)."""
        self.state.quota_excess = await self.quota.supervise(self.stop)
        self.state.quota_stopped = True

    async def supervise(self, limit_s: float, on_limit: Callable[[], Awaitable[None]], io: Sequence[IoTask]) -> None:
        """Run the call to its end: its status, its `io` tasks (the stdio pipes) and its quota, calling
        `on_limit` (which must end the call) when it runs for `limit_s`. Any exception or cancellation
        kills the call's tree before it propagates."""
        try:
            async with anyio.create_task_group() as io_group:
                io_group.start_soon(self.read_status)
                for task in io:
                    io_group.start_soon(task)
                async with anyio.create_task_group() as watch_group:
                    watch_group.start_soon(self.supervise_quota)
                    with anyio.move_on_after(limit_s) as deadline:
                        await self.done.wait()
                    if deadline.cancelled_caught:
                        await on_limit()
                    watch_group.cancel_scope.cancel()
                # The call is over, so the pipes close unless something escaped its tree: bound the wait.
                io_group.cancel_scope.deadline = anyio.current_time() + _DRAIN_GRACE_S
        except BaseException:
            await self.stop()
            raise
        finally:
            self.pipes.cancel_call()

    def outcome(self) -> Outcome:
        """Exit status, rusage and error of a call that is over; SandboxUnavailable for a strict abort."""
        if self.state.quota_excess is None:
            self.state.quota_excess = self.quota.full_after_call()
        if self.state.sandbox is not None:
            self.state.denied = self.state.sandbox.denied()
        return _outcome(self.state)

    def result(self, stdout: CappedBuffer, stderr: CappedBuffer) -> ExecResult:
        outcome = self.outcome()
        err_text = stderr.text()
        if outcome.exec_failed:
            err_text = (err_text + "\n" if err_text else "") + outcome.exec_failed
        return ExecResult(
            exit_code=outcome.exit_code,
            signal=outcome.signal,
            stdout=stdout.text(),
            stderr=err_text,
            stdout_truncated_bytes=stdout.dropped,
            stderr_truncated_bytes=stderr.dropped,
            timed_out=self.state.timed_out,
            quota_exceeded=self.state.quota_excess is not None,
            quota_mode=self.quota.mode,
            duration_ms=round((time.monotonic() - self.started) * 1000, 3),
            resource_usage=outcome.usage,
            protection=self.sandbox.report(self.state.report, self.policy),
            error=outcome.error,
            network_denied=self.state.denied,
            sandbox_restarted=self.state.restarted,
        )


@asynccontextmanager
async def open_call(
    sandbox: Sandbox,
    policy: SandboxPolicy,
    argv: Sequence[str],
    *,
    cwd: Path | str | None,
    env: Mapping[str, str] | None,
    quota: WorkdirQuota,
    holder: SandboxHolder,
) -> AsyncIterator[Call]:
    """Hand `argv` to the session's sandbox; the call's pipes are closed when the block ends (the caller
    makes sure the call is over by then). Raises like `run_sandboxed` (EMFILE becomes a `RequestError`)."""
    try:
        plan = _cap_file_size(_prepare(sandbox, policy, argv, cwd, env), quota)
        pipes = _Pipes()
    except OSError as exc:
        raise _request_error(exc) from None
    try:
        try:
            state = await _hand_over(plan, holder, pipes)
        except OSError as exc:
            raise _request_error(exc) from None
        yield Call(sandbox, policy, pipes, state, holder, quota, time.monotonic())
    finally:
        with anyio.CancelScope(shield=True):
            pipes.close_all()


def _request_error(exc: OSError) -> Exception:
    """Out of descriptors is the caller's to retry; any other OSError stays what it is."""
    return _out_of_descriptors(exc) if exc.errno in (errno.EMFILE, errno.ENFILE) else exc


async def _hand_over(plan: LaunchPlan, holder: SandboxHolder, pipes: _Pipes) -> _CallState:
    """Send the call to the session's sandbox (made again, once, when it turns out to be dead: the call
    never started then); the call's state, its report begun from the sandbox's."""
    session_box, restarted = await holder.get(plan)
    try:
        for attempt in range(2):
            sealed, _ = seal(plan)  # a fresh token: the status pipe accepts only this call's lines
            try:
                await session_box.send_call(sealed, pipes.theirs)
                report = session_box.report.for_call(sealed)
                return _CallState(report=report, restarted=restarted, sandbox=session_box)
            except SandboxGone as exc:
                if attempt:
                    raise SandboxUnavailable(f"the session's sandbox could not be reached: {exc}") from None
                await holder.replace(str(exc))
                session_box, _ = await holder.get(plan)
                restarted = "the session's sandbox had died (killed, or out of memory)"
        raise AssertionError("unreachable")
    finally:
        pipes.hand_over()


async def _stop_call(pipes: _Pipes, state: _CallState, holder: SandboxHolder) -> None:
    """Have the sandbox kill the call's tree; if it does not within the grace period (a call init that
    was stopped or killed by the command it ran), kill the sandbox and everything in it."""
    with anyio.CancelScope(shield=True):
        pipes.cancel_call()
        with anyio.move_on_after(_KILL_GRACE_S):
            await state.done.wait()
        if not state.done.is_set():
            await holder.replace("a call it ran could not be stopped")
            state.restarted = "the session's sandbox was killed: a call in it could not be stopped"
            await state.done.wait()


async def _supervise(
    call: Call,
    stdin: bytes | None,
    timeout_s: float,
    stdout: CappedBuffer,
    stderr: CappedBuffer,
    on_output: OutputCallback | None,
) -> None:
    async def time_out() -> None:
        call.state.timed_out = True
        await call.stop()

    await call.supervise(
        timeout_s,
        time_out,
        [
            lambda: _pump(call.pipes.stdout, stdout, "stdout", on_output),
            lambda: _pump(call.pipes.stderr, stderr, "stderr", on_output),
            lambda: _write_stdin(call.pipes, stdin),
        ],
    )


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a call ended, as every result reports it."""

    exit_code: int | None
    signal: int | None
    error: str | None
    exec_failed: str | None
    usage: ResourceUsage | None


def _outcome(state: _CallState) -> Outcome:
    report = state.report
    if report.abort and report.abort_strict:
        raise SandboxUnavailable(report.abort + "; the command did not run")
    exit_info = report.exit or {}
    exit_code = exit_info.get("exit_code")
    signum = exit_info.get("signal")
    error = report.abort or report.exec_failed
    if state.timed_out or state.quota_stopped:
        exit_code, signum = None, signal.SIGKILL
    elif report.exit is None and error is not None:
        exit_code = 125  # the launcher stopped before the command ran (like env's "cannot run" status)
    elif report.exit is None:
        exit_code, signum = None, signal.SIGKILL
        error = "the session's sandbox died during the call (killed from outside, or out of memory); retry"
    if state.quota_stopped:
        error = f"{state.quota_excess}; the call was stopped"
    elif state.quota_excess is not None and error is None:
        error = f"{state.quota_excess}: writes failed with 'No space left on device' (the command was not stopped)"
    usage = None
    if report.exit is not None:
        usage = ResourceUsage(
            cpu_user_s=float(exit_info.get("cpu_user_s") or 0.0),
            cpu_sys_s=float(exit_info.get("cpu_sys_s") or 0.0),
            peak_rss_kb=int(exit_info.get("peak_rss_kb") or 0),
        )
    return Outcome(exit_code, signum, error, report.exec_failed, usage)
