"""The launcher: confines itself as a `LaunchPlan` says, then execs the command. Standard library only.

The server is multi-threaded (anyio), so it cannot fork and set up layers itself (no `preexec_fn`); it
spawns this file as `python -I -S launcher.py PLAN_FD STATUS_FD` instead. The plan arrives on PLAN_FD
(never argv, which /proc exposes); each stage reports on STATUS_FD, one Python-literal dict per line in
the fixed schema launch.py checks, each carrying the plan's per-call token. The command's line holds what
it read back from the kernel right before exec, so the server's report never claims a protection that
did not fire.

Everything is imported before the private root replaces the filesystem (and before the uid switch): the
server's Python may live where the command cannot reach (pyenv under a 0700 /root), so nothing may be
imported lazily after that, which is also why the program is looked up on PATH by hand (`_exec`).

Start-up cost matters (it is paid by every command), so the launcher imports only builtins and small C
modules: `_signal` instead of `signal` (which imports `enum`), `marshal` instead of `json` (`re`), no
`typing` or `dataclasses` at run time.

Three processes, each with one job:

1. **supervisor** (this process, in the host pid namespace): dies with the server (PDEATHSIG, checked
   against the server's pid in the plan), new session, child subreaper, unshares the namespaces (user,
   pid, mount, net, ipc, uts; as root the user namespace comes later, after the uid switch, so that the
   command never holds host uid 0; a root without CAP_SYS_ADMIN, as in a container, drops to the command's
   uid first and takes the non-root path), writes the id maps, turns non-dumpable (its /proc/PID/fd, which
   holds the status pipe, closes to the command), forks the init. On SIGTERM it kills the whole sandbox;
   it exits when the init does.
2. **init** (pid 1 of the new pid namespace): dies with the supervisor (PDEATHSIG), makes mount
   propagation private, pivots into a private root made of the plan's `root` list only (rootfs.py:
   read-only binds, the workdir read-write, a fresh /proc, private size-capped /tmp and /dev/shm), brings
   up `lo` for `network = loopback`, forks the command, forwards signals to it, reaps zombies, and reports
   the exit status and rusage. When the command exits, init exits and the kernel kills every process left
   in the namespace (daemons, pipe-holding grandchildren).
3. **command**: switches to the unprivileged uid, closes every inherited fd but 0-2, then in this order
   (later layers would block earlier ones): rlimits, PR_SET_NO_NEW_PRIVS, capabilities dropped, Landlock,
   seccomp last; reads its own state back from the kernel (linux/measure.py: ids, /proc/self/status,
   rlimits) and reports that, then execve.

With `strict`, a requested layer that fails, or reads back as not in force (measure.judge), aborts before
exec (fail closed) and the report names it.
"""

from __future__ import annotations

import errno
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
    import resource

    from hanzo_sandbox_mcp.linux import landlock, libc, loopback, mounts, namespaces, rlimits, rootfs, seccomp
    from hanzo_sandbox_mcp.linux.privilege import drop_to, own_effective_caps, root_path

EXIT_SETUP_FAILED = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
_FORWARDED = (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
# Python itself ignores SIGPIPE and SIGXFSZ; an ignored disposition survives exec, so without a reset
# `yes | head` would spin on EPIPE and a write past RLIMIT_FSIZE would not stop the writer.
_RESET_AT_EXEC = (*_FORWARDED, signal.SIGPIPE, signal.SIGXFSZ)


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


# --- stage 1: supervisor -------------------------------------------------------------------------------


def supervise(plan: LaunchPlan, status: Reporter) -> int:
    os.setsid()
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
    _oom_first()
    is_root = os.geteuid() == 0
    if is_root and plan.uid is not None and not root_path(0, own_effective_caps()):
        # A container's root (no CAP_SYS_ADMIN) cannot unshare outside a user namespace: become the
        # command's uid now and take the non-root path, user namespace first.
        try:
            drop_to(*_command_ids(plan, is_root))
        except OSError as exc:
            status.send("abort", message=f"cannot switch to uid {plan.uid}: {exc}")
            return EXIT_SETUP_FAILED
        # The uid change cleared PDEATHSIG: arm it again, then make sure the server did not die meanwhile.
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if plan.parent_pid is not None and os.getppid() != plan.parent_pid:
            return EXIT_SETUP_FAILED
        is_root = False
    # As root the user namespace is created by the command after it drops to the sandbox uid.
    wanted = [name for name in plan.namespaces if not (is_root and name == "user")]
    active, ns_error = _unshare(plan, wanted, is_root)
    # Non-dumpable from here on (after the id maps, which need /proc/self owned by us): the supervisor and
    # the init hold the status pipe and the plan's token, and a non-dumpable process's /proc/PID/fd and
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
        os._exit(_run_init(plan, status, active, alive_r, is_root))
    os.close(alive_r)

    def stop_sandbox(signum: int, _frame: object) -> None:
        # SIGTERM from the server means "stop now": SIGKILL the init, which takes its namespace with it.
        _kill(child, signal.SIGKILL if signum == signal.SIGTERM else signum)

    for signum in _FORWARDED:
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
        children = _children()
        for pid in children:
            _kill(pid, signal.SIGKILL)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


# --- stage 2: init -------------------------------------------------------------------------------------


def _run_init(plan: LaunchPlan, status: Reporter, active: list[str], alive_fd: int, is_root: bool) -> int:
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # getppid() is 0 inside a new pid namespace, so ask the pipe: readable (EOF) means the supervisor
    # died before PDEATHSIG was armed.
    if select.select([alive_fd], [], [], 0)[0]:
        return EXIT_SETUP_FAILED
    os.close(alive_fd)
    uid, gid = _command_ids(plan, is_root)
    setup: dict[str, Any] = {"rootfs": False, "proc": False, "private_tmp": False, "loopback": False}
    errors: dict[str, str] = {}
    try:
        _setup_namespaces(plan, active, uid, gid, setup, errors)
    except Aborted as exc:
        status.send("abort", message=str(exc), strict=exc.strict)
        return EXIT_SETUP_FAILED
    status.send("setup", errors=errors, **setup)

    # Signals that arrive while the command is being forked wait (blocked) until the forwarding handlers
    # are in place, instead of being lost.
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
    command = os.fork()
    if command == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        os._exit(_run_command(plan, status, uid, gid, is_root, setup["rootfs"], "user" in active))

    for signum in _FORWARDED:
        signal.signal(signum, lambda signum, _frame: _kill(command, signum))
    signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    while True:
        pid, wait_status, _ = os.wait4(-1, 0)
        if pid == command:
            break
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    status.send(
        "exit",
        status=wait_status,
        exit_code=os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else None,
        signal=os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None,
        cpu_user_s=usage.ru_utime,
        cpu_sys_s=usage.ru_stime,
        peak_rss_kb=usage.ru_maxrss,
    )
    return 0


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


# --- stage 3: the command ------------------------------------------------------------------------------


def _run_command(
    plan: LaunchPlan, status: Reporter, uid: int, gid: int, is_root: bool, private_root: bool, in_userns: bool
) -> int:
    for signum in _RESET_AT_EXEC:
        signal.signal(signum, signal.SIG_DFL)
    errors: dict[str, str] = {}
    try:
        host_ids, own_userns = _become_command_user(plan, uid, gid, is_root, errors)
        # Die with init even without a pid namespace (set after the uid switch, which clears it).
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        _enter_workdir(plan)
        _close_inherited_fds(status.fd)
        proc_status = measure.StatusReader()  # opened before Landlock, which need not grant /proc
        landlock_abi, filters_before = _confine(plan, private_root, proc_status, errors)
    except Aborted as exc:
        status.send("abort", message=str(exc), strict=exc.strict)
        return EXIT_SETUP_FAILED
    readings = _measure(plan, host_ids, in_userns or own_userns, proc_status, filters_before, errors)
    proc_status.close()
    # Under strict, fail closed on what the kernel says, not only on a step that raised: a layer that reads
    # back as missing (a bug, or a mutation) stops the command before exec.
    missing = measure.judge(plan, readings)[1] if plan.strict else {}
    if missing:
        layers = "; ".join(f"{layer}: {why}" for layer, why in missing.items())
        status.send("abort", message=f"strict policy: a layer is not in force ({layers})", strict=True)
        return EXIT_SETUP_FAILED
    status.send("applied", errors=errors, user_ns=in_userns or own_userns, landlock_abi=landlock_abi, **readings)
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


def _close_inherited_fds(status_fd: int) -> None:
    """Only 0, 1, 2 and the status pipe (close-on-exec) survive: no server socket, pipe or file leaks."""
    os.set_inheritable(status_fd, False)
    os.closerange(3, status_fd)
    os.closerange(status_fd + 1, _max_fd())


def _confine(
    plan: LaunchPlan, private_root: bool, proc_status: measure.StatusReader, errors: dict[str, str]
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
        spec = plan.landlock
        # /tmp and /dev/shm are writable only when they are this call's own tmpfs, never the host's; and
        # `/` is listable only when it is the private root (which holds the allowlist only), never the
        # host's root (whose listing shows every other session's and user's directory names).
        read_write = (*spec.read_write, "/tmp", "/dev/shm") if private_root else spec.read_write
        try:
            # restrict_self raises unless the kernel returned 0, so an ABI here is one in force.
            landlock_abi = landlock.restrict_self(
                spec.read_exec,
                read_write,
                deny_tcp=spec.deny_tcp,
                scope=spec.scope,
                list_only=("/",) if private_root else (),
            ).abi
        except OSError as exc:
            _failed(plan, errors, "landlock", exc)

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


def _read_plan(fd: int) -> LaunchPlan:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return LaunchPlan.from_wire(b"".join(chunks))


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: launcher.py PLAN_FD STATUS_FD (internal to hanzo-sandbox-mcp)", file=sys.stderr)
        return 2
    status = Reporter(int(argv[2]))
    linux = sys.platform.startswith("linux")
    if linux:
        # Die with the server (SIGKILL of the server included): armed before anything else, the init and
        # the command die with this process in turn. A uid change clears it (supervise arms it again).
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        plan = _read_plan(int(argv[1]))
    except (OSError, ValueError, TypeError, KeyError, EOFError) as exc:
        status.send("abort", message=f"unreadable launch plan: {exc}", strict=False)
        return EXIT_SETUP_FAILED
    status.token = plan.status_token
    if plan.parent_pid is not None and os.getppid() != plan.parent_pid:
        # The server died before the signal was armed (we were re-parented): it will never come.
        status.send("abort", message="the server that started this command has exited", strict=False)
        return EXIT_SETUP_FAILED
    if linux:
        return supervise(plan, status)
    return _run_unconfined(plan, status)


def _run_unconfined(plan: LaunchPlan, status: Reporter) -> int:
    """Non-Linux: rlimits and the wrapper (macOS `sandbox-exec`), then exec; the server supervises."""
    from hanzo_sandbox_mcp.linux.rlimits import apply_rlimits

    os.setsid()
    for signum in _RESET_AT_EXEC:
        signal.signal(signum, signal.SIG_DFL)
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
