"""The sandbox service: sessions, limits, the sandbox and the audit log behind one library API, no MCP.

`SandboxService` is what the MCP tools call, and what a program embedding the sandbox can call directly:

```python
async with SandboxService(settings) as service:
    result = await service.run_command("ls -la")
    again = await service.run_command("cat notes.txt", session_id=result.session_id)
```

Every method raises the package's own errors (`RequestError` for unusable arguments, `SessionNotFound`,
`SessionLimitReached`, `SandboxUnavailable`), each with a message written for the model that must act on it.
A command that ran returns a `RunResult` whatever its exit status; a timeout, an exceeded disk quota or a
setup failure is reported inside the result (`timed_out`, `quota_exceeded`, `error`) with the partial
output, and `RunResult.failure()` phrases it for the model.

Every call belongs to a client (`clients.py` says who that is; a library caller that names none is `LOCAL`,
the single client of a stdio server). A call without `session_id` uses its client's default session when
the client has a protocol session, and otherwise a single-call session of its own, made only once the call
is admitted, so a queued burst never fills the session table.

Calls queue rather than fail when the server is busy: each waits for a slot of its session
(`exec.max_concurrent_calls_per_session`), then for one of the server's slots
(`exec.max_concurrent_calls`), handed out fairly (`admission.py`): no client holds more than
`exec.max_concurrent_calls_per_client`, waiting clients take turns, then their sessions do. A queued call
can be cancelled like a running one, and then never runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import anyio
import anyio.abc
from pydantic import BaseModel, ConfigDict, Field

from .admission import FairAdmission
from .clients import LOCAL, ClientId
from .config import Settings
from .errors import RequestError
from .filenames import display_path, escape_name, quoted
from .linux.paths import reachable_by
from .netproxy.decisions import DecisionLog
from .netproxy.env import DEFAULT_PROXY_PORT
from .policy import NetworkMode, SandboxMode, SandboxPolicy
from .process_results import ProcessInfo, ProcessList, ProcessOutput, ProcessStarted, ProcessWrite
from .processes import BackgroundProcess as Process
from .processes import ProcessRegistry, parse_signal
from .protection import EffectiveProtection, LayerStatus
from .results import ExecResult
from .sandbox import Sandbox, ensure_required, for_mode
from .session_sandbox import EgressProxies, SandboxMaker
from .sessions import Session, SessionManager, open_beneath, relative_parts
from .workdir import command_owner

__all__ = [
    "MAX_CODE_BYTES",
    "MAX_COMMAND_BYTES",
    "MAX_READ_BYTES",
    "MAX_STDIN_BYTES",
    "Capabilities",
    "FileContent",
    "FileEntry",
    "FileListing",
    "ImplicitSession",
    "Limits",
    "NetworkAllowlist",
    "OnOutput",
    "PythonChoice",
    "RunResult",
    "SandboxService",
    "SessionClosed",
    "SessionInfo",
    "SessionRules",
]

_log = logging.getLogger("hanzo_sandbox_mcp.service")

#: A command travels as one argv string to `/bin/sh -c`; Linux caps a single argument at 128 KiB.
MAX_COMMAND_BYTES = 64 * 1024
MAX_CODE_BYTES = 1024 * 1024
MAX_STDIN_BYTES = 4 * 1024 * 1024
#: Largest file `read_file` returns (base64 makes it 4/3 larger on the wire, still under 1 MiB).
MAX_READ_BYTES = 512 * 1024
MAX_LIST_ENTRIES = 1000
#: Upper bound of one tool result on the wire: the structured content plus its JSON text copy.
RESULT_BUDGET_BYTES = 1024 * 1024 - 64 * 1024
_AUDIT_COMMAND_CHARS = 4096
#: Output of one stream that read_process returns at most (less when escaping makes it larger).
_PROCESS_READ_BYTES = 256 * 1024
#: Longest wait_s of read_process: a tool call should answer within a client's usual request timeout.
_MAX_WAIT_S = 60.0
_SHELL = "/bin/sh"
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_FALLBACK_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3")

OnOutput = Callable[[str, bytes], Awaitable[None]]
"""Called with (stream name, chunk) as a command produces output (progress notifications)."""

ImplicitSession = Literal["default", "protocol_session"]
"""What a call without session_id uses: "default", the default session of the one client (stdio, a
library); "protocol_session", the default session of the caller's protocol session, or a single-call
session for a caller without one (HTTP and SSE, where many clients share the server)."""


# -- result models -----------------------------------------------------------------------------------


class RunResult(ExecResult):
    """One command's result (every `ExecResult` field) plus the session it ran in."""

    session_id: str = Field(
        description="The session the command ran in: pass it back to reuse this workdir and its files."
    )
    processes: tuple[ProcessInfo, ...] = Field(
        (), description="The session's background processes still running (start_process) when the call ended."
    )

    @classmethod
    def of(cls, result: ExecResult, session_id: str, processes: tuple[ProcessInfo, ...] = ()) -> RunResult:
        """Attach a session handle to the runner's result (fields shared, not copied one by one)."""
        return cls(**dict(result), session_id=session_id, processes=processes)

    def failure(self) -> str | None:
        """Why this result is an error the model should act on, or None when the command just ran.

        A non-zero exit status is not a failure: the command ran and its status is data.
        """
        if self.timed_out:
            return (
                f"the command timed out after {self.duration_ms / 1000:.1f} s and its whole process tree "
                "was killed; the partial output is in the result. Pass a larger timeout_s (up to the "
                "server's max_timeout_s, see capabilities), or make the command do less per call."
            )
        if self.quota_exceeded and self.quota_mode == "filesystem":
            return (
                "the session's filesystem is full (its disk quota or its file limit, see capabilities): "
                "writes failed with 'No space left on device' and the command was not stopped; delete files "
                "you no longer need (or use a new session) and try again"
            )
        if self.quota_exceeded:
            return (
                "the session workdir went over its disk quota or its file limit (see capabilities) and the "
                "call was stopped; delete files you no longer need (or use a new session) and try again"
            )
        if self.error:
            return f"the command could not run as asked: {self.error}"
        return None


class SessionRules(BaseModel):
    """How long sessions and their files live."""

    model_config = ConfigDict(frozen=True)

    idle_ttl_s: float = Field(description="A session with no call for this long is deleted with its files.")
    max_sessions: int = Field(
        description="Sessions kept at once. To make room, an idle single-call session nobody reused goes first "
        "(oldest first), else the creating client's own least recently used idle one; never another client's "
        "session. Pre-warmed sandboxes do not count."
    )
    implicit_session: ImplicitSession = Field(
        description="What a call without session_id uses: 'default' (one default session for the connection, "
        "stdio) or 'protocol_session' (the default session of the caller's protocol session, i.e. "
        "Mcp-Session-Id or an SSE connection of a client that used the initialize handshake; a fresh "
        "single-call session for a caller without one, such as a 2026-07-28 client)."
    )
    retention: str = Field(description="The rules in words.")


class SessionInfo(BaseModel):
    """A session handle and where its files live."""

    model_config = ConfigDict(frozen=True)

    session_id: str = Field(description="Pass this to run_command/run_python/list_files to use this session.")
    workdir: str = Field(description="The session's working directory (commands start here).")
    rules: SessionRules


class SessionClosed(BaseModel):
    """The outcome of close_session."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    closed: bool = Field(description="True: the session ended and its workdir was deleted.")


_ESCAPED_NAMES = (
    "Names are escaped so any file name fits in text: a byte that is not UTF-8 or belongs to a control "
    "character is %XX, and a '%' followed by two hex digits is %25; pass names back exactly as listed."
)


class FileEntry(BaseModel):
    """One entry of a workdir listing (symbolic links are reported, never followed)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description=f"The file name. {_ESCAPED_NAMES}")
    path: str = Field(description="Path relative to the workdir, escaped like the name.")
    type: Literal["file", "directory", "symlink", "other"]
    size: int = Field(description="Size in bytes (of the link itself for a symlink).")
    escaped: bool = Field(False, description="True when the name on disk differs from `name` (it was escaped).")


class FileListing(BaseModel):
    """One directory of a session workdir."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    path: str = Field(description="The listed directory, relative to the workdir ('' for the workdir), escaped.")
    entries: tuple[FileEntry, ...]
    truncated: bool = Field(description=f"More than {MAX_LIST_ENTRIES} entries: only the first are listed.")


class FileContent(BaseModel):
    """A regular file read from a session workdir."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    path: str
    size: int
    data: bytes = Field(exclude=True)

    def text(self) -> str | None:
        """The content as text when it is UTF-8 without NUL bytes, else None (binary)."""
        if b"\x00" in self.data:
            return None
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError:
            return None


class PythonChoice(BaseModel):
    """The interpreter run_python uses, and why that one."""

    model_config = ConfigDict(frozen=True)

    path: str
    reason: str


class Limits(BaseModel):
    """The policy's resource limits, per call unless noted."""

    model_config = ConfigDict(frozen=True)

    max_memory_mb: int
    max_cpu_secs: int
    max_procs: int
    max_open_fds: int
    max_file_sz_mb: int
    tmp_size_mb: int
    workdir_quota_mb: int = Field(description="Disk quota of a session workdir (MiB).")
    workdir_inodes: int = Field(description="Files and directories a session workdir may hold.")
    quota_mode: Literal["filesystem", "polled"] = Field(
        description="'filesystem': each workdir is a filesystem of its own, so writes past the quota fail "
        "(ENOSPC) and the command goes on; 'polled': a background count stops a call that takes the workdir "
        "over the quota (it may overshoot by what is written between two counts)."
    )
    quota_mode_reason: str = Field(description="Why this quota mode (what this machine offers).")
    default_timeout_s: float
    max_timeout_s: float = Field(description="Largest timeout_s accepted; a larger one is refused.")
    max_concurrent_calls: int
    max_concurrent_calls_per_session: int
    max_concurrent_calls_per_client: int = Field(description="Slots one client may hold; waiting clients take turns.")
    max_stdout_bytes: int
    max_stderr_bytes: int
    max_command_bytes: int = MAX_COMMAND_BYTES
    max_code_bytes: int = MAX_CODE_BYTES
    max_stdin_bytes: int = MAX_STDIN_BYTES
    max_read_bytes: int = MAX_READ_BYTES
    max_processes_per_session: int = Field(description="Background processes one session may hold (start_process).")
    max_processes: int = Field(description="Background processes the whole server may hold.")
    process_buffer_bytes: int = Field(description="Output kept per stream of a background process (older is dropped).")
    process_max_lifetime_s: float = Field(description="A background process still running this long is stopped.")
    process_stop_grace_s: float = Field(description="Seconds between stop_process's signal and the kill of the tree.")


class NetworkAllowlist(BaseModel):
    """What `network = "allowlist"` lets through its egress proxy."""

    model_config = ConfigDict(frozen=True)

    allowed_domains: tuple[str, ...] = Field(description="Exact names, or *.example.com for its subdomains.")
    allowed_ports: tuple[int, ...]
    allowed_private_cidrs: tuple[str, ...] = Field(description="Private ranges a name may resolve to.")
    proxy_hosts: dict[str, str] = Field(description="Names the proxy resolves itself, before DNS.")
    proxy: str = Field(description="Where commands find the proxy (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY are set).")


class Capabilities(BaseModel):
    """What this server can enforce here, and the limits every call gets."""

    model_config = ConfigDict(frozen=True)

    platform: str = Field(description="Operating system, kernel release and machine.")
    sandbox: str = Field(description="The sandbox implementation in use ('null' means no isolation).")
    mode: SandboxMode = Field(description="HANZO_SANDBOX mode: auto, on (isolation required) or off.")
    strict: bool = Field(description="A layer the policy asks for but cannot apply makes calls fail.")
    layers: tuple[LayerStatus, ...] = Field(description="Each layer's availability here, with the reason.")
    protection: EffectiveProtection = Field(description="What the current policy gets on this machine.")
    network: NetworkMode
    network_allowlist: NetworkAllowlist | None = Field(
        None, description="network = 'allowlist': the destinations its egress proxy allows."
    )
    limits: Limits
    sessions: SessionRules
    python: PythonChoice
    server_uid: int | None
    command_uid: int | None = Field(
        description="Uid commands run as when one uid serves every session (a non-root server: its own); None "
        "when each session has its own (see session_uids)."
    )
    session_uids: tuple[int, int] | None = Field(
        None,
        description="A root server gives each session its own host uid and gid (the same number) from this "
        "range [first, last], so sessions are also kept apart by file ownership; each result's protection.uid "
        "says which one a call ran as.",
    )


# -- the service -------------------------------------------------------------------------------------


class SandboxService:
    """Runs commands and Python code in per-session workdirs through the sandbox. See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        sandbox: Sandbox | None = None,
        implicit_session: ImplicitSession = "default",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`implicit_session`: "default" where one client is served (stdio, a library), "protocol_session"
        where many share the server (HTTP, SSE); it sets the published rules and the per-client slot cap."""
        self.settings = settings
        self.sandbox = sandbox if sandbox is not None else for_mode(settings.mode)
        self.implicit_session = implicit_session
        limits = settings.exec
        self.admission = FairAdmission(
            limits.max_concurrent_calls, limits.client_slots(shared=implicit_session != "default")
        )
        self.sandboxes = SandboxMaker(self.sandbox, settings.policy)
        self.sessions = SessionManager(
            settings.sessions,
            max_calls_per_session=settings.exec.max_concurrent_calls_per_session,
            owner=command_owner(settings.policy.sandbox_uid, settings.policy.sandbox_gid),
            clock=clock,
            workdir_quota_mb=settings.policy.workdir_quota_mb,
            maker=self.sandboxes,
            tmp_size_mb=settings.policy.tmp_size_mb,
        )
        self.processes = ProcessRegistry(settings.processes, self.sessions, self.sandbox, self.sandboxes)
        self._task_group: anyio.abc.TaskGroup | None = None
        self._audit = _AuditLog(settings.audit_log) if settings.audit_log is not None else None
        self._python: PythonChoice | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.sessions.open()
        if self._audit is not None:
            self._audit.open()
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        audit = self._audit.write if self._audit is not None else None
        self.sandboxes.proxies = EgressProxies(self._task_group, DecisionLog(audit=audit))
        self._task_group.start_soon(self._sweep_expired)
        self._task_group.start_soon(self.sessions.keep_pool)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        await self.aclose()
        assert self._task_group is not None
        return await self._task_group.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        """Cancel every call (killing its processes) and delete every workdir. Idempotent; shielded."""
        with anyio.CancelScope(shield=True):
            if self._task_group is not None:
                self._task_group.cancel_scope.cancel()
            await self.sessions.aclose()
            if self._audit is not None:
                self._audit.close()

    async def _sweep_expired(self) -> None:
        # Lookups also expire lazily; this loop deletes the files of sessions nobody asks about again.
        ttl = self.settings.sessions.idle_ttl_s
        while True:
            wait = self.sessions.seconds_until_next_expiry()
            await anyio.sleep(min(ttl, 60.0) if wait is None else min(wait + 0.05, 60.0))
            try:
                await self.sessions.expire_idle()
            except Exception:  # a background task never takes the service (and every session) down
                _log.exception("expiring idle sessions failed; retrying at the next sweep")

    # -- sessions --------------------------------------------------------------------------------------

    def session_rules(self) -> SessionRules:
        ttl = self.settings.sessions.idle_ttl_s
        limit = self.settings.sessions.max_sessions
        implicit = (
            "a call without session_id uses this connection's default session"
            if self.implicit_session == "default"
            else "a call without session_id uses the default session of your protocol session (Mcp-Session-Id, "
            "or the SSE connection, after an initialize handshake), which ends with it; without one (a "
            "2026-07-28 client) each such call gets a new single-call session (its session_id is in the result)"
        )
        return SessionRules(
            idle_ttl_s=ttl,
            max_sessions=limit,
            implicit_session=self.implicit_session,
            retention=(
                f"Files in a session's workdir persist between calls that pass its session_id; {implicit}. "
                f"A session and all its files are deleted after {ttl:g} s without a call, on close_session, and "
                f"when the server stops. At most {limit} sessions exist (pre-warmed sandboxes do not count); to "
                "make room, an idle single-call session nobody used again is deleted (oldest first), else your "
                "own least recently used idle session (never your default one). No session is deleted for "
                "another client's sake: when nothing can go, creating a session waits briefly, then fails. Copy "
                "out anything you need to keep."
            ),
        )

    async def create_session(self, *, client: ClientId = LOCAL) -> SessionInfo:
        """Open a fresh session with an empty workdir, owned by `client`."""
        session = await self.sessions.create(owner=client.key)
        return self._info(session)

    async def close_session(self, session_id: str) -> SessionClosed:
        """End a session: cancel its running calls (killing their processes) and delete its workdir."""
        session = await self.sessions.close(session_id)
        return SessionClosed(session_id=session.id, closed=True)

    def _info(self, session: Session) -> SessionInfo:
        return SessionInfo(session_id=session.id, workdir=str(session.workdir), rules=self.session_rules())

    async def client_left(self, client: ClientId) -> None:
        """`client`'s protocol session ended: so does its default session, files and all."""
        await self.sessions.end_default(client.key, "its client's protocol session ended")

    async def _lookup(self, session_id: str | None, client: ClientId) -> Session:
        """The session a call names, else its client's default session (a file call needs one that exists)."""
        if session_id is not None:
            return await self.sessions.get(session_id)
        if client.protocol_session:
            return await self.sessions.default(client.key)
        raise RequestError(
            "pass session_id: without a protocol session, every call without one runs in a new single-call "
            "session, so there is no implicit session to look into"
        )

    @asynccontextmanager
    async def _admitted(self, session_id: str | None, client: ClientId) -> AsyncIterator[Session]:
        """Hold a slot of the session, then a fair slot of the server, while the call runs in its session.

        A single-call session is made only after the server slot is granted: a queued burst of calls
        without session_id holds no session, and a cancelled queued call leaves nothing behind.
        """
        if session_id is None and not client.protocol_session:
            async with self.admission.slot(client.key, object()), self.sessions.single_call(client.key) as session:
                yield session
            return
        session = await self._lookup(session_id, client)
        async with self.sessions.call(session), self.admission.slot(client.key, session.id):
            yield session

    # -- running code ----------------------------------------------------------------------------------

    async def run_command(
        self,
        command: str,
        *,
        session_id: str | None = None,
        cwd: str | None = None,
        timeout_s: float | None = None,
        stdin: str | None = None,
        on_output: OnOutput | None = None,
        client: ClientId = LOCAL,
    ) -> RunResult:
        """Run `command` with `/bin/sh -c` in the session workdir (or `cwd`, relative to it)."""
        _check_text("command", command, MAX_COMMAND_BYTES, allow_empty=False)
        stdin_bytes = _stdin_bytes(stdin)
        timeout = self._timeout(timeout_s)
        async with self._admitted(session_id, client) as session:
            cwd_path = _workdir_subdir(session.workdir, cwd)
            return await self._run(
                "run_command",
                session,
                [_SHELL, "-c", command],
                audit_text=command,
                cwd=cwd_path,
                stdin=stdin_bytes,
                timeout_s=timeout,
                on_output=on_output,
            )

    async def run_python(
        self,
        code: str,
        *,
        session_id: str | None = None,
        timeout_s: float | None = None,
        stdin: str | None = None,
        on_output: OnOutput | None = None,
        client: ClientId = LOCAL,
    ) -> RunResult:
        """Run Python `code` in the session workdir with the interpreter `python_choice()` names.

        The code is written to `.hanzo_run_<n>.py` at the top of the workdir and run as
        `python <file>`: tracebacks show its line numbers and source, and the script's directory (the
        workdir) is first on `sys.path`, so modules the model saved there import. The file is removed
        when the call ends.
        """
        _check_text("code", code, MAX_CODE_BYTES, allow_empty=True)
        stdin_bytes = _stdin_bytes(stdin)
        timeout = self._timeout(timeout_s)
        python = self.python_choice().path
        async with self._admitted(session_id, client) as session:
            script = _write_script(session, code)
            try:
                return await self._run(
                    "run_python",
                    session,
                    [python, script],
                    audit_text=code,
                    cwd=None,
                    stdin=stdin_bytes,
                    timeout_s=timeout,
                    on_output=on_output,
                )
            finally:
                _remove_script(session.workdir, script)

    async def _run(
        self,
        tool: str,
        session: Session,
        argv: list[str],
        *,
        audit_text: str,
        cwd: str | None,
        stdin: bytes | None,
        timeout_s: float,
        on_output: OnOutput | None,
    ) -> RunResult:
        """Run `argv` in `session`, whose slots the caller holds (`_admitted`); audit the outcome."""
        from .runner import run_sandboxed  # the runner pulls in process machinery; load it on first use

        policy = self.sandboxes.policy_for(session.quota)
        try:
            if self.settings.mode is SandboxMode.ON:
                # HANZO_SANDBOX=on: refuse rather than run with nothing enforced (the probe is cached).
                await anyio.to_thread.run_sync(ensure_required, self.settings.mode, self.sandbox, policy)
            raw = await run_sandboxed(
                self.sandbox,
                policy,
                argv,
                cwd=cwd,
                stdin=stdin,
                timeout_s=timeout_s,
                output=self.settings.output,
                on_output=on_output,
                quota=session.quota,
                holder=session.sandbox,
            )
        except Exception as exc:
            self._audit_call(tool, session, audit_text, None, error=str(exc))
            raise
        result = fit_result(RunResult.of(raw, session.id, self.processes.running(session)))
        self._audit_call(tool, session, audit_text, result)
        return result

    # -- background processes --------------------------------------------------------------------------

    async def start_process(
        self,
        command: str,
        *,
        session_id: str | None = None,
        cwd: str | None = None,
        stdin: str | None = None,
        client: ClientId = LOCAL,
    ) -> ProcessStarted:
        """Start `command` with `/bin/sh -c` in the session's sandbox, outliving this call (processes.py)."""
        _check_text("command", command, MAX_COMMAND_BYTES, allow_empty=False)
        stdin_bytes = _stdin_bytes(stdin)
        if self._task_group is None:
            raise RuntimeError("SandboxService is not open (use `async with`)")
        group = self._task_group
        async with self._admitted(session_id, client) as session:
            cwd_path = _workdir_subdir(session.workdir, cwd)
            policy = self.sandboxes.policy_for(session.quota)
            if self.settings.mode is SandboxMode.ON:
                await anyio.to_thread.run_sync(ensure_required, self.settings.mode, self.sandbox, policy)
            try:
                started = await self.processes.start(group, session, command, cwd_path, stdin_bytes)
            except Exception as exc:
                self._audit_call("start_process", session, command, None, error=str(exc))
                raise
            self._audit_call("start_process", session, command, None, error=None)
            return started

    async def read_process(
        self, process_id: str, *, session_id: str | None = None, wait_s: float | None = None
    ) -> ProcessOutput:
        """The process's state and the output it wrote since the last read; with `wait_s`, wait up to that
        long for new output or for its exit first."""
        process = self.processes.get(process_id, session_id)
        if wait_s is not None:
            await self.processes.wait_output(process, self._wait(wait_s))
        return self._drain(process)

    async def write_process(
        self, process_id: str, text: str, *, session_id: str | None = None, close_stdin: bool = False
    ) -> ProcessWrite:
        """Write `text` to the process's standard input (then close it, with `close_stdin`)."""
        process = self.processes.get(process_id, session_id)
        data = _stdin_bytes(text)
        return await self.processes.write(process, data or b"", close_stdin=bool(close_stdin))

    async def stop_process(
        self, process_id: str, *, session_id: str | None = None, signal: str | int | None = None
    ) -> ProcessOutput:
        """Send `signal` (SIGTERM), wait the grace period, kill the tree; the final state and unread output."""
        process = self.processes.get(process_id, session_id)
        signum = parse_signal("TERM" if signal is None else signal)
        await self.processes.stop(process, signum)
        return self._drain(process)

    async def list_processes(self, session_id: str | None = None, *, client: ClientId = LOCAL) -> ProcessList:
        """The background processes of the session named (or the caller's default session)."""
        session = await self._lookup(session_id, client)
        self.sessions.touch(session)
        return ProcessList(session_id=session.id, processes=tuple(p.info() for p in self.processes.of_session(session)))

    def _drain(self, process: Process) -> ProcessOutput:
        """The output not read yet, as much as fits one result (the rest waits for the next read)."""
        limit = _PROCESS_READ_BYTES
        output = process.output(limit)
        while wire_size(output) > RESULT_BUDGET_BYTES and limit > 1024:
            limit //= 2
            output = process.output(limit)
        self.processes.consumed(process, output)
        return output

    def _wait(self, wait_s: float) -> float:
        if isinstance(wait_s, bool) or not isinstance(wait_s, int | float) or not (0 <= wait_s < float("inf")):
            raise RequestError(f"wait_s must be a number of seconds from 0 to {_MAX_WAIT_S:g}")
        if wait_s > _MAX_WAIT_S:
            raise RequestError(f"wait_s={wait_s:g} is more than {_MAX_WAIT_S:g} s; pass at most that and poll again")
        return float(wait_s)

    def _timeout(self, timeout_s: float | None) -> float:
        limits = self.settings.exec
        if timeout_s is None:
            return limits.default_timeout_s
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float):
            raise RequestError("timeout_s must be a number of seconds")
        if not (0 < timeout_s < float("inf")):
            raise RequestError(
                f"timeout_s must be a positive number of seconds, at most {limits.max_timeout_s:g}; "
                f"omit it for the default of {limits.default_timeout_s:g} s"
            )
        if timeout_s > limits.max_timeout_s:
            raise RequestError(
                f"timeout_s={timeout_s:g} exceeds this server's maximum of {limits.max_timeout_s:g} s; pass "
                f"a value up to {limits.max_timeout_s:g}, or split the work into shorter calls"
            )
        return float(timeout_s)

    def python_choice(self) -> PythonChoice:
        """The interpreter run_python uses (computed once)."""
        if self._python is None:
            self._python = choose_python(self.settings.exec.python, self.sessions.owner)
        return self._python

    # -- files -----------------------------------------------------------------------------------------

    async def list_files(
        self, session_id: str | None = None, path: str | None = None, *, client: ClientId = LOCAL
    ) -> FileListing:
        """List one directory of a session workdir (never following symbolic links)."""
        session = await self._lookup(session_id, client)
        parts = relative_parts(path, session.workdir)
        listing = await anyio.to_thread.run_sync(_list_directory, session.workdir, parts)
        entries, truncated = listing
        return FileListing(session_id=session.id, path=display_path(parts), entries=entries, truncated=truncated)

    async def read_file(self, session_id: str, path: str, *, max_bytes: int = MAX_READ_BYTES) -> FileContent:
        """Read a regular file of a session workdir, up to `max_bytes` (larger files are refused)."""
        session = await self.sessions.get(session_id)
        parts = relative_parts(path, session.workdir)
        if not parts:
            raise RequestError("pass the path of a file inside the workdir; list it with list_files")
        data = await anyio.to_thread.run_sync(_read_regular_file, session.workdir, parts, max_bytes)
        return FileContent(session_id=session.id, path=display_path(parts), size=len(data), data=data)

    # -- reporting -------------------------------------------------------------------------------------

    async def capabilities(self) -> Capabilities:
        """Platform, sandbox layers, the protection the policy gets, limits, session rules, interpreter."""
        settings = self.settings
        policy = settings.policy.with_workdir(self.sessions.root)
        # The probe behind effective()/layers() may run the launcher once: keep it off the event loop.
        protection, layers = await anyio.to_thread.run_sync(
            lambda: (self.sandbox.effective(policy), self.sandbox.layers())
        )
        uname = os.uname()
        quota_mode, quota_reason = await self.sessions.quota_mode()
        return Capabilities(
            platform=f"{sys.platform} {uname.release} {uname.machine}",
            sandbox=self.sandbox.name,
            mode=settings.mode,
            strict=policy.strict,
            layers=layers,
            protection=protection,
            network=policy.network,
            network_allowlist=_allowlist(policy),
            limits=Limits(
                max_memory_mb=policy.max_memory_mb,
                max_cpu_secs=policy.max_cpu_secs,
                max_procs=policy.max_procs,
                max_open_fds=policy.max_open_fds,
                max_file_sz_mb=policy.max_file_sz_mb,
                tmp_size_mb=policy.tmp_size_mb,
                workdir_quota_mb=policy.workdir_quota_mb,
                workdir_inodes=self.sessions.limits.inodes,
                quota_mode=quota_mode,
                quota_mode_reason=quota_reason,
                default_timeout_s=settings.exec.default_timeout_s,
                max_timeout_s=settings.exec.max_timeout_s,
                max_concurrent_calls=settings.exec.max_concurrent_calls,
                max_concurrent_calls_per_session=settings.exec.max_concurrent_calls_per_session,
                max_concurrent_calls_per_client=self.admission.per_client,
                max_stdout_bytes=settings.output.max_stdout_bytes,
                max_stderr_bytes=settings.output.max_stderr_bytes,
                max_processes_per_session=settings.processes.max_per_session,
                max_processes=settings.processes.max_total,
                process_buffer_bytes=settings.processes.buffer_bytes,
                process_max_lifetime_s=settings.processes.max_lifetime_s,
                process_stop_grace_s=settings.processes.stop_grace_s,
            ),
            sessions=self.session_rules(),
            python=self.python_choice(),
            server_uid=os.geteuid() if hasattr(os, "geteuid") else None,
            command_uid=None if self.sessions.uid_range else protection.uid,
            session_uids=self.sessions.uid_range,
        )

    # -- audit -----------------------------------------------------------------------------------------

    def _audit_call(
        self, tool: str, session: Session, text: str, result: RunResult | None, *, error: str | None = None
    ) -> None:
        if self._audit is None:
            return
        record: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            # The handle is a credential on HTTP: the log identifies a session by a digest of it.
            "session": hashlib.sha256(session.id.encode()).hexdigest()[:16],
            "tool": tool,
            "command": text[:_AUDIT_COMMAND_CHARS],
            "command_truncated": len(text) > _AUDIT_COMMAND_CHARS,
        }
        if result is not None:
            protection = result.protection
            record |= {
                "exit_code": result.exit_code,
                "signal": result.signal,
                "timed_out": result.timed_out,
                "quota_exceeded": result.quota_exceeded,
                "duration_ms": round(result.duration_ms, 3),
                "error": result.error,
                "protection": {
                    "sandbox": protection.sandbox,
                    "fs_isolated": protection.fs_isolated,
                    "network_isolated": protection.network_isolated,
                    "rlimits_applied": protection.rlimits_applied,
                    "network": protection.network.value,
                    "missing": len(protection.missing),
                },
            }
        else:
            record["error"] = (error or "")[:_AUDIT_COMMAND_CHARS]
        self._audit.write(record)


# -- helpers -----------------------------------------------------------------------------------------


def _allowlist(policy: SandboxPolicy) -> NetworkAllowlist | None:
    if policy.network is not NetworkMode.ALLOWLIST:
        return None
    return NetworkAllowlist(
        allowed_domains=policy.allowed_domains,
        allowed_ports=policy.allowed_ports,
        allowed_private_cidrs=policy.allowed_private_cidrs,
        proxy_hosts=dict(policy.proxy_hosts),
        proxy=f"http://127.0.0.1:{DEFAULT_PROXY_PORT} (HTTP CONNECT, absolute-URI HTTP, SOCKS5 with names)",
    )


def _check_text(name: str, value: object, max_bytes: int, *, allow_empty: bool) -> None:
    if not isinstance(value, str):
        raise RequestError(f"{name} must be a string")
    if not allow_empty and not value.strip():
        raise RequestError(f"{name} is empty; pass the {name} to run")
    if "\x00" in value:
        raise RequestError(f"{name} contains a NUL byte, which no shell or interpreter accepts; remove it")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise RequestError(f"{name} is not valid Unicode (it holds a lone surrogate); send UTF-8 text") from None
    if size > max_bytes:
        hint = (
            "write long programs to a file with run_python, or pass data through stdin"
            if name == "command"
            else "split it into modules saved in the workdir, or pass data through stdin"
        )
        raise RequestError(f"{name} is {size} bytes, more than the {max_bytes}-byte limit; {hint}")


def _stdin_bytes(stdin: str | None) -> bytes | None:
    if stdin is None:
        return None
    if not isinstance(stdin, str):
        raise RequestError("stdin must be a string")
    data = stdin.encode("utf-8", "surrogatepass")  # stdin is data: pass whatever arrived
    if len(data) > MAX_STDIN_BYTES:
        raise RequestError(
            f"stdin is {len(data)} bytes, more than the {MAX_STDIN_BYTES}-byte limit; write the data to a "
            "file in the workdir in parts instead"
        )
    return data


def _workdir_subdir(workdir: Path, cwd: str | None) -> str | None:
    """`cwd` relative to the workdir, checked to be a real directory inside it (no link on the way)."""
    if cwd is None:
        return None
    if not isinstance(cwd, str):
        raise RequestError("cwd must be a string path relative to the session workdir")
    parts = relative_parts(cwd, workdir)
    if not parts:
        return None
    fd = open_beneath(workdir, parts, os.O_RDONLY | os.O_DIRECTORY)
    os.close(fd)
    return os.path.join(*parts)  # the str os.open turns back into the names' exact bytes


def _write_script(session: Session, code: str) -> str:
    """Write the code to a fresh file at the top of the workdir (never through a link); its name."""
    data = code.encode("utf-8")  # checked by _check_text
    fd = open_beneath(session.workdir, ())
    try:
        for _ in range(16):
            name = f".hanzo_run_{session.next_call_number()}.py"
            try:
                # O_EXCL: a file, link or FIFO the model planted under this name is never opened.
                out = os.open(name, _CREATE_FLAGS, 0o644, dir_fd=fd)
            except FileExistsError:
                continue
            except OSError as exc:
                raise RequestError(f"cannot write the code into the workdir: {exc.strerror}") from None
            try:
                os.fchmod(out, 0o644)  # readable by the command's uid whatever the umask
                view = memoryview(data)
                while view:
                    view = view[os.write(out, view) :]
            except OSError as exc:
                os.unlink(name, dir_fd=fd)
                raise RequestError(f"cannot write the code into the workdir: {exc.strerror}") from None
            finally:
                os.close(out)
            return name
        raise RequestError("cannot find a free file name for the code in the workdir; remove .hanzo_run_*.py")
    finally:
        os.close(fd)


def _remove_script(workdir: Path, name: str) -> None:
    try:
        fd = open_beneath(workdir, ())
    except RequestError:
        return  # the session ended meanwhile: its workdir is gone
    try:
        os.unlink(name, dir_fd=fd)
    except OSError:
        pass  # the code removed or replaced it itself
    finally:
        os.close(fd)


def _list_directory(workdir: Path, parts: tuple[str, ...]) -> tuple[tuple[FileEntry, ...], bool]:
    fd = open_beneath(workdir, parts, os.O_RDONLY | os.O_DIRECTORY)
    prefix = display_path(parts)
    entries: list[FileEntry] = []
    truncated = False
    try:
        with os.scandir(fd) as it:
            for entry in it:
                if len(entries) >= MAX_LIST_ENTRIES:
                    truncated = True
                    break
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                kind: Literal["file", "directory", "symlink", "other"]
                if entry.is_symlink():
                    kind = "symlink"
                elif entry.is_dir(follow_symlinks=False):
                    kind = "directory"
                elif entry.is_file(follow_symlinks=False):
                    kind = "file"
                else:
                    kind = "other"
                raw = os.fsencode(entry.name)
                name = escape_name(raw)
                path = f"{prefix}/{name}" if prefix else name
                escaped = name.encode("utf-8") != raw
                entries.append(FileEntry(name=name, path=path, type=kind, size=st.st_size, escaped=escaped))
    finally:
        os.close(fd)
    entries.sort(key=lambda e: e.name)
    return tuple(entries), truncated


def _read_regular_file(workdir: Path, parts: tuple[str, ...], max_bytes: int) -> bytes:
    shown = quoted(display_path(parts))
    fd = open_beneath(workdir, parts, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise RequestError(f"{shown} is a directory; list it with list_files")
        if not stat.S_ISREG(st.st_mode):
            raise RequestError(f"{shown} is not a regular file (a FIFO, socket or device); it cannot be read")
        if st.st_size > max_bytes:
            raise RequestError(
                f"{shown} is {st.st_size} bytes, over the {max_bytes}-byte read limit; read a part with "
                "run_command (head -c, tail -c, sed -n) or compress it first"
            )
        chunks: list[bytes] = []
        total = 0
        while total <= max_bytes:
            chunk = os.read(fd, min(65536, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise RequestError(f"{shown} grew past the {max_bytes}-byte read limit while being read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def choose_python(configured: str | None, owner: tuple[int, int]) -> PythonChoice:
    """The interpreter for run_python: the configured one, else the server's own (resolved), else the
    system's when the command uid cannot reach the server's (a pyenv or venv under a mode-700 /root)."""
    if configured:
        return PythonChoice(path=configured, reason="configured (exec.python)")
    own = os.path.realpath(sys.executable)
    uid, gid = owner
    if uid == os.geteuid() or reachable_by(own, uid, gid):
        return PythonChoice(path=own, reason="the server's own interpreter")
    for candidate in _FALLBACK_PYTHONS:
        if os.access(candidate, os.X_OK) and reachable_by(candidate, uid, gid):
            return PythonChoice(
                path=candidate,
                reason=f"the server's interpreter {own} is not reachable by uid {owner[0]}, which commands "
                f"run as; using the system Python (set exec.python to choose another)",
            )
    return PythonChoice(
        path=own,
        reason=f"the server's interpreter, although uid {owner[0]} may not reach it and no system Python "
        "was found; set exec.python",
    )


def wire_size(result: BaseModel) -> int:
    """Bytes a tool result takes on the wire: its JSON plus the same JSON quoted again as a text block."""
    body = result.model_dump_json()
    return len(body.encode("utf-8")) + len(json.dumps(body).encode("utf-8"))


def fit_result(result: RunResult, budget: int = RESULT_BUDGET_BYTES) -> RunResult:
    """Cut the middle of stdout/stderr further (counted as truncated) until the result fits `budget` bytes.

    The configured caps bound the bytes read; escaping (a control byte becomes `\\u0001`, twice over
    once the JSON is quoted into the text block) can still inflate them, so the result is measured. Like
    the runner's own cap, the head and the tail of each stream are kept.
    """
    size = wire_size(result)
    if size <= budget:
        return result
    keep = {"stdout": len(result.stdout), "stderr": len(result.stderr)}
    candidate = result
    for _ in range(32):
        excess = size - budget
        name = max(keep, key=lambda n: keep[n])
        # Uniform text shrinks in proportion; a character never costs more than 14 bytes on the wire.
        cut = max(keep[name] * excess // size + 1, excess // 14 + 1)
        keep[name] = max(0, keep[name] - cut)
        candidate = _shortened(result, keep)
        size = wire_size(candidate)
        if size <= budget:
            break
    return candidate


def _shortened(result: RunResult, keep: Mapping[str, int]) -> RunResult:
    """`result` with each stream cut to `keep[name]` characters of the original: head, marker, tail."""
    update: dict[str, object] = {}
    for name, chars in keep.items():
        text: str = getattr(result, name)
        if chars >= len(text):
            continue
        head, tail = text[: chars - chars // 2], text[len(text) - chars // 2 :] if chars // 2 else ""
        dropped = len(text[len(head) : len(text) - len(tail)].encode("utf-8", "surrogatepass"))
        update[name] = f"{head}\n[... {dropped} bytes cut to fit the result size limit ...]\n{tail}"
        key = f"{name}_truncated_bytes"
        update[key] = getattr(result, key) + dropped
    return result.model_copy(update=update)


class _AuditLog:
    """Append-only JSON lines, mode 0600; one line per call, written whole under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def write(self, record: Mapping[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._fd is None:
                return
            try:
                os.write(self._fd, line)
            except OSError as exc:
                _log.warning("audit log %s: %s", self.path, exc.strerror)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
