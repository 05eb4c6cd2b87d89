"""How the launcher is started and what it reports: shared by session sandboxes and the sync one-call run.

The status pipe's wire format: one Python dict literal per line (the launcher writes `repr`, which costs
it no import), at most 4,096 bytes, parsed here with `ast.literal_eval` (literals only, never code) and
then held to a fixed schema:

- every line has exactly the keys `token`, `event` and the fields of its event, each of its exact type
  (`True` is not an int here, nor `1` a bool);
- `token` is the plan's `status_token`, a per-call secret (`seal`) that the command cannot read after
  exec; the only line without it is the `abort` of a plan that could not be read, which ends the report;
- events come at most once and in protocol order: `namespaces`, `setup`, `applied`, `exec_failed`,
  `exit`, with `abort` in place of the stage that failed (see `_NEXT`). A session's sandbox reports the
  first two once, on its own pipe; each call's report starts from them (`LaunchReport.for_call`) and takes
  the rest from the call's pipe, under the call's own token.

Anything else is rejected whole, counted in `LaunchReport.rejected` and logged at debug level: a forged or
garbled line never changes a field. The `applied` event carries what the command process read back from
the kernel right before exec (linux/measure.py); the protections in the report are judged from those
readings against the plan, never from what the launcher meant to do.
"""

from __future__ import annotations

import ast
import dataclasses
import logging
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .launch_plan import NAMESPACE_NAMES, LaunchPlan
from .linux import measure

__all__ = [
    "LAUNCHER",
    "MAX_STATUS_LINE",
    "LaunchReport",
    "OneCall",
    "launcher_argv",
    "seal",
    "start_launcher",
]

LAUNCHER = Path(__file__).with_name("launcher.py")
#: Longer lines are rejected unparsed (the launcher shortens its texts to stay below PIPE_BUF).
MAX_STATUS_LINE = 4096
_log = logging.getLogger("hanzo_sandbox_mcp")


def launcher_argv(*args: str | int) -> list[str]:
    """The launcher runs with the server's interpreter in isolated mode, without site (fast start), with
    its mode and descriptors (`session CTRL STATUS`, `template CTRL`). Byte code caching stays on:
    recompiling the layer modules for every session would cost milliseconds."""
    return [sys.executable, "-I", "-S", str(LAUNCHER), *map(str, args)]


def control_pair() -> tuple[socket.socket, socket.socket]:
    """A session's (or the template's) control socket: ours, and the launcher's (inheritable)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.set_inheritable(True)
    return ours, theirs


@dataclass
class OneCall:
    """A one-call session started synchronously (`start_launcher`): the session process, the status pipe
    both the sandbox and the call report on, and the control socket kept open while the call runs."""

    proc: subprocess.Popen[bytes]
    status_fd: int
    control: socket.socket
    cancel_w: int

    def cancel(self) -> None:
        """Stop the call now (its whole tree is killed), as a timeout does."""
        if self.cancel_w >= 0:
            os.close(self.cancel_w)
            self.cancel_w = -1

    def close(self) -> None:
        """Let the session end once its call has (closing the control socket, and the cancel pipe, which
        no longer matters then); idempotent."""
        self.control.close()
        self.cancel()


def start_launcher(
    wire: bytes,
    *,
    capture: bool = False,
    extra_fds: tuple[int, ...] = (),
    argv_for: Callable[[int, int], list[str]] = lambda ctrl, status: launcher_argv("session", ctrl, status),
    call: bytes | None = None,
) -> OneCall:
    """Run a one-call session synchronously (the probe, tests, tools): `wire` (a plan's `to_wire()`, or
    anything, to test refusals) is the session's plan, then `call` (default: the same plan's
    `call_wire()`) its one call, whose status lines share the session's pipe (and, from the same plan, its
    token), so one `LaunchReport` reads the whole run in protocol order. The command's stdout and stderr
    are the process's `stdout`/`stderr` pipes with `capture`, else /dev/null; its stdin is /dev/null.
    The caller reads `status_fd` to its end (the call is over), closes it, then calls `close()`.
    Everything fits in the socket's buffer, so sending before anything is read cannot block."""
    from .launch_plan import LaunchPlan

    if call is None:
        try:
            call = LaunchPlan.from_wire(wire).call_wire()
        except (ValueError, TypeError, KeyError, EOFError):
            call = b"not a call"
    ours, theirs = control_pair()
    status_r, status_w = os.pipe()
    cancel_r, cancel_w = os.pipe()
    stdio = [os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC) for _ in range(3)]
    readers: list[int] = []
    if capture:
        for index in (1, 2):
            os.close(stdio[index])
            read_end, stdio[index] = os.pipe()
            readers.append(read_end)
    try:
        proc = subprocess.Popen(
            argv_for(theirs.fileno(), status_w),
            pass_fds=(theirs.fileno(), status_w, *extra_fds),
            stdin=subprocess.DEVNULL,
            stdout=stdio[1] if capture else subprocess.DEVNULL,
            stderr=stdio[2] if capture else subprocess.DEVNULL,
            env={},
        )
        if capture:
            # The command writes where the launcher does: hand the read ends to Popen, as if it made them.
            proc.stdout, proc.stderr = (os.fdopen(fd, "rb") for fd in readers)
            readers = []
        for message, fds in ((wire, []), (call, [*stdio, status_w, cancel_r])):
            try:
                socket.send_fds(ours, [message], fds) if fds else ours.send(message)
            except OSError:
                break  # the launcher died early; its status or exit code says why
    except BaseException:
        ours.close()
        for fd in (status_r, cancel_w, *readers):
            os.close(fd)
        raise
    finally:
        theirs.close()
        for fd in (status_w, cancel_r, *stdio):
            os.close(fd)
    return OneCall(proc, status_r, ours, cancel_w)


def seal(plan: LaunchPlan) -> tuple[LaunchPlan, LaunchReport]:
    """Give `plan` a fresh status token and this process's pid (the launcher's parent, whose death kills
    the sandbox), and return it with the report that accepts only lines carrying that token and judges the
    readings against this plan.

    Spawn the launcher from a thread that outlives it: its parent-death signal fires when the *thread*
    that forked it exits. The runner spawns from the event loop's thread; the probe from a worker thread
    that blocks until the launcher has exited."""
    sealed = plan.replace(status_token=secrets.token_hex(16), parent_pid=os.getpid())
    return sealed, LaunchReport(plan=sealed)


# --- the schema ------------------------------------------------------------------------------------------

Check = Callable[[Any], bool]

#: Keys of the `errors` mapping: the layer (or step) that failed.
ERROR_KEYS = frozenset(
    {
        "rootfs",
        "loopback",
        "user namespace",
        "uid_drop",
        "rlimits",
        "no_new_privs",
        "landlock",
        "landlock_scope",
        "proxy",
        "seccomp",
    }
)
CAPABILITY_KEYS = ("inh", "prm", "eff", "bnd", "amb")
RLIMIT_KEYS = frozenset({"as", "cpu", "nproc", "nofile", "fsize", "core"})


def _is_bool(value: Any) -> bool:
    return type(value) is bool


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_str(value: Any) -> bool:
    return type(value) is str


def _is_float(value: Any) -> bool:
    return type(value) is float


def _optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def _list_of(check: Check, length: int | None = None) -> Check:
    return lambda value: (
        type(value) is list and (length is None or len(value) == length) and all(check(item) for item in value)
    )


def _is_errors(value: Any) -> bool:
    return type(value) is dict and all(key in ERROR_KEYS and _is_str(text) for key, text in value.items())


def _is_namespaces(value: Any) -> bool:
    return type(value) is list and len(set(value)) == len(value) and all(name in NAMESPACE_NAMES for name in value)


def _is_caps(value: Any) -> bool:
    return value is None or (
        type(value) is dict
        and set(value) == set(CAPABILITY_KEYS)
        and all(_is_int(mask) and mask >= 0 for mask in value.values())
    )


def _is_rlimits(value: Any) -> bool:
    pair = _list_of(_is_int, 2)
    return type(value) is dict and all(name in RLIMIT_KEYS and pair(limits) for name, limits in value.items())


_ID = _optional(_is_int)
_SCHEMA: dict[str, dict[str, Check]] = {
    "namespaces": {"active": _is_namespaces, "error": _optional(_is_str)},
    "setup": {
        "errors": _is_errors,
        "rootfs": _is_bool,
        "proc": _is_bool,
        "private_tmp": _is_bool,
        "loopback": _is_bool,
        "scoped": _is_bool,
        "proxy": _is_bool,
    },
    "applied": {
        "errors": _is_errors,
        "user_ns": _is_bool,
        "landlock_abi": _optional(_is_int),
        "uids": _list_of(_ID, 3),
        "gids": _list_of(_ID, 3),
        "groups": _list_of(_ID),
        "no_new_privs": _optional(_is_int),
        "seccomp_mode": _optional(_is_int),
        "seccomp_filters": _optional(_is_int),
        "caps": _is_caps,
        "rlimits": _is_rlimits,
    },
    "abort": {"message": _is_str, "strict": _is_bool},
    "exec_failed": {"message": _is_str},
    "exit": {
        "status": _is_int,
        "exit_code": _optional(_is_int),
        "signal": _optional(_is_int),
        "cpu_user_s": _is_float,
        "cpu_sys_s": _is_float,
        "peak_rss_kb": _is_int,
    },
}
#: Which events may follow which: the launcher's stages in order, `abort` in place of a failed stage.
_NEXT = {
    "start": frozenset({"namespaces", "abort"}),
    "namespaces": frozenset({"setup", "abort"}),
    "setup": frozenset({"applied", "abort", "exit"}),
    "applied": frozenset({"exec_failed", "exit"}),
    "exec_failed": frozenset({"exit"}),
    "abort": frozenset({"exit"}),
    "exit": frozenset(),
    "closed": frozenset(),
}


class _Rejected(ValueError):
    pass


def _parse(line: bytes, token: str, stage: str) -> tuple[str, dict[str, Any], bool]:
    """(event, fields, carried the token) of a well-formed line that may come now; else `_Rejected`."""
    if len(line) > MAX_STATUS_LINE:
        raise _Rejected("line too long")
    try:
        event = ast.literal_eval(line.decode("utf-8"))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, UnicodeDecodeError):
        raise _Rejected("not a literal") from None
    if type(event) is not dict:
        raise _Rejected("not a dict")
    kind = event.get("event")
    schema = _SCHEMA.get(kind) if type(kind) is str else None
    if schema is None:
        raise _Rejected(f"unknown event {kind!r}")
    if kind not in _NEXT[stage]:
        raise _Rejected(f"{kind!r} cannot follow {stage!r}")
    sealed = event.get("token") == token and _is_str(token)
    # Only the abort of an unreadable plan comes before the launcher knows the token; it ends the report.
    unsealed_abort = kind == "abort" and stage == "start" and event.get("token") == "" and event.get("strict") is False
    if not (sealed or unsealed_abort):
        raise _Rejected("missing or wrong token")
    if set(event) != {"token", "event", *schema}:
        raise _Rejected(f"{kind!r} keys {sorted(map(str, event))} are not the schema's")
    for key, check in schema.items():
        if not check(event[key]):
            raise _Rejected(f"{kind!r}.{key} has the wrong type or value")
    return kind, {key: event[key] for key in schema}, sealed


# --- the report ------------------------------------------------------------------------------------------


@dataclass
class LaunchReport:
    """Everything the launcher said on its status pipe, merged, with each protection judged from what the
    command process read back (against `plan` where one is given)."""

    namespaces: list[str] = field(default_factory=list)
    namespace_error: str | None = None
    rootfs: bool = False
    proc: bool = False
    private_tmp: bool = False
    loopback: bool = False
    scoped: bool = False
    """The session's Landlock scope (signals, abstract unix sockets) is in force."""
    proxy: bool = False
    """The session's egress proxy listener is in place (made inside, served by the server)."""
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] | None = None
    capabilities: dict[str, int] | None = None
    user_ns: bool = False
    rlimits: bool = False
    no_new_privs: bool = False
    landlock_abi: int | None = None
    seccomp: bool = False
    errors: dict[str, str] = field(default_factory=dict)
    applied: bool = False
    abort: str | None = None
    abort_strict: bool = False
    exec_failed: str | None = None
    exit: dict[str, Any] | None = None
    plan: LaunchPlan | None = None
    """The plan the launcher ran: its token authenticates lines, its layers and limits are the expectation."""
    rejected: int = 0
    """Lines rejected (forged, garbled or out of order); none of them changed a field."""
    stage: str = "start"
    """The last event accepted ("closed" after an unsealed abort): which events may come next (`_NEXT`)."""

    @property
    def capabilities_empty(self) -> bool:
        """After exec the command can hold no capability: its inheritable, ambient and bounding sets were
        read back empty (what it holds before exec is cleared by exec, and nothing can be regained)."""
        caps = self.capabilities
        return caps is not None and caps["inh"] == caps["amb"] == caps["bnd"] == 0

    def for_call(self, plan: LaunchPlan) -> LaunchReport:
        """A call's report in this session's sandbox: the session's stages (namespaces, setup) as they were
        reported when it was made, the rest to come from the call's own pipe under `plan`'s token."""
        if self.stage != "setup":
            raise ValueError(f"the session's sandbox is not ready (its report stopped at {self.stage!r})")
        # At stage "setup" only the session's fields are set, so a copy carries exactly them (a field the
        # session adds later cannot be forgotten here); the mutable ones are copied, not shared.
        return dataclasses.replace(self, namespaces=list(self.namespaces), errors=dict(self.errors), plan=plan)

    def feed(self, line: bytes) -> bool:
        """Merge one line if it is well-formed, authentic and in order; otherwise count it and change nothing."""
        try:
            kind, fields, sealed = _parse(line, self.plan.status_token if self.plan else "", self.stage)
        except _Rejected as exc:
            self.rejected += 1
            _log.debug("status line rejected (%s): %.200r", exc, line)
            return False
        self.stage = kind if sealed else "closed"
        getattr(self, f"_on_{kind}")(fields)
        return True

    def feed_all(self, data: bytes) -> None:
        for line in data.splitlines():
            if line.strip():
                self.feed(line)

    # -- one handler per event ------------------------------------------------------------------------

    def _on_namespaces(self, fields: dict[str, Any]) -> None:
        self.namespaces = list(fields["active"])
        self.namespace_error = fields["error"]

    def _on_setup(self, fields: dict[str, Any]) -> None:
        self.errors.update(fields["errors"])
        for key in ("rootfs", "proc", "private_tmp", "loopback", "scoped", "proxy"):
            setattr(self, key, fields[key])

    def _on_abort(self, fields: dict[str, Any]) -> None:
        self.abort = fields["message"]
        self.abort_strict = fields["strict"]

    def _on_exec_failed(self, fields: dict[str, Any]) -> None:
        self.exec_failed = fields["message"]

    def _on_exit(self, fields: dict[str, Any]) -> None:
        self.exit = fields

    def _on_applied(self, fields: dict[str, Any]) -> None:
        self.applied = True
        self.errors.update(fields["errors"])
        self.user_ns = fields["user_ns"]
        self.landlock_abi = fields["landlock_abi"]
        self.uid, self.gid = measure.one_id(fields["uids"]), measure.one_id(fields["gids"])
        groups = fields["groups"]
        self.groups = None if None in groups else tuple(groups)
        self.capabilities = fields["caps"]
        in_force, reasons = measure.judge(self.plan, fields)
        self.no_new_privs, self.seccomp, self.rlimits = (in_force[k] for k in ("no_new_privs", "seccomp", "rlimits"))
        for layer, why in reasons.items():
            self.errors.setdefault(layer, why)  # the launcher's own error for a failed step comes first
