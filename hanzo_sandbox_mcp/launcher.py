"""The launcher: a session's long-lived sandbox, and each call forked inside it. Standard library only.

The server is multi-threaded (anyio), so it cannot fork and set up layers itself (no `preexec_fn`); it
runs this file as `python -I -S launcher.py ...` instead, in one of two modes:

- `session CTRL_FD STATUS_FD` makes one session's sandbox (a cold start);
- `template CTRL_FD` imports everything once and then forks a session process for each request that
  arrives on CTRL_FD (a warm start: no interpreter start-up, no import, and the session processes share
  the template's pages, so an idle session costs little memory). It answers each request with the new
  process's pid and a pidfd, through which the server watches and kills it.

A session's control socket (CTRL_FD, SOCK_SEQPACKET) carries first the session's `LaunchPlan` (never argv,
which /proc exposes), then one message per call: the call's fields (`LaunchPlan.call_wire`) with five file
descriptors: the command's stdin, stdout and stderr, the call's status pipe and its cancel pipe. Each stage
reports on a status pipe, one Python-literal dict per line in the fixed schema launch.py checks, each
carrying a per-plan token: the session's stages on STATUS_FD (closed once the sandbox is ready), a call's on
its own pipe. The command's line holds what it read back from the kernel right before exec, so the server's
report never claims a protection that did not fire.

Everything is imported before the private root replaces the filesystem (and before the uid switch): the
server's Python may live where the command cannot reach (pyenv under a 0700 /root), so nothing may be
imported lazily after that, which is also why the program is looked up on PATH by hand (`_exec`).

Start-up cost matters, so the launcher imports only builtins and small C modules: `_signal` instead of
`signal` (which imports `enum`), `_socket` instead of `socket`, `marshal` instead of `json` (`re`), no
`typing` or `dataclasses` at run time.

The processes of a session, each with one job (a call costs one fork of the init):

1. **supervisor** (in the host pid namespace): dies with its parent (PDEATHSIG), new session, child
   subreaper, unshares the namespaces (user, pid, mount, net, ipc, uts; as root the user namespace comes
   later, per call, after the uid switch, so that no command ever holds host uid 0; a root without
   CAP_SYS_ADMIN, as in a container, drops to the command's uid first and takes the non-root path),
   writes the id maps, turns non-dumpable, forks the init, and exits when the init does (after killing
   whatever was re-parented to it). Killing it kills the session: the init dies with it (PDEATHSIG), and
   with the init its whole pid namespace.
2. **init** (pid 1 of the session's pid namespace): makes mount propagation private, pivots into a
   private root made of the plan's `root` list only (rootfs.py: read-only binds, the workdir read-write, a
   fresh /proc, the session's /tmp and /dev/shm), brings up `lo` for `network = loopback`, builds the
   Landlock ruleset once and scopes itself (signals, abstract unix sockets) once for the whole session,
   then serves calls: for each one it forks the command, reaps it, and reports its exit status and
   rusage. When the command exits, times out or is cancelled (the server closed the call's cancel pipe),
   everything it started dies: while it runs, the command is a child subreaper (orphans of its children
   come to it), and when it exits they come to the init, which kills every child that is not a running
   command (`setsid` daemons and TERM-ignoring children included). On `stop` from the server it kills
   every call and exits; at end of file, once the running calls have ended.
3. **command**: takes its stdio, switches to the unprivileged uid, closes every other inherited fd, then
   in this order (later layers would block earlier ones): rlimits, PR_SET_NO_NEW_PRIVS, capabilities
   dropped, Landlock (the session's ruleset, enforced as a domain nested in the session's scope),
   seccomp last; reads its own state back from the kernel (linux/measure.py) and reports that, then
   execve.

With `strict`, a requested layer that fails, or reads back as not in force (measure.judge), aborts before
exec (fail closed) and the report names it.
"""

from __future__ import annotations

import _socket
import errno
import gc
import marshal
import os
import select
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from typing import Any
else:
    import _signal as signal  # the C module under `signal`, same functions and constants, without enum

if __name__ == "__main__":  # run as a file under -I -S: make the package importable without site
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hanzo_sandbox_mcp.launch_plan import LaunchPlan  # noqa: E402 (needs the sys.path line above)
from hanzo_sandbox_mcp.linux import measure  # noqa: E402 (stdlib only, and used on macOS too)

if sys.platform.startswith("linux"):
    # Imported now, while the package is still readable: after the uid switch or under Landlock the
    # command process may no longer be able to open these files.
    from hanzo_sandbox_mcp.linux import landlock, libc, loopback, mounts, namespaces, rlimits, rootfs, seccomp
    from hanzo_sandbox_mcp.linux.privilege import drop_to, own_effective_caps, root_path

EXIT_SETUP_FAILED = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
_STOP = (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
# Python itself ignores SIGPIPE and SIGXFSZ, and the template ignores SIGCHLD (its children are reaped by the
# kernel); an ignored disposition survives fork and exec, so without a reset `yes | head` would spin on EPIPE,
# a write past RLIMIT_FSIZE would not stop the writer, and a command's children would never become zombies.
_RESET_AT_EXEC = (*_STOP, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD)
#: Largest control message: a call's fields (argv up to the server's 64 KiB, the environment).
_MAX_MESSAGE = 1 << 20
#: A call's descriptors, in this order: the command's stdio, the call's status and cancel pipes.
_CALL_FDS = 5


class Reporter:
    """Writes one dict literal per line to the status pipe; each write is atomic (< PIPE_BUF).

    Every line carries the plan's `status_token`, a per-call secret that the server checks (launch.py):
    the command cannot read it after exec, so even a process that reached the pipe could not forge a
    line. `token` stays empty only for the abort of a plan that could not be read."""

    def __init__(self, fd: int, token: str = "") -> None:
        self.fd = fd
        self.token = token

    def send(self, event: str, **fields: Any) -> None:
        event_fields = {"token": self.token, "event": event, **fields}
        line = self._encode(event_fields)
        if len(line) > _MAX_LINE:  # a long path or command name in a message: shorten the texts, not the line
            line = self._encode({key: _shorten(value) for key, value in event_fields.items()})
        try:
            os.write(self.fd, line)
        except OSError:
            pass  # the server went away; the process tree dies with it

    @staticmethod
    def _encode(event: dict[str, Any]) -> bytes:
        return repr(event).encode("utf-8", "backslashreplace") + b"\n"


_MAX_LINE = 4000
_MAX_TEXT = 300


def _shorten(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _MAX_TEXT:
        return value[:_MAX_TEXT] + "..."
    if isinstance(value, dict):
        return {key: _shorten(item) for key, item in value.items()}
    return value


class Aborted(Exception):
    """Setup cannot go on: a requested layer failed under a strict plan (`strict`), or the command's
    working directory or uid cannot be had."""

    def __init__(self, message: str, *, strict: bool = False) -> None:
        super().__init__(message)
        self.strict = strict


def _failed(plan: LaunchPlan, errors: dict[str, str], layer: str, exc: BaseException) -> None:
    errors[layer] = str(exc) or type(exc).__name__
    if plan.strict:
        raise Aborted(f"strict policy: the {layer} layer could not be applied ({errors[layer]})", strict=True)


# --- the control socket -------------------------------------------------------------------------------


def _recv(sock: Any, max_fds: int) -> tuple[bytes, list[int]]:
    """One message and the descriptors that came with it (b"" at end of file). A message or a set of
    descriptors that did not fit is refused whole (ValueError), its descriptors closed."""
    data, ancillary, flags, _ = sock.recvmsg(_MAX_MESSAGE, _socket.CMSG_SPACE(max_fds * 4))
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(int.from_bytes(payload[i : i + 4], sys.byteorder) for i in range(0, usable, 4))
    if flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC):
        _close_all(fds)
        raise ValueError("a control message did not fit")
    return data, fds


def _send(sock: Any, data: bytes, fds: list[int]) -> None:
    payload = b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)
    ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, payload)] if fds else []
    sock.sendmsg([data], ancillary)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _control(fd: int) -> Any:
    return _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0, fd)


# --- the template ----------------------------------------------------------------------------------------


def serve_template(ctrl_fd: int) -> int:
    """Fork a session process for each request (one message with its control socket and status pipe) and
    answer with the new process's pid and a pidfd. Exits when the server closes the socket."""
    ctrl = _control(ctrl_fd)
    # Children are reaped by the kernel: the server watches each session through its pidfd.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    # Everything imported so far is shared with every session process forked from here: keep the
    # collector from touching (and so copying) those pages in each of them.
    gc.freeze()
    me = os.getpid()
    while True:
        try:
            data, fds = _recv(ctrl, 2)
        except (OSError, ValueError):
            continue
        if not data:
            return 0
        if data != b"session" or len(fds) != 2:
            _close_all(fds)
            continue
        try:
            pid = os.fork()
        except OSError as exc:
            _close_all(fds)
            _send(ctrl, marshal.dumps(("error", str(exc))), [])
            continue
        if pid == 0:
            ctrl.close()
            os._exit(session_main(fds[0], fds[1], parent=me))
        _close_all(fds)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as exc:
            _kill(pid, signal.SIGKILL)
            _send(ctrl, marshal.dumps(("error", f"pidfd_open: {exc}")), [])
            continue
        try:
            _send(ctrl, marshal.dumps(("session", pid)), [pidfd])
        finally:
            os.close(pidfd)


# --- stage 1: supervisor -------------------------------------------------------------------------------


def session_main(ctrl_fd: int, status_fd: int, *, parent: int | None) -> int:
    """A session process: read the session's plan, then make its sandbox. `parent` is the process whose
    death must kill this one (the template); None: the server named in the plan (a cold start)."""
    for signum in _RESET_AT_EXEC:
        signal.signal(signum, signal.SIG_DFL)
    status = Reporter(status_fd)
    linux = sys.platform.startswith("linux")
    if linux:
        # Die with our parent (SIGKILL of the server included): armed before anything else; the init and
        # every call die with this process in turn. A uid change clears it (supervise arms it again).
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    ctrl = _control(ctrl_fd)
    try:
        data, fds = _recv(ctrl, 0)
        _close_all(fds)
        plan = LaunchPlan.from_wire(data)
    except (OSError, ValueError, TypeError, KeyError, EOFError) as exc:
        status.send("abort", message=f"unreadable launch plan: {exc}", strict=False)
        return EXIT_SETUP_FAILED
    status.token = plan.status_token
    expected = parent if parent is not None else plan.parent_pid
    if expected is not None and os.getppid() != expected:
        # Our parent died before the signal was armed (we were re-parented): it will never come.
        status.send("abort", message="the server that started this sandbox has exited", strict=False)
        return EXIT_SETUP_FAILED
    if linux:
        return supervise(plan, status, ctrl)
    status.send("namespaces", active=[], error=None)
    return _run_init(plan, status, ctrl, [], None, False)


def supervise(plan: LaunchPlan, status: Reporter, ctrl: Any) -> int:
    os.setsid()
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
    _oom_first()
    is_root = os.geteuid() == 0
    if is_root and plan.uid is not None and not root_path(0, own_effective_caps()):
        # A container's root (no CAP_SYS_ADMIN) cannot unshare outside a user namespace: become the
        # command's uid now and take the non-root path, user namespace first.
        parent = os.getppid()
        try:
            drop_to(*_command_ids(plan, is_root))
        except OSError as exc:
            status.send("abort", message=f"cannot switch to uid {plan.uid}: {exc}", strict=False)
            return EXIT_SETUP_FAILED
        # The uid change cleared PDEATHSIG: arm it again, then make sure our parent did not die meanwhile.
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            return EXIT_SETUP_FAILED
        is_root = False
    # As root the user namespace is created by each command after it drops to the sandbox uid.
    wanted = [name for name in plan.namespaces if not (is_root and name == "user")]
    active, ns_error = _unshare(plan, wanted, is_root)
    # Non-dumpable from here on (after the id maps, which need /proc/self owned by us): the supervisor and
    # the init hold the control socket and the plan's token, and a non-dumpable process's /proc/PID/fd and
    # mem are closed to every process without CAP_SYS_PTRACE in the server's namespace, the command
    # (same uid without a pid namespace, or the same user namespace for a non-root server) included.
    libc.prctl(PR_SET_DUMPABLE, 0)
    status.send("namespaces", active=active, error=ns_error)
    if ns_error and plan.strict:
        status.send("abort", message=f"strict policy: namespaces could not be created ({ns_error})", strict=True)
        return EXIT_SETUP_FAILED

    # The init watches this pipe: its write end closes only when the supervisor dies.
    alive_r, alive_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(alive_w)
        os._exit(_run_init(plan, status, ctrl, active, alive_r, is_root))
    os.close(alive_r)
    # Only the init holds the control socket and the status pipe: their end of file tells the server that
    # the sandbox is ready (status) or gone (control).
    ctrl.close()
    os.close(status.fd)

    def stop_sandbox(_signum: int, _frame: object) -> None:
        _kill(child, signal.SIGKILL)  # the init takes its pid namespace with it

    for signum in _STOP:
        signal.signal(signum, stop_sandbox)
    _, wait_status = os.waitpid(child, 0)
    _reap_descendants()  # without a pid namespace, orphans were re-parented to us: kill them too
    return os.waitstatus_to_exitcode(wait_status) if os.WIFEXITED(wait_status) else EXIT_SETUP_FAILED


def _oom_first() -> None:
    """Without cgroup limits, RLIMIT_AS is per process: many processes together can still exhaust memory.
    Make the sandbox the kernel OOM killer's first choice, never the server or the user's programs
    (raising one's own oom_score_adj needs no privilege, and every child inherits it)."""
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write("1000")
    except OSError:
        pass


def _unshare(plan: LaunchPlan, wanted: list[str], is_root: bool) -> tuple[list[str], str | None]:
    if not wanted:
        return [], None
    uid, gid = os.getuid(), os.getgid()
    try:
        namespaces.unshare(namespaces.namespace_flags(wanted))
        if "user" in wanted:
            namespaces.write_id_maps(uid, uid, gid, gid)
    except OSError as exc:
        return [], f"unshare({','.join(wanted)}) failed: {exc}"
    return wanted, None


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _children() -> list[int]:
    pids: list[int] = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as handle:
                pids.extend(int(pid) for pid in handle.read().split())
    except OSError:
        pass
    return pids


def _reap_descendants() -> None:
    """Kill and reap whatever was re-parented to us (we are a child subreaper), until nothing is left."""
    while True:
        for pid in _children():
            _kill(pid, signal.SIGKILL)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


# --- stage 2: the session's init -------------------------------------------------------------------------


class Session:
    """What the init made once, which every call uses: the plan, the command's ids, the ruleset."""

    def __init__(
        self, plan: LaunchPlan, uid: int, gid: int, is_root: bool, private_root: bool, in_userns: bool
    ) -> None:
        self.plan = plan
        self.uid = uid
        self.gid = gid
        self.is_root = is_root
        self.private_root = private_root
        self.in_userns = in_userns
        self.ruleset_fd: int | None = None
        self.landlock_abi: int | None = None
        self.errors: dict[str, str] = {}
        """Errors of the session's layers (the ruleset), repeated in each call's report."""


def _run_init(
    plan: LaunchPlan, status: Reporter, ctrl: Any, active: list[str], alive_fd: int | None, is_root: bool
) -> int:
    linux = sys.platform.startswith("linux")
    if linux:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        # Orphans of a command that exited come to us (pid 1 does this anyway; without a pid namespace the
        # subreaper flag does), and are killed at once (`_reap_calls`).
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
    if alive_fd is not None:
        # getppid() is 0 inside a new pid namespace, so ask the pipe: readable (EOF) means the supervisor
        # died before PDEATHSIG was armed.
        if select.select([alive_fd], [], [], 0)[0]:
            return EXIT_SETUP_FAILED
        os.close(alive_fd)
    uid, gid = _command_ids(plan, is_root)
    setup: dict[str, Any] = {
        "rootfs": False,
        "proc": False,
        "private_tmp": False,
        "loopback": False,
        "scoped": False,
        "proxy": False,
    }
    errors: dict[str, str] = {}
    session = Session(plan, uid, gid, is_root, False, "user" in active)
    try:
        if linux:
            _setup_namespaces(plan, active, uid, gid, setup, errors)
            session.private_root = setup["rootfs"]
            _session_landlock(session, setup, errors)
            _proxy_listener(plan, ctrl, active, setup, errors)
    except Aborted as exc:
        status.send("abort", message=str(exc), strict=exc.strict)
        return EXIT_SETUP_FAILED
    status.send("setup", errors=errors, **setup)
    os.close(status.fd)  # end of file: the sandbox is ready
    # Each call is a fork of this process: keep the collector from walking (and so copying) the pages
    # every command process shares with it.
    gc.freeze()
    return _serve(session, ctrl)


def _command_ids(plan: LaunchPlan, is_root: bool) -> tuple[int, int]:
    if is_root and plan.uid is not None:
        return plan.uid, plan.gid if plan.gid is not None else plan.uid
    return os.getuid(), os.getgid()


def _setup_namespaces(
    plan: LaunchPlan, active: list[str], uid: int, gid: int, setup: dict[str, Any], errors: dict[str, str]
) -> None:
    if "mount" in active:
        try:
            mounts.make_private()
            if plan.root is not None:  # None: a mount namespace without a private root (tests of one layer)
                rootfs.build_root(
                    list(plan.root.read_only),
                    list(plan.root.read_write),
                    tmp_size_mb=plan.tmp_size_mb or 64,
                    uid=uid,
                    gid=gid,
                    fresh_proc="pid" in active,
                    scratch=plan.scratch,
                )
                setup.update(rootfs=True, proc="pid" in active, private_tmp=True)
        except OSError as exc:
            _failed(plan, errors, "rootfs", exc)
    if plan.loopback and "net" in active:
        try:
            loopback.bring_up_loopback()
            setup["loopback"] = True
        except OSError as exc:
            _failed(plan, errors, "loopback", exc)


def _proxy_listener(
    plan: LaunchPlan, ctrl: Any, active: list[str], setup: dict[str, Any], errors: dict[str, str]
) -> None:
    """`network = "allowlist"`: listen on 127.0.0.1 inside the session's network namespace and hand the
    socket to the server, whose egress proxy accepts on it (a socket stays in the namespace it was made
    in). Sent before the setup line, so the server has it once the sandbox reports ready."""
    if plan.proxy_port is None:
        return
    if not (plan.loopback and "net" in active and setup["loopback"]):
        _failed(plan, errors, "proxy", OSError(0, "no private loopback to listen on"))
        return
    listener = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        listener.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", plan.proxy_port))
        listener.listen(128)
        _send(ctrl, b"listener", [listener.fileno()])
        setup["proxy"] = True
    except OSError as exc:
        _failed(plan, errors, "proxy", exc)
    finally:
        listener.close()


def _session_landlock(session: Session, setup: dict[str, Any], errors: dict[str, str]) -> None:
    """Build the calls' ruleset once, and scope the session once (see landlock.scope_self): a call's
    domain then nests in the session's, so its processes may signal each other but nothing outside."""
    spec = session.plan.landlock
    if spec is None:
        return
    if spec.scope:
        try:
            # Needed by Landlock without CAP_SYS_ADMIN, and harmless here: nothing in a session may gain
            # privileges by exec anyway (each command sets it again).
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1)
            setup["scoped"] = landlock.scope_self()
        except OSError as exc:
            _failed(session.plan, errors, "landlock_scope", exc)
    # /tmp and /dev/shm are writable only when they are the session's own, never the host's; and `/` is
    # listable only when it is the private root (which holds the allowlist only), never the host's root
    # (whose listing shows every other session's and user's directory names).
    private = session.private_root
    read_write = (*spec.read_write, "/tmp", "/dev/shm") if private else spec.read_write
    try:
        session.ruleset_fd, result = landlock.build_ruleset(
            spec.read_exec, read_write, deny_tcp=spec.deny_tcp, scope=False, list_only=("/",) if private else ()
        )
        session.landlock_abi = result.abi
    except OSError as exc:
        _failed(session.plan, errors, "landlock", exc)
        session.errors["landlock"] = errors["landlock"]


class _Call:
    """A running call, as the init sees it: the command's pid, the call's status and cancel pipes."""

    __slots__ = ("cancel_fd", "pid", "status")

    def __init__(self, pid: int, status: Reporter, cancel_fd: int) -> None:
        self.pid = pid
        self.status = status
        self.cancel_fd = cancel_fd


def _serve(session: Session, ctrl: Any) -> int:
    """Fork the command of each call message and supervise it. `stop` from the server kills every call
    and ends the session; end of file ends it once the running calls have ended (a one-call session)."""
    calls: dict[int, _Call] = {}
    wake_r, wake_w = _signal_pipe()
    listening = True
    try:
        while listening or calls:
            watched = [wake_r, *(call.cancel_fd for call in calls.values())]
            if listening:
                watched.append(ctrl.fileno())
            ready = select.select(watched, [], [])[0]
            if wake_r in ready:
                _drain(wake_r)
            for call in calls.values():
                if call.cancel_fd in ready:
                    # The server closed the cancel pipe (timeout, quota, cancellation, or it died): the
                    # command's tree dies with it (its orphans come to us and are killed below).
                    _kill(call.pid, signal.SIGKILL)
            _reap_calls(calls)
            if not listening or ctrl.fileno() not in ready:
                continue
            try:
                data, fds = _recv(ctrl, _CALL_FDS)
            except ValueError:
                continue
            except OSError:
                data, fds = b"", []
            if data == b"stop":
                _close_all(fds)
                return 0
            if not data:
                listening = False
                continue
            started = _start_call(session, data, fds, ctrl, (wake_r, wake_w))
            if started is not None:
                calls[started.pid] = started
        return 0
    finally:
        for call in calls.values():
            _kill(call.pid, signal.SIGKILL)
        _reap_descendants()


def _signal_pipe() -> tuple[int, int]:
    """A pipe that becomes readable when SIGCHLD arrives (the handler itself does nothing)."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    return wake_r, wake_w


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _reap_calls(calls: dict[int, _Call]) -> None:
    """Report and forget the calls whose command ended, then kill every other child: an orphan that was
    re-parented to us when its call's command exited (a daemon, a TERM-ignoring child), which must not
    outlive its call. (While a command runs, its orphans go to it: it is a child subreaper.)"""
    while True:
        try:
            pid, wait_status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        call = calls.pop(pid, None)
        if call is None:
            continue
        if not sys.platform.startswith("linux"):
            try:
                os.killpg(pid, signal.SIGKILL)  # no subreaper there: the command led its process group
            except OSError:
                pass
        _kill_orphans(calls)
        call.status.send(
            "exit",
            status=wait_status,
            exit_code=os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else None,
            signal=os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None,
            cpu_user_s=usage.ru_utime,
            cpu_sys_s=usage.ru_stime,
            peak_rss_kb=usage.ru_maxrss,
        )
        _close_all([call.status.fd, call.cancel_fd])
    _kill_orphans(calls)


def _kill_orphans(calls: dict[int, _Call]) -> None:
    for pid in _children():
        if pid not in calls:
            _kill(pid, signal.SIGKILL)


def _start_call(session: Session, data: bytes, fds: list[int], ctrl: Any, wake: tuple[int, int]) -> _Call | None:
    """Fork the command of one call; None when the message is unusable (its descriptors are closed, and
    the call's status pipe closes without an exit line: the server says why)."""
    if len(fds) != _CALL_FDS:
        _close_all(fds)
        return None
    stdin, stdout, stderr, status_fd, cancel_fd = fds
    status = Reporter(status_fd)
    try:
        plan = session.plan.with_call(data)
    except (ValueError, TypeError, KeyError, EOFError) as exc:
        status.send("abort", message=f"unreadable call: {exc}", strict=False)
        _close_all(fds)
        return None
    status.token = plan.status_token
    try:
        pid = os.fork()
    except OSError as exc:
        status.send("abort", message=f"the sandbox cannot fork the command: {exc}", strict=False)
        _close_all(fds)
        return None
    if pid == 0:
        gc.disable()  # a few milliseconds to exec: a collection would only copy shared pages
        ctrl.close()
        signal.set_wakeup_fd(-1)
        _close_all([*wake, cancel_fd])
        for signum in _RESET_AT_EXEC:
            signal.signal(signum, signal.SIG_DFL)
        for target, fd in enumerate((stdin, stdout, stderr)):
            os.dup2(fd, target)
        if sys.platform.startswith("linux"):
            # Orphans of the command's own children come to it (the flag survives exec) rather than to
            # us, and to us only when it exits: then they are its call's leftovers, and die.
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
            os._exit(_run_command(session, plan, status))
        os._exit(_run_unconfined(plan, status))
    _close_all([stdin, stdout, stderr])
    return _Call(pid, status, cancel_fd)


# --- stage 4: the command ------------------------------------------------------------------------------


def _run_command(session: Session, plan: LaunchPlan, status: Reporter) -> int:
    errors: dict[str, str] = dict(session.errors)
    try:
        host_ids, own_userns = _become_command_user(plan, session.uid, session.gid, session.is_root, errors)
        # Die with the session's init (set after the uid switch, which clears it).
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        _enter_workdir(plan)
        _close_inherited_fds(status.fd, session.ruleset_fd)
        proc_status = measure.StatusReader()  # opened before Landlock, which need not grant /proc
        landlock_abi, filters_before = _confine(plan, session, proc_status, errors)
    except Aborted as exc:
        status.send("abort", message=str(exc), strict=exc.strict)
        return EXIT_SETUP_FAILED
    in_userns = session.in_userns or own_userns
    readings = _measure(plan, host_ids, in_userns, proc_status, filters_before, errors)
    proc_status.close()
    # Under strict, fail closed on what the kernel says, not only on a step that raised: a layer that reads
    # back as missing (a bug, or a mutation) stops the command before exec.
    missing = measure.judge(plan, readings)[1] if plan.strict else {}
    if missing:
        layers = "; ".join(f"{layer}: {why}" for layer, why in missing.items())
        status.send("abort", message=f"strict policy: a layer is not in force ({layers})", strict=True)
        return EXIT_SETUP_FAILED
    status.send("applied", errors=errors, user_ns=in_userns, landlock_abi=landlock_abi, **readings)
    return _exec(plan, status)


def _exec(plan: LaunchPlan, status: Reporter) -> int:
    """execve the command (behind its wrapper); returns only on failure, with the shell's exit codes: 127
    when no PATH entry holds the program, 126 when one does but cannot be executed."""
    argv = [*plan.wrapper, *plan.argv]
    error: OSError | None = None
    for candidate in _program_paths(argv[0], plan.env.get("PATH")):
        try:
            os.execve(candidate, argv, plan.env)
        except OSError as exc:
            # Like execvp: a name missing from one directory is looked for in the next; any other error
            # (EACCES, ENOEXEC, ...) is the answer unless a later directory holds a runnable program.
            if error is None or error.errno in (errno.ENOENT, errno.ENOTDIR):
                error = exc
    if error is None or error.errno in (errno.ENOENT, errno.ENOTDIR):
        why = error.strerror if error is not None else "PATH is empty"
        status.send("exec_failed", message=f"{argv[0]}: command not found ({why})")
        return EXIT_NOT_FOUND
    status.send("exec_failed", message=f"{argv[0]}: cannot execute ({error.strerror})")
    return EXIT_NOT_EXECUTABLE


def _program_paths(name: str, path_var: str | None) -> list[str]:
    """Where to look for `name`, in the private root where the lookup must happen. Not `os.execvpe`: it
    imports `warnings` lazily, which fails once the server's Python (under a 0700 /root, say) is out of
    reach, so this is plain string work with nothing left to import."""
    if "/" in name:
        return [name]
    entries = (os.defpath if path_var is None else path_var).split(":")
    return [f"{entry or '.'}/{name}" for entry in entries]


def _become_command_user(
    plan: LaunchPlan, uid: int, gid: int, is_root: bool, errors: dict[str, str]
) -> tuple[dict[str, Any] | None, bool]:
    """As root: switch to the sandbox uid, then create the user namespace. Returns the ids read in the
    server's own user namespace right after the switch (None when there was none to make), and whether
    this process made its own user namespace."""
    if not (is_root and plan.uid is not None):
        return None, False
    # Never run the command as host uid 0: DAC then protects /etc/shadow, /root and kernel tunables
    # even where another layer is missing. Fail closed: no uid switch, no command.
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise Aborted(f"cannot switch to uid {uid}: {exc}") from None
    # Read before the user namespace exists: in it, an id the map does not cover reads as 65534 (the
    # overflow uid), which is also the default sandbox uid, so only this reading cannot be fooled.
    host_ids = measure.ids(mapped=False)
    if "user" not in plan.namespaces:
        return host_ids, False
    try:
        # The uid switch made us non-dumpable, which leaves /proc/self/{setgroups,uid_map} owned
        # by root; exec would reset it anyway, and ptrace/core dumps are blocked by later layers.
        libc.prctl(PR_SET_DUMPABLE, 1)
        namespaces.unshare(namespaces.CLONE_FLAGS["user"])
        namespaces.write_id_maps(uid, uid, gid, gid)
        libc.prctl(PR_SET_DUMPABLE, 0)  # this process holds the status pipe until exec: see supervise()
    except OSError as exc:
        _failed(plan, errors, "user namespace", exc)
        return host_ids, False
    return host_ids, True


def _enter_workdir(plan: LaunchPlan) -> None:
    try:
        os.chdir(plan.cwd)
    except OSError as exc:
        raise Aborted(f"cannot enter working directory {plan.cwd}: {exc.strerror}") from None
    _make_tmpdir(plan.env.get("TMPDIR"))


def _close_inherited_fds(status_fd: int, ruleset_fd: int | None) -> None:
    """Only 0, 1, 2, the status pipe and the Landlock ruleset (both close-on-exec) survive: no server
    socket, pipe or file leaks, nor the session's control socket."""
    os.set_inheritable(status_fd, False)
    low = 3
    for keep in sorted(fd for fd in (status_fd, ruleset_fd) if fd is not None):
        os.closerange(low, keep)
        low = keep + 1
    os.closerange(low, _max_fd())


def _confine(
    plan: LaunchPlan, session: Session, proc_status: measure.StatusReader, errors: dict[str, str]
) -> tuple[int | None, int | None]:
    """rlimits, no_new_privs, capabilities, Landlock, seccomp last (each earlier step would be blocked by
    a later one). Returns the Landlock ABI that restrict_self enforced (None: none) and the number of
    seccomp filters before ours, so that a filter from outside (a container's) is not taken for ours."""
    if plan.rlimits:
        try:
            rlimits.apply_rlimits(plan.rlimits)
        except (OSError, ValueError) as exc:
            _failed(plan, errors, "rlimits", exc)

    if plan.no_new_privs or plan.landlock is not None or plan.seccomp_bpf is not None:
        try:
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1)
        except OSError as exc:
            _failed(plan, errors, "no_new_privs", exc)
        try:
            namespaces.drop_bounding_set()
        except OSError:
            pass  # without CAP_SETPCAP (no user namespace) there is nothing to drop beyond exec's clearing

    landlock_abi = None
    if plan.landlock is not None:
        if session.ruleset_fd is None:
            if plan.strict:  # the session's build failed: its error is in `errors` already
                why = errors.get("landlock", "no ruleset")
                raise Aborted(f"strict policy: the landlock layer could not be applied ({why})", strict=True)
        else:
            try:
                # enforce raises unless the kernel returned 0, so an ABI here is one in force.
                landlock.enforce(session.ruleset_fd)
                landlock_abi = session.landlock_abi
            except OSError as exc:
                _failed(plan, errors, "landlock", exc)
            os.close(session.ruleset_fd)

    filters_before = proc_status.read().get("Seccomp_filters")
    if plan.seccomp_bpf is not None:
        try:
            seccomp.install_filter(plan.seccomp_bpf)
        except OSError as exc:
            _failed(plan, errors, "seccomp", exc)
    return landlock_abi, filters_before


def _measure(
    plan: LaunchPlan,
    host_ids: dict[str, Any] | None,
    in_userns: bool,
    proc_status: measure.StatusReader,
    filters_before: int | None,
    errors: dict[str, str],
) -> dict[str, Any]:
    """The state the command will exec with, read back from the kernel: the report is built from this."""
    ids = measure.ids(mapped=in_userns)
    if host_ids is not None:
        if ids != host_ids:
            errors["uid_drop"] = f"the user namespace maps the command's ids to {ids}, not to {host_ids}"
        ids = host_ids
    fields = proc_status.read()
    filters = fields.get("Seccomp_filters")
    caps = measure.CAPABILITY_SETS
    return {
        **ids,
        "no_new_privs": fields.get("NoNewPrivs"),
        "seccomp_mode": fields.get("Seccomp"),
        "seccomp_filters": None if filters is None or filters_before is None else filters - filters_before,
        "caps": {key: fields[name] for name, key in caps.items()} if all(n in fields for n in caps) else None,
        "rlimits": measure.read_rlimits(plan.rlimits),
    }


def _make_tmpdir(path: str | None) -> None:
    """Create $TMPDIR (in the workdir) as the command's own uid, after the uid switch: the server never
    creates or chowns anything in a directory the model controls (a symlink swapped in there would
    redirect a root chown)."""
    if path:
        try:
            os.mkdir(path, 0o700)
        except OSError:
            pass  # exists already, or a read-only workdir: the command sees what it would anyway


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        return 1 << 16


# --- entry ---------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == "session":
        return session_main(int(argv[2]), int(argv[3]), parent=None)
    if len(argv) == 3 and argv[1] == "template" and sys.platform.startswith("linux"):
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the server
        return serve_template(int(argv[2]))
    usage = "usage: launcher.py session CTRL_FD STATUS_FD | template CTRL_FD (internal to hanzo-sandbox-mcp)"
    print(usage, file=sys.stderr)
    return 2


def _run_unconfined(plan: LaunchPlan, status: Reporter) -> int:
    """Non-Linux: rlimits and the wrapper (macOS `sandbox-exec`), then exec; the init kills the command's
    process group when the command ends."""
    from hanzo_sandbox_mcp.linux.rlimits import apply_rlimits

    os.setsid()
    errors: dict[str, str] = {}
    if plan.rlimits:
        try:
            apply_rlimits(plan.rlimits)
        except (OSError, ValueError) as exc:
            errors["rlimits"] = str(exc)
    try:
        _enter_workdir(plan)
    except Aborted as exc:
        status.send("abort", message=str(exc), strict=False)
        return EXIT_SETUP_FAILED
    os.set_inheritable(status.fd, False)
    readings = _measure(plan, None, False, measure.StatusReader(), None, errors)
    status.send("applied", errors=errors, user_ns=False, landlock_abi=None, **readings)
    return _exec(plan, status)


if __name__ == "__main__":
    # os._exit: the launcher holds no buffered output, and interpreter finalization costs milliseconds
    # that every command would pay.
    os._exit(main(sys.argv))
