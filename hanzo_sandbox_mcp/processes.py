"""Background processes: commands that outlive the tool call that started them (`start_process`).

A background process is an ordinary call of its session's sandbox (`runner.Call`: the same hand-over, the
same per-call layers, the same status pipe, the same tree kill), supervised differently: no timeout but a
maximum lifetime, its output kept in a ring buffer per stream (server memory does not grow with what it
prints) that `read_process` drains, and its stdin kept open for `write_process`. It lives in the session's
sandbox, so it shares the session's workdir, /tmp and loopback (a server it runs is reachable from the
session's later calls and from no other session).

**Signals.** The server cannot signal it by pid: it lives in the session's pid namespace. So the command
runs as `/bin/sh -c 'echo $$ >&2; exec /bin/sh -c "$1"' sh COMMAND`: the wrapper writes its own pid, as
the session's pid namespace numbers it, as the first line of stderr (the server takes that line off the
stream), then execs the command in its place, so the pid stays the command's. `stop_process` delivers
its signal by running `kill -s SIG PID` as an ordinary call of the same session (same pid namespace, same
uid, same Landlock scope: it can signal nothing a command of the session could not), waits the grace
period, then closes the call's cancel pipe, upon which the sandbox kills the process's whole tree. The kill
is sent only while the process's status pipe is open; if the process exits in that instant and its pid is
reused at once, the signal reaches another process of the same session, never anything outside it.

**Lifetime.** A running process holds its session (`SessionManager.hold`): the session neither expires nor
is evicted, and `close_session`, eviction and shutdown cancel it, which kills its tree. An exited process's
record (its final state and unread output) stays until that output was read, or until its room is needed.

**Ids.** A process id is `secrets.token_urlsafe(24)` and bound to its session: a capability, listed only to
a caller that named the session.
"""

from __future__ import annotations

import logging
import re
import secrets
import signal as signals
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .config import ProcessSettings
from .errors import RequestError, SessionLimitReached, SessionNotFound
from .process_results import ProcessInfo, ProcessOutput, ProcessStarted, ProcessWrite, StreamRead
from .protection import EffectiveProtection
from .runner import Call, Outcome, chunks, open_call, run_sandboxed, write_all
from .sandbox.base import Sandbox
from .session_sandbox import SandboxMaker
from .sessions import Session, SessionManager

__all__ = ["PROCESS_ID_PATTERN", "BackgroundProcess", "ProcessRegistry", "RingBuffer", "parse_signal"]

_log = logging.getLogger("hanzo_sandbox_mcp.processes")

PROCESS_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{32}")
#: Writes the wrapper's pid (the command's, after the exec) as the first line of stderr.
_WRAPPER = 'echo "$$" >&2; exec /bin/sh -c "$1"'
_SHELL = "/bin/sh"
_COMMAND_CHARS = 200
#: How long start_process waits for the process to report its pid (the sandbox forks and execs it).
_START_WAIT_S = 10.0
#: How long the call that delivers a signal may take (it is `kill`, in a warm sandbox).
_SIGNAL_CALL_S = 5.0
#: write_process waits this long for the process to read; what it did not take is reported.
_WRITE_WAIT_S = 5.0
_WRITE_CHUNK = 4096
_FORGOTTEN_MAX = 4096
_PID_LINE_MAX = 32
_SIGNALS: dict[str, signals.Signals] = {
    name: signals.Signals[f"SIG{name}"]
    for name in ("TERM", "INT", "HUP", "QUIT", "KILL", "USR1", "USR2", "STOP", "CONT")
}


def parse_signal(value: object) -> signals.Signals:
    """A signal given by name (`TERM`, `SIGTERM`, any case) or number; RequestError for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        for signum in _SIGNALS.values():
            if signum == value:
                return signum
    elif isinstance(value, str):
        name = value.strip().upper().removeprefix("SIG")
        if name in _SIGNALS:
            return _SIGNALS[name]
    names = ", ".join(sorted(_SIGNALS))
    raise RequestError(f"signal {value!r} is not one stop_process sends; pass one of {names} (or its number)")


class RingBuffer:
    """The last `capacity` bytes of a stream, with the offset of each byte in the whole stream."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data = bytearray()
        self.total = 0
        """Bytes written to the stream so far."""

    @property
    def start(self) -> int:
        """The offset of the oldest byte still held."""
        return self.total - len(self._data)

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self._data += chunk[-self.capacity :]
        if len(self._data) > self.capacity:
            del self._data[: len(self._data) - self.capacity]  # CPython drops a bytearray's head in O(1)

    def read(self, offset: int, max_bytes: int, *, final: bool) -> tuple[int, bytes, int]:
        """(offset of the data, up to `max_bytes` from `offset` on, bytes dropped before it). Unless
        `final`, the data ends on a whole UTF-8 character (the rest of it comes with the next read)."""
        begin = max(offset, self.start)
        data = bytes(self._data[begin - self.start : begin - self.start + max_bytes])
        if not final or begin + len(data) < self.total:
            data = data[: _whole_utf8(data)]
        return begin, data, begin - offset


def _whole_utf8(data: bytes) -> int:
    """The length of `data` without a UTF-8 sequence cut at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # a continuation byte: look further back for the lead byte
        need = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
        return len(data) if need <= back or byte >> 3 == 0b11111 else len(data) - back
    return len(data)


@dataclass(eq=False)
class _WriteRequest:
    data: bytes
    close: bool
    written: int = 0
    done: anyio.Event = field(default_factory=anyio.Event)


@dataclass(eq=False)
class BackgroundProcess:
    """One background process: its call, its output and what the model read of it."""

    id: str
    session: Session
    command: str
    stdout: RingBuffer
    stderr: RingBuffer
    started: float = field(default_factory=time.monotonic)
    pid: int | None = None
    call: Call | None = None
    outcome: Outcome | None = None
    stopped_by: str | None = None
    error: str | None = None
    stdin_closed: bool = False
    cursors: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    ended: anyio.Event = field(default_factory=anyio.Event)
    """Set once its call is over and its outcome recorded."""
    changed: anyio.Event = field(default_factory=anyio.Event)
    """Set (and replaced) when output arrives, the pid is known or the process ends."""
    write_lock: anyio.Lock = field(default_factory=anyio.Lock)
    """One write_process at a time (a write is bounded, so the next waits a few seconds at most)."""
    requests_in: MemoryObjectSendStream[_WriteRequest] = field(init=False)
    requests_out: MemoryObjectReceiveStream[_WriteRequest] = field(init=False)

    def __post_init__(self) -> None:
        self.requests_in, self.requests_out = anyio.create_memory_object_stream[_WriteRequest](1)

    @property
    def running(self) -> bool:
        return not self.ended.is_set()

    def notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    def unread(self) -> bool:
        return any(ring.total > self.cursors[name] for name, ring in self.streams())

    def streams(self) -> tuple[tuple[str, RingBuffer], ...]:
        return (("stdout", self.stdout), ("stderr", self.stderr))

    def info(self) -> ProcessInfo:
        outcome = self.outcome
        return ProcessInfo(
            process_id=self.id,
            session_id=self.session.id,
            pid=self.pid,
            command=self.command[:_COMMAND_CHARS],
            state="running" if self.running else "exited",
            exit_code=outcome.exit_code if outcome else None,
            signal=outcome.signal if outcome else None,
            age_s=round(time.monotonic() - self.started, 3),
            stopped_by=self.stopped_by,
            error=self.error or (outcome.error if outcome else None),
        )

    def output(self, max_bytes: int) -> ProcessOutput:
        """Its state and the output not read yet (at most `max_bytes` per stream); `advance` consumes it."""
        final = not self.running
        reads = {}
        for name, ring in self.streams():
            offset, data, dropped = ring.read(self.cursors[name], max_bytes, final=final)
            reads[name] = StreamRead(
                text=data.decode("utf-8", "replace"),
                offset=offset,
                dropped_bytes=dropped,
                more=offset + len(data) < ring.total,
            )
        return ProcessOutput(process=self.info(), stdout=reads["stdout"], stderr=reads["stderr"])

    def advance(self, output: ProcessOutput) -> None:
        for name, read in (("stdout", output.stdout), ("stderr", output.stderr)):
            self.cursors[name] = read.offset + len(read.text.encode("utf-8", "surrogatepass"))

    def protection(self) -> EffectiveProtection:
        assert self.call is not None
        return self.call.sandbox.report(self.call.state.report, self.call.policy)


class ProcessRegistry:
    """Every background process of the server, by id; starts, reads, writes and stops them."""

    def __init__(
        self, settings: ProcessSettings, sessions: SessionManager, sandbox: Sandbox, maker: SandboxMaker
    ) -> None:
        self.settings = settings
        self._sessions = sessions
        self._sandbox = sandbox
        self._maker = maker
        self._processes: OrderedDict[str, BackgroundProcess] = OrderedDict()
        """Oldest first."""
        self._forgotten: OrderedDict[str, str] = OrderedDict()
        """Ids of records that were dropped -> why (for a precise error); bounded."""

    # -- lookup ----------------------------------------------------------------------------------------

    def of_session(self, session: Session) -> list[BackgroundProcess]:
        self._purge()
        return [p for p in self._processes.values() if p.session is session]

    def running(self, session: Session) -> tuple[ProcessInfo, ...]:
        """What runs in `session` (for its run results)."""
        return tuple(p.info() for p in self.of_session(session) if p.running)

    def get(self, process_id: object, session_id: str | None) -> BackgroundProcess:
        """The process a tool names; its session counts as used. RequestError for a bad or stale id, or
        one that does not belong to `session_id`."""
        if not isinstance(process_id, str) or PROCESS_ID_PATTERN.fullmatch(process_id) is None:
            raise RequestError(
                "process_id is not a process id this server issued (32 characters of A-Z, a-z, 0-9, '-', '_'); "
                "pass the process_id from start_process or list_processes exactly"
            )
        self._purge()
        process = self._processes.get(process_id)
        if process is None:
            why = self._forgotten.get(process_id, "it was never issued by this server, or the server restarted")
            raise RequestError(f"no background process {process_id}: {why}; list_processes shows the live ones")
        if session_id is not None and session_id != process.session.id:
            raise RequestError(
                f"process {process_id} does not belong to session {session_id}; pass the session_id it was "
                "started in, or omit session_id"
            )
        self._sessions.touch(process.session)
        return process

    def _purge(self) -> None:
        """Drop the records of ended sessions (their processes died with the session's sandbox)."""
        for process in [p for p in self._processes.values() if p.session.closed]:
            self._forget(process, "its session ended, and every process in it was killed")

    def _forget(self, process: BackgroundProcess, why: str) -> None:
        if self._processes.pop(process.id, None) is None:
            return
        self._forgotten[process.id] = why
        while len(self._forgotten) > _FORGOTTEN_MAX:
            self._forgotten.popitem(last=False)

    # -- start -----------------------------------------------------------------------------------------

    def _make_room(self, session: Session) -> None:
        """Free the record of an exited process to stay under the caps, else refuse with the cap's name."""
        settings = self.settings
        if len(self.of_session(session)) >= settings.max_per_session:
            self._drop_exited(p for p in self._processes.values() if p.session is session)
        if len(self.of_session(session)) >= settings.max_per_session:
            raise SessionLimitReached(
                f"this session already has {settings.max_per_session} background processes (processes."
                "max_per_session); stop one with stop_process, or wait for one to exit and read its output"
            )
        if len(self._processes) >= settings.max_total:
            self._drop_exited(self._processes.values())
        if len(self._processes) >= settings.max_total:
            raise SessionLimitReached(
                f"the server already runs {settings.max_total} background processes (processes.max_total); stop "
                "one you no longer need with stop_process, or retry later"
            )

    def _drop_exited(self, candidates: Iterable[BackgroundProcess]) -> None:
        exited = next((p for p in candidates if not p.running), None)
        if exited is not None:
            self._forget(exited, "it exited, and its record and unread output were dropped to make room")

    async def start(
        self, task_group: anyio.abc.TaskGroup, session: Session, command: str, cwd: str | None, stdin: bytes | None
    ) -> ProcessStarted:
        """Start `command` in `session`'s sandbox; returns once it runs (its pid known) or already ended."""
        self._make_room(session)
        capacity = self.settings.buffer_bytes
        process = BackgroundProcess(
            secrets.token_urlsafe(24), session, command, RingBuffer(capacity), RingBuffer(capacity)
        )
        await task_group.start(self._live, process, cwd, stdin)
        return ProcessStarted(process=process.info(), protection=process.protection())

    async def _live(
        self,
        process: BackgroundProcess,
        cwd: str | None,
        stdin: bytes | None,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """The process's whole life, as a task of the service: errors before it runs go to `start`."""
        session = process.session
        assert session.sandbox is not None  # checked by start
        started = False
        try:
            async with self._sessions.hold(session):
                policy = self._maker.policy_for(session.quota)
                argv = [_SHELL, "-c", _WRAPPER, "sh", process.command]
                async with open_call(
                    self._sandbox, policy, argv, cwd=cwd, env=None, quota=session.quota, holder=session.sandbox
                ) as call:
                    process.call = call
                    self._processes[process.id] = process
                    async with anyio.create_task_group() as group:
                        if stdin:
                            process.requests_in.send_nowait(_WriteRequest(stdin, close=False))
                        group.start_soon(self._supervise, process, call)
                        await self._until_running(process, call)
                        task_status.started()
                        started = True
                    process.outcome = call.outcome()
        except Exception as exc:
            if not started:
                self._processes.pop(process.id, None)
                raise
            process.error = str(exc)
            if process.stopped_by is None and session.closed:
                process.stopped_by = "its session ended"
        finally:
            process.ended.set()
            process.notify()
            if session.closed:
                self._forget(process, "its session ended, and every process in it was killed")

    async def _supervise(self, process: BackgroundProcess, call: Call) -> None:
        lifetime = self.settings.max_lifetime_s

        async def at_lifetime() -> None:
            await self._terminate(process, signals.SIGTERM, f"it reached its lifetime of {lifetime:g} s")

        async def notify_end() -> None:
            await call.done.wait()
            process.notify()

        await call.supervise(
            lifetime,
            at_lifetime,
            [
                lambda: self._pump(process, call.pipes.stdout, process.stdout),
                lambda: self._pump_stderr(process, call.pipes.stderr),
                lambda: self._write_stdin(process, call),
                notify_end,
            ],
        )
        if call.state.quota_stopped and process.stopped_by is None:
            process.stopped_by = "the session's disk quota"

    async def _until_running(self, process: BackgroundProcess, call: Call) -> None:
        """Wait (bounded) until the process reported its pid and the layers that fired, or ended."""
        with anyio.move_on_after(_START_WAIT_S):
            while process.pid is None and not call.done.is_set():
                await process.changed.wait()
            # The layers' line is written before the exec, the pid after it: it is at most in flight.
            while not call.state.report.applied and not call.done.is_set():
                await anyio.sleep(0.002)

    async def _pump(self, process: BackgroundProcess, fd: int, ring: RingBuffer) -> None:
        async for chunk in chunks(fd):
            ring.feed(chunk)
            process.notify()

    async def _pump_stderr(self, process: BackgroundProcess, fd: int) -> None:
        """Stderr, less its first line: the wrapper's pid (written before the command could write)."""
        head: bytes | None = b""
        async for chunk in chunks(fd):
            if head is not None:
                head += chunk
                line, newline, rest = head.partition(b"\n")
                if not newline and len(head) < _PID_LINE_MAX:
                    continue
                if newline and line.isdigit():
                    process.pid = int(line)
                    chunk = rest
                else:
                    chunk = head  # not the wrapper's line (it could not run): the stream as it came
                head = None
            process.stderr.feed(chunk)
            process.notify()

    async def _write_stdin(self, process: BackgroundProcess, call: Call) -> None:
        """Serve `write` requests while the call's pipes are open: the only place that writes its stdin, so
        no write ever reaches a descriptor closed (and reused) after the call ended."""
        async with process.requests_out:
            async for request in process.requests_out:
                with anyio.move_on_after(_WRITE_WAIT_S):
                    try:
                        for begin in range(0, len(request.data), _WRITE_CHUNK):
                            piece = request.data[begin : begin + _WRITE_CHUNK]
                            await write_all(call.pipes.stdin, piece)
                            request.written += len(piece)
                    except OSError:
                        request.close = True  # it closed its end (or exited): it reads nothing more
                if request.close and not process.stdin_closed:
                    process.stdin_closed = True
                    call.pipes.close(call.pipes.stdin)
                request.done.set()

    # -- read, write, stop -----------------------------------------------------------------------------

    async def wait_output(self, process: BackgroundProcess, wait_s: float) -> None:
        """Return at once when there is unread output or the process ended; else wait up to `wait_s`."""
        with anyio.move_on_after(wait_s):
            while process.running and not process.unread():
                await process.changed.wait()

    def consumed(self, process: BackgroundProcess, output: ProcessOutput) -> None:
        """`output` was returned: move the cursors past it; an exited process read to its end is dropped."""
        process.advance(output)
        if not process.running and not process.unread():
            self._forget(process, "it exited and its output was read to the end")

    async def write(self, process: BackgroundProcess, data: bytes, *, close_stdin: bool) -> ProcessWrite:
        """Write `data` to its stdin (waiting a few seconds at most for it to read), then close it if asked."""
        async with process.write_lock:
            if data and process.stdin_closed:
                raise RequestError(
                    f"cannot write to process {process.id}: its standard input was closed; start a new one"
                )
            request = _WriteRequest(data, close_stdin)
            try:
                process.requests_in.send_nowait(request)
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                raise RequestError(
                    f"cannot write to process {process.id}: it has exited; read_process shows how it ended"
                ) from None
            with anyio.move_on_after(_WRITE_WAIT_S + 1.0):
                await request.done.wait()
        return ProcessWrite(process=process.info(), written_bytes=request.written, stdin_closed=process.stdin_closed)

    async def stop(self, process: BackgroundProcess, signum: signals.Signals) -> None:
        """Send `signum`, wait the grace period, then kill its whole tree; returns once it ended."""
        if process.running:
            await self._terminate(process, signum, f"stop_process ({signum.name})")
        await process.ended.wait()

    async def _terminate(self, process: BackgroundProcess, signum: signals.Signals, why: str) -> None:
        call = process.call
        assert call is not None
        if process.stopped_by is None:
            process.stopped_by = why
        if signum != signals.SIGKILL and process.pid is not None and not call.done.is_set():
            await self._signal(process, signum)
            with anyio.move_on_after(self.settings.stop_grace_s):
                await call.done.wait()
        if not call.done.is_set():
            await call.stop()

    async def _signal(self, process: BackgroundProcess, signum: signals.Signals) -> None:
        """Deliver `signum` from inside the session: `kill` as an ordinary call (see the module docstring)."""
        session = process.session
        argv = [_SHELL, "-c", 'kill -s "$1" "$2"', "sh", signum.name.removeprefix("SIG"), str(process.pid)]
        try:
            async with self._sessions.hold(session):
                await run_sandboxed(
                    self._sandbox,
                    self._maker.policy_for(session.quota),
                    argv,
                    timeout_s=_SIGNAL_CALL_S,
                    quota=session.quota,
                    holder=session.sandbox,
                )
        except (RequestError, SessionNotFound, OSError) as exc:
            _log.info("could not signal a background process (%s); killing its tree instead", exc)
