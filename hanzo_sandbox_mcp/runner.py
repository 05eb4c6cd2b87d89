"""Spawn one command through a sandbox, supervise it, and return an `ExecResult`.

The command is started through the launcher (see launcher.py) with its plan on a pipe. The runner then:
streams stdout and stderr with a cap per stream (memory stays bounded however much a command prints),
feeds stdin, reads the launcher's status pipe (what fired, exit status, rusage), enforces the wall-clock
timeout, lets the workdir's quota (quota.py) supervise the call, and on timeout, quota or cancellation kills
the whole process tree with cleanup shielded from further cancellation.

Nothing on this path walks the workdir: a call costs the same whatever the workdir holds.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import anyio
import anyio.abc

from .config import OutputSettings
from .errors import RequestError, SandboxUnavailable
from .launch import LaunchReport, launcher_argv, seal
from .launch_plan import LaunchPlan
from .output import CappedBuffer
from .policy import SandboxPolicy
from .quota import PolledQuota, QuotaLimits, WorkdirQuota
from .results import ExecResult, ResourceUsage
from .sandbox.base import Attachment, NoAttachment, Sandbox, require_workdir
from .workdir import resolve_inside

__all__ = ["OutputCallback", "run_sandboxed"]

OutputCallback = Callable[[str, bytes], Awaitable[None]]

_READ_CHUNK = 64 * 1024
_KILL_GRACE_S = 1.0
_DRAIN_GRACE_S = 2.0


@dataclasses.dataclass
class _CallState:
    report: LaunchReport = dataclasses.field(default_factory=LaunchReport)
    timed_out: bool = False
    quota_stopped: bool = False
    quota_excess: str | None = None
    """Why the quota counts as exceeded (stopped by it, or the filesystem filled up), if it does."""


def _validate_argv(argv: Sequence[str]) -> None:
    if not argv:
        raise RequestError("empty command: give the program to run")
    if any("\x00" in arg for arg in argv):
        raise RequestError("the command contains a NUL byte, which no program argument can hold; remove it")


async def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            await anyio.wait_writable(fd)
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                continue
    except (BrokenPipeError, OSError):
        pass  # the launcher died early; its status or exit code says why
    finally:
        os.close(fd)


async def _read_status(fd: int, report: LaunchReport) -> None:
    pending = b""
    try:
        while True:
            await anyio.wait_readable(fd)
            try:
                chunk = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                continue
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                report.feed(line)
    finally:
        os.close(fd)


async def _pump(
    stream: anyio.abc.ByteReceiveStream, buffer: CappedBuffer, name: str, on_output: OutputCallback | None
) -> None:
    async for chunk in stream:
        buffer.feed(chunk)
        if on_output is not None:
            await on_output(name, chunk)


async def _feed_stdin(stream: anyio.abc.ByteSendStream, data: bytes | None) -> None:
    try:
        if data:
            await stream.send(data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass  # the command does not read its stdin: not an error
    finally:
        await stream.aclose()


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


async def _kill_tree(process: anyio.abc.Process, attachment: Attachment) -> None:
    """SIGTERM asks the launcher to SIGKILL its sandbox (a whole pid namespace); SIGKILL follows if it
    lingers, and the session group and cgroup are killed too for the case without a pid namespace."""
    with anyio.CancelScope(shield=True):
        _signal(process.pid, signal.SIGTERM)
        attachment.kill()
        with anyio.move_on_after(_KILL_GRACE_S):
            await process.wait()
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _signal(process.pid, signal.SIGKILL)
        await process.wait()


async def _supervise_quota(
    quota: WorkdirQuota, state: _CallState, process: anyio.abc.Process, attachment: Attachment
) -> None:
    state.quota_excess = await quota.supervise(lambda: _kill_tree(process, attachment))
    state.quota_stopped = True


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


def _pipes() -> tuple[int, int, int, int]:
    """(plan_r, plan_w, status_r, status_w); on failure every descriptor already made is closed."""
    fds: list[int] = []
    try:
        for _ in range(2):
            fds.extend(os.pipe())
        os.set_blocking(fds[1], False)
        os.set_blocking(fds[2], False)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds[0], fds[1], fds[2], fds[3]


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
) -> ExecResult:
    """Run `argv` confined by `sandbox` under `policy` (whose `session_workdir` must be set).

    `cwd` is relative to the workdir and may not leave it. `quota` is the workdir's (a session's); without
    one the workdir is counted during this call only, with the policy's `workdir_quota_mb`. Raises
    `RequestError` for unusable arguments and when the server is out of file descriptors (retryable), and
    `SandboxUnavailable` when a strict policy's layer could not be applied (the command did not run).
    Cancellation kills the process tree before it propagates.
    """
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise RequestError("timeout_s must be a positive number of seconds")
    output = output or OutputSettings()
    adhoc = quota is None
    if quota is None:  # a directory of the caller's (`run --workdir`, tests): counted for this call only
        quota = PolledQuota(require_workdir(policy), QuotaLimits.of(policy.workdir_quota_mb), owned=False)
    try:
        plan = _cap_file_size(_prepare(sandbox, policy, argv, cwd, env), quota)
        plan, report = seal(plan)  # a fresh token: the status pipe accepts only this call's launcher
        return await _run(sandbox, policy, plan, report, stdin, timeout_s, output, on_output, quota)
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            raise _out_of_descriptors(exc) from None
        raise
    finally:
        if adhoc and isinstance(quota, PolledQuota):
            with anyio.CancelScope(shield=True):
                await quota.close()


async def _run(
    sandbox: Sandbox,
    policy: SandboxPolicy,
    plan: LaunchPlan,
    report: LaunchReport,
    stdin: bytes | None,
    timeout_s: float,
    output: OutputSettings,
    on_output: OutputCallback | None,
    quota: WorkdirQuota,
) -> ExecResult:
    stdout = CappedBuffer(output.max_stdout_bytes)
    stderr = CappedBuffer(output.max_stderr_bytes)
    state = _CallState(report=report)

    plan_r, plan_w, status_r, status_w = _pipes()
    started = time.monotonic()
    try:
        process = await anyio.open_process(
            launcher_argv(plan_r, status_w),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(plan_r, status_w),
            env={},
        )
    except BaseException:
        for fd in (plan_w, status_r):
            os.close(fd)
        raise
    finally:
        os.close(plan_r)
        os.close(status_w)

    attachment: Attachment | None = None
    try:
        # Attach before the plan is sent: the launcher waits for its plan before it forks anything.
        attachment = sandbox.attach(process.pid, policy)
        await _supervise(
            process,
            plan,
            plan_w,
            status_r,
            stdin,
            timeout_s,
            quota,
            stdout,
            stderr,
            state,
            attachment,
            on_output,
        )
    except BaseException:
        await _kill_tree(process, attachment or NoAttachment())
        raise
    finally:
        peak = attachment.memory_peak_bytes() if attachment else None
        if attachment is not None:
            attachment.release()
    if state.quota_excess is None:
        state.quota_excess = quota.full_after_call()
    duration_ms = (time.monotonic() - started) * 1000
    return _result(sandbox, policy, state, stdout, stderr, duration_ms, peak, quota)


async def _supervise(
    process: anyio.abc.Process,
    plan: LaunchPlan,
    plan_w: int,
    status_r: int,
    stdin: bytes | None,
    timeout_s: float,
    quota: WorkdirQuota,
    stdout: CappedBuffer,
    stderr: CappedBuffer,
    state: _CallState,
    attachment: Attachment,
    on_output: OutputCallback | None,
) -> None:
    assert process.stdin and process.stdout and process.stderr
    async with anyio.create_task_group() as io_group:
        io_group.start_soon(_write_all, plan_w, plan.to_wire())
        io_group.start_soon(_read_status, status_r, state.report)
        io_group.start_soon(_pump, process.stdout, stdout, "stdout", on_output)
        io_group.start_soon(_pump, process.stderr, stderr, "stderr", on_output)
        io_group.start_soon(_feed_stdin, process.stdin, stdin)
        async with anyio.create_task_group() as watch_group:
            watch_group.start_soon(_supervise_quota, quota, state, process, attachment)
            with anyio.move_on_after(timeout_s) as deadline:
                await process.wait()
            if deadline.cancelled_caught:
                state.timed_out = True
                await _kill_tree(process, attachment)
            watch_group.cancel_scope.cancel()
        # The launcher is gone, so the pipes close unless something escaped the tree: bound the wait.
        io_group.cancel_scope.deadline = anyio.current_time() + _DRAIN_GRACE_S


def _result(
    sandbox: Sandbox,
    policy: SandboxPolicy,
    state: _CallState,
    stdout: CappedBuffer,
    stderr: CappedBuffer,
    duration_ms: float,
    peak_bytes: int | None,
    quota: WorkdirQuota,
) -> ExecResult:
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
    if state.quota_stopped:
        error = f"{state.quota_excess}; the call was stopped"
    elif state.quota_excess is not None and error is None:
        error = f"{state.quota_excess}: writes failed with 'No space left on device' (the command was not stopped)"
    usage = None
    if report.exit is not None:
        peak_kb = int(exit_info.get("peak_rss_kb") or 0)
        if peak_bytes is not None:
            peak_kb = max(peak_kb, peak_bytes // 1024)
        usage = ResourceUsage(
            cpu_user_s=float(exit_info.get("cpu_user_s") or 0.0),
            cpu_sys_s=float(exit_info.get("cpu_sys_s") or 0.0),
            peak_rss_kb=peak_kb,
        )
    err_text = stderr.text()
    if report.exec_failed:
        err_text = (err_text + "\n" if err_text else "") + report.exec_failed
    return ExecResult(
        exit_code=exit_code,
        signal=signum,
        stdout=stdout.text(),
        stderr=err_text,
        stdout_truncated_bytes=stdout.dropped,
        stderr_truncated_bytes=stderr.dropped,
        timed_out=state.timed_out,
        quota_exceeded=state.quota_excess is not None,
        quota_mode=quota.mode,
        duration_ms=round(duration_ms, 3),
        resource_usage=usage,
        protection=sandbox.report(report, policy),
        error=error,
    )
