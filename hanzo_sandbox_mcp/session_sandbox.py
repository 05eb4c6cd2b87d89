"""A session's sandbox: one long-lived launcher process tree that every call of the session is forked in.

Making a sandbox (namespaces, private root, Landlock ruleset, session scope) costs tens of milliseconds and
an interpreter; forking a call inside a ready one costs about a millisecond. So a session's sandbox is made
once (`SessionSandbox.start`), each call is one message on its control socket (`send_call`), and the
sandbox goes with its session (`aclose`). See launcher.py for the processes inside.

Sandboxes are made by forking the warm template (`SandboxTemplate`), which imported the launcher once, so
that a new sandbox pays neither interpreter start-up nor imports and its processes share the template's
memory pages; a cold start (`template=None`) runs the launcher afresh, for one-call sessions (`run`, the
probe) and when no template can be had.

Every sandbox is watched through a pidfd of its supervisor: readable once it died (an OOM kill, a crash, a
kill from outside), and the way to kill it without a pid-reuse race. A sandbox that died is replaced by its
`SandboxHolder` on the next call, which says so in its result: the session's processes and /tmp were lost,
its workdir was not.
"""

from __future__ import annotations

import errno
import logging
import marshal
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from contextlib import suppress

import anyio
import anyio.abc

from .errors import SandboxUnavailable
from .launch import LaunchReport, control_pair, launcher_argv, seal
from .launch_plan import LaunchPlan
from .netproxy.decisions import DecisionLog, NetworkDenial
from .policy import SandboxPolicy
from .quota import WorkdirQuota
from .sandbox.base import Attachment, NoAttachment, Sandbox

__all__ = [
    "EgressProxies",
    "SandboxGone",
    "SandboxHolder",
    "SandboxMaker",
    "SandboxTemplate",
    "SessionSandbox",
    "bound_policy",
]

_log = logging.getLogger("hanzo_sandbox_mcp.session_sandbox")

#: Longest a sandbox may take to get ready (a loaded machine, a slow mount) before it counts as failed.
SETUP_TIMEOUT_S = 30.0
#: How long a stopped sandbox may take to kill its calls and exit before it is SIGKILLed.
STOP_GRACE_S = 2.0
_REPLY_TIMEOUT_S = 10.0


class SandboxGone(Exception):
    """The session's sandbox is dead (or unreachable): a call could not be sent to it."""


def _send(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


async def _send_async(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    while True:
        try:
            _send(sock, data, fds)
            return
        except BlockingIOError:
            await anyio.wait_writable(sock)


def _exited(pidfd: int) -> bool:
    return bool(select.select([pidfd], [], [], 0)[0])


class SandboxTemplate:
    """The warm template (`launcher.py template`): one per server, started on first use, restarted when it
    died. Requests are serialised (one fork at a time, a fraction of a millisecond each)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._lock = anyio.Lock()

    def _start(self) -> socket.socket:
        self._stop()
        ours, theirs = control_pair()
        try:
            # From the event loop's thread, which lives as long as the server: the template's parent-death
            # signal fires when the thread that spawned it ends.
            self._proc = subprocess.Popen(
                launcher_argv("template", theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env={},
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._control = ours
        return ours

    async def fork(self, control_fd: int, status_fd: int) -> tuple[int, int]:
        """A new session process holding `control_fd` and `status_fd`: its (pid, pidfd)."""
        async with self._lock:
            for attempt in range(2):
                control = self._control
                if control is None or self._proc is None or self._proc.poll() is not None:
                    control = self._start()
                try:
                    await _send_async(control, b"session", [control_fd, status_fd])
                    with anyio.fail_after(_REPLY_TIMEOUT_S):
                        await anyio.wait_readable(control)
                    data, fds, _flags, _ = socket.recv_fds(control, 4096, 1)
                except (OSError, TimeoutError) as exc:
                    _log.warning("the sandbox template did not answer (%s); starting it again", exc)
                    self._stop()
                    if attempt:
                        raise SandboxGone(f"the sandbox template failed: {exc}") from None
                    continue
                if not data:
                    self._stop()
                    continue
                reply = marshal.loads(data)
                if reply[0] != "session" or len(fds) != 1:
                    for fd in fds:
                        os.close(fd)
                    raise SandboxGone(f"the sandbox template could not fork: {reply[1]}")
                return int(reply[1]), fds[0]
        raise SandboxGone("the sandbox template exited")

    def _stop(self) -> None:
        if self._control is not None:
            self._control.close()  # end of file: the template exits
            self._control = None
        if self._proc is not None:
            with suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1.0)
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    async def aclose(self) -> None:
        async with self._lock:
            await anyio.to_thread.run_sync(self._stop)


class EgressProxies:
    """Serves the egress proxy of each `network = "allowlist"` sandbox (netproxy/) in a task group that
    outlives the sandboxes: the listening socket the sandbox's init made in its network namespace is
    accepted on here, outside the sandbox, so every connection a command makes to 127.0.0.1:3128 meets the
    allowlist. One decision log for the server; each sandbox's refusals are kept under its own tag."""

    def __init__(self, task_group: anyio.abc.TaskGroup, decisions: DecisionLog) -> None:
        self._task_group = task_group
        self.decisions = decisions

    def serve(self, listener: socket.socket, policy: SandboxPolicy, tag: str) -> anyio.CancelScope:
        """Start serving `listener` (taken over); cancel the scope to stop and close it."""
        from .netproxy import proxy

        scope = anyio.CancelScope()

        async def run() -> None:
            try:
                with scope:
                    await proxy.serve(listener, policy, session_tag=tag, decisions=self.decisions)
            finally:
                listener.close()
                self.decisions.forget(tag)

        self._task_group.start_soon(run)
        return scope


class SessionSandbox:
    """One ready sandbox. `plan` is what it was made from (its session part), `report` what its making
    reported (namespaces, setup), the start of every call's report."""

    def __init__(
        self,
        plan: LaunchPlan,
        report: LaunchReport,
        control: socket.socket,
        pid: int,
        pidfd: int,
        proc: subprocess.Popen[bytes] | None,
        attachment: Attachment,
    ) -> None:
        self.plan = plan
        self.pid = pid
        """The supervisor's pid in the server's pid namespace (for logs and tests; signals go by `_pidfd`)."""
        self.report = report
        self._control = control
        self._pidfd = pidfd
        self._proc = proc
        self.attachment = attachment
        self.closed = False
        self.tag = secrets.token_hex(8)
        """Names this sandbox in the egress proxy's decisions (refusals are the session's, see `denied`)."""
        self._proxies: EgressProxies | None = None
        self._proxy_scope: anyio.CancelScope | None = None

    @classmethod
    async def start(
        cls,
        sandbox: Sandbox,
        policy: SandboxPolicy,
        plan: LaunchPlan,
        *,
        template: SandboxTemplate | None,
        proxies: EgressProxies | None = None,
    ) -> SessionSandbox:
        """Make and wait for a sandbox from `plan` (its session part is used). Raises SandboxUnavailable
        when a strict layer fails or the sandbox cannot be made, saying why."""
        session_plan, report = seal(plan.session_part())
        ours, theirs = control_pair()
        status_r, status_w = os.pipe()
        proc: subprocess.Popen[bytes] | None = None
        pidfd = -1
        try:
            if template is not None:
                pid, pidfd = await template.fork(theirs.fileno(), status_w)
            else:
                proc = subprocess.Popen(
                    launcher_argv("session", theirs.fileno(), status_w),
                    pass_fds=(theirs.fileno(), status_w),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    env={},
                )
                pid, pidfd = proc.pid, os.pidfd_open(proc.pid)
        except BaseException:
            ours.close()
            os.close(status_r)
            if proc is not None:
                proc.kill()
                proc.wait()
            raise
        finally:
            theirs.close()
            os.close(status_w)
        ours.setblocking(False)
        made = cls(session_plan, report, ours, pid, pidfd, proc, NoAttachment())
        try:
            # Before the plan is sent: the session process waits for it before it forks anything.
            made.attachment = sandbox.attach(pid, policy)
            await _send_async(ours, session_plan.to_wire(), [])
            with anyio.fail_after(SETUP_TIMEOUT_S):
                await _read_report(status_r, report)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await made.aclose()
            if isinstance(exc, TimeoutError):
                raise SandboxUnavailable(f"the session's sandbox was not ready within {SETUP_TIMEOUT_S:g} s") from None
            if isinstance(exc, OSError):
                raise SandboxUnavailable(f"the session's sandbox could not be made: {exc}") from None
            raise
        if session_plan.proxy_port is not None:
            made._serve_proxy(policy, proxies)
            if not made.report.proxy and session_plan.strict:
                with anyio.CancelScope(shield=True):
                    await made.aclose()
                why = made.report.errors.get("proxy", "not in place")
                raise SandboxUnavailable(f"strict policy: the egress proxy could not be set up ({why})")
        if report.stage != "setup":
            with anyio.CancelScope(shield=True):
                await made.aclose()
            why = report.abort or "its process exited while it was being made"
            if report.abort_strict:
                raise SandboxUnavailable(f"{why}; the command did not run")
            raise SandboxUnavailable(f"the session's sandbox could not be made: {why}; the command did not run")
        return made

    def _serve_proxy(self, policy: SandboxPolicy, proxies: EgressProxies | None) -> None:
        """Take the listener the init sent before it reported ready, and serve it."""
        report = self.report
        listener: socket.socket | None = None
        try:
            data, fds, _flags, _ = socket.recv_fds(self._control, 64, 1)
            if data == b"listener" and len(fds) == 1:
                listener = socket.socket(fileno=fds[0])
            else:
                for fd in fds:
                    os.close(fd)
        except (BlockingIOError, OSError):
            pass
        if listener is None or proxies is None:
            if listener is not None:
                listener.close()
            if report.proxy:
                report.errors.setdefault("proxy", "no egress proxy serves this sandbox")
            report.proxy = False
            return
        self._proxies = proxies
        self._proxy_scope = proxies.serve(listener, policy, self.tag)

    def denied(self) -> tuple[NetworkDenial, ...]:
        """The destinations the egress proxy refused for this sandbox since the last look."""
        if self._proxies is None:
            return ()
        return tuple(self._proxies.decisions.take_denied(self.tag))

    @property
    def alive(self) -> bool:
        return not self.closed and not _exited(self._pidfd)

    async def send_call(self, plan: LaunchPlan, fds: list[int]) -> None:
        """Hand one call (`plan`'s call fields and its five descriptors) to the sandbox; SandboxGone when
        it is dead, in which case the call never started."""
        if not self.alive:
            raise SandboxGone("the session's sandbox has exited")
        try:
            await _send_async(self._control, plan.call_wire(), fds)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                raise
            raise SandboxGone(f"the session's sandbox is unreachable ({exc.strerror})") from None

    def kill(self) -> None:
        """SIGKILL the supervisor: its init and pid namespace (every process of the session) follow."""
        with suppress(OSError):
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    async def aclose(self) -> None:
        """Kill every call, then the sandbox; wait until it is gone. Idempotent, never raises."""
        if self.closed:
            return
        self.closed = True
        if self._proxy_scope is not None:
            self._proxy_scope.cancel()
        with anyio.CancelScope(shield=True):
            with suppress(OSError):
                _send(self._control, b"stop", [])
            self._control.close()
            with anyio.move_on_after(STOP_GRACE_S):
                await anyio.wait_readable(self._pidfd)
            if not _exited(self._pidfd):
                self.kill()
                with anyio.move_on_after(STOP_GRACE_S):
                    await anyio.wait_readable(self._pidfd)
            os.close(self._pidfd)
            if self._proc is not None:
                with suppress(subprocess.TimeoutExpired):
                    await anyio.to_thread.run_sync(self._proc.wait, STOP_GRACE_S)
            self.attachment.release()


async def _read_report(fd: int, report: LaunchReport) -> None:
    """Feed the status pipe to `report` until its end (the sandbox is ready, or gone)."""
    os.set_blocking(fd, False)
    pending = b""
    try:
        while True:
            await anyio.wait_readable(fd)
            try:
                chunk = os.read(fd, 65536)
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


Starter = Callable[[LaunchPlan], Awaitable[SessionSandbox]]


class SandboxHolder:
    """A session's sandbox: made on first use (or handed over ready from the pool), replaced when it died
    or when a call needs another one (the policy changed), closed with the session."""

    def __init__(
        self,
        start: Starter,
        ready: SessionSandbox | None = None,
        *,
        before_restart: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._start = start
        self._sandbox = ready
        self._before_restart = before_restart
        """Run before a sandbox is made again (emptying the session's /tmp on disk: it was lost)."""
        self._lock = anyio.Lock()
        self.replacements = 0

    @property
    def current(self) -> SessionSandbox | None:
        return self._sandbox

    async def get(self, plan: LaunchPlan) -> tuple[SessionSandbox, str | None]:
        """The sandbox for `plan`, and why it had to be made again (None: it was there and alive)."""
        async with self._lock:
            sandbox = self._sandbox
            why: str | None = None
            if sandbox is not None and sandbox.plan.replace(status_token="", parent_pid=None) != plan.session_part():
                why = "the session's sandbox was made again for a changed policy"
            elif sandbox is not None and not sandbox.alive:
                why = "the session's sandbox had died (killed, or out of memory)"
            if sandbox is not None and why is None:
                return sandbox, None
            if sandbox is not None:
                await sandbox.aclose()
                self._sandbox = None
                self.replacements += 1
            if self.replacements and self._before_restart is not None:
                await self._before_restart()
            self._sandbox = await self._start(plan)
            return self._sandbox, why

    async def replace(self, why: str) -> None:
        """Drop the sandbox (it misbehaved: a call it could not stop); the next call makes a new one."""
        async with self._lock:
            if self._sandbox is not None:
                _log.warning("killing a session's sandbox: %s", why)
                await self._sandbox.aclose()
                self._sandbox = None
                self.replacements += 1

    async def aclose(self) -> None:
        async with self._lock:
            if self._sandbox is not None:
                await self._sandbox.aclose()
                self._sandbox = None


def bound_policy(policy: SandboxPolicy, quota: WorkdirQuota) -> SandboxPolicy:
    """`policy` bound to a session's workdir, and to its /tmp and /dev/shm on its quota filesystem."""
    scratch = (quota.tmp_dir, quota.shm_dir) if quota.tmp_dir and quota.shm_dir else None
    return policy.with_workdir(quota.path, scratch)


class SandboxMaker:
    """Makes the session sandboxes of one server: its sandbox backend and policy, and the warm template
    (Linux; elsewhere each sandbox is a cold start)."""

    def __init__(self, sandbox: Sandbox, policy: SandboxPolicy, *, warm: bool = True) -> None:
        self.sandbox = sandbox
        self.policy = policy
        self.template = SandboxTemplate() if warm and sys.platform.startswith("linux") else None
        self.proxies: EgressProxies | None = None
        """Set by the service once its task group runs (allowlist sandboxes need it)."""

    def policy_for(self, quota: WorkdirQuota) -> SandboxPolicy:
        return bound_policy(self.policy, quota)

    def holder(self, quota: WorkdirQuota, ready: SessionSandbox | None = None) -> SandboxHolder:
        """The holder of a session's sandbox (`ready`, or made on first use), remade on the same workdir."""
        policy = self.policy_for(quota)

        async def start(plan: LaunchPlan) -> SessionSandbox:
            return await SessionSandbox.start(self.sandbox, policy, plan, template=self.template, proxies=self.proxies)

        return SandboxHolder(start, ready, before_restart=quota.clear_scratch)

    async def make(self, quota: WorkdirQuota) -> SessionSandbox:
        """A ready sandbox for a new session on `quota`'s workdir (a pool entry, or an eager start)."""
        policy = self.policy_for(quota)
        plan = self.sandbox.harden(["true"], policy, env={})
        return await SessionSandbox.start(self.sandbox, policy, plan, template=self.template, proxies=self.proxies)

    async def aclose(self) -> None:
        if self.template is not None:
            await self.template.aclose()
