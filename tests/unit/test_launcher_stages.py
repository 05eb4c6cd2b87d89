"""The launcher run directly (subprocess + pipes) with hand-built `LaunchPlan`s.

What each stage reports on the status pipe and in which order, how it aborts (garbage plan, missing cwd,
a strict layer failure), and how signals reach the sandbox: SIGINT is forwarded to the command, SIGTERM
kills the whole sandbox, and SIGKILL of the supervisor takes the command with it (PDEATHSIG).
Every read is bounded by a deadline; leftovers are found by a unique marker in their argv.
"""

from __future__ import annotations

import ast
import marshal
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.processes import marker_pids, unique_sleep, wait_marker_gone

from hanzo_sandbox_mcp.launch import LaunchReport, launcher_argv, start_launcher
from hanzo_sandbox_mcp.launch_plan import NAMESPACE_NAMES, LandlockSpec, LaunchPlan, RootSpec
from hanzo_sandbox_mcp.linux import privilege
from hanzo_sandbox_mcp.linux.paths import RW_DEVICES, SYSTEM_READ_PATHS, python_paths

IS_ROOT = os.geteuid() == 0
COMMAND_UID = 65534 if IS_ROOT else os.getuid()
COMMAND_GID = 65534 if IS_ROOT else os.getgid()
DEADLINE_S = 30.0  # hang guard for every wait
TOKEN = uuid.uuid4().hex

pytestmark = pytest.mark.skipif(os.uname().sysname != "Linux", reason="the Linux launcher")


def _seccomp(network: str = "loopback") -> bytes | None:
    try:
        from hanzo_sandbox_mcp.linux import seccomp

        return seccomp.build_filter(network)
    except (ImportError, OSError, RuntimeError, ValueError):
        return None


@pytest.fixture(scope="module")
def work_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="hanzo-launcher-test-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def workdir(work_root: Path) -> Path:
    path = work_root / f"w-{uuid.uuid4().hex[:10]}"
    path.mkdir(mode=0o700)
    if IS_ROOT:
        os.chown(path, COMMAND_UID, COMMAND_GID)
    return path


def make_plan(workdir: Path, argv: list[str], **changes: Any) -> LaunchPlan:
    """Every layer, as `LinuxSandbox.harden` would ask for them, written out by hand."""
    read_only = (*SYSTEM_READ_PATHS, *python_paths())
    read_write = (str(workdir), *RW_DEVICES)
    plan = LaunchPlan(
        argv=tuple(argv),
        env={"PATH": "/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8"},
        cwd=str(workdir),
        namespaces=NAMESPACE_NAMES,
        uid=COMMAND_UID if IS_ROOT else None,
        gid=COMMAND_GID if IS_ROOT else None,
        loopback=True,
        tmp_size_mb=16,
        rlimits={"core": 0, "nofile": 256, "nproc": 64},
        no_new_privs=True,
        landlock=LandlockSpec(read_exec=read_only, read_write=read_write, deny_tcp=False, scope=True),
        root=RootSpec(read_only=read_only, read_write=read_write),
        seccomp_bpf=_seccomp(),
        status_token=TOKEN,
        strict=False,
    )
    return plan.replace(**changes) if changes else plan


class Launch:
    """One launcher process: the plan written to its pipe, its status and stdout read with deadlines.

    Every status line is also fed to a `LaunchReport` for the plan: the real launcher's lines must all
    pass the strict schema (`report.rejected == 0`, checked in `finish`)."""

    def __init__(self, plan: LaunchPlan | bytes, *, extra_fds: tuple[int, ...] = ()) -> None:
        self.report = LaunchReport(plan=plan if isinstance(plan, LaunchPlan) else None)
        self.token = plan.status_token if isinstance(plan, LaunchPlan) else ""
        raw = plan if isinstance(plan, bytes) else plan.to_wire()
        self.session = start_launcher(raw, capture=True, extra_fds=extra_fds)
        self.proc, self.status_fd = self.session.proc, self.session.status_fd
        self.events: list[dict[str, Any]] = []
        self._pending = b""
        self._status_eof = False
        self.stdout = b""
        self.stderr = b""

    def _read_status(self, deadline: float) -> bool:
        """Read once from the status pipe; False at EOF or when the deadline passed."""
        if self._status_eof:
            return False
        ready, _, _ = select.select([self.status_fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return False
        chunk = os.read(self.status_fd, 65536)
        if not chunk:
            self._status_eof = True
            os.close(self.status_fd)
            return False
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            event = ast.literal_eval(line.decode())
            assert isinstance(event, dict), line
            assert event.pop("token") in (self.token, ""), line
            self.events.append(event)
            assert self.report.feed(line), f"the report rejected the launcher's own line {line!r}"
        return True

    def wait_event(self, name: str) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            for event in self.events:
                if event["event"] == name:
                    return event
            if not self._read_status(deadline):
                raise AssertionError(f"no {name!r} event; got {self.names()}; stderr={self.stderr!r}")

    def read_stdout_until(self, token: bytes) -> None:
        deadline = time.monotonic() + DEADLINE_S
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while token not in self.stdout:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"{token!r} never appeared on stdout: {self.stdout!r}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"stdout closed before {token!r}: {self.stdout!r}")
            self.stdout += chunk

    def finish(self) -> int:
        """Everything to EOF, then the exit status (bounded)."""
        deadline = time.monotonic() + DEADLINE_S
        while self._read_status(deadline):
            pass
        assert self._status_eof, f"the status pipe stayed open; events {self.names()}"
        assert self.report.rejected == 0
        self.session.close()  # the call is over: the one-call session ends
        out, err = self.proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        self.stdout += out
        self.stderr += err
        return self.proc.returncode

    def names(self) -> list[str]:
        return [event["event"] for event in self.events]

    def close(self) -> None:
        self.session.close()
        self.session.cancel()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=DEADLINE_S)
        if not self._status_eof:
            os.close(self.status_fd)
            self._status_eof = True
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def launch() -> Iterator[Any]:
    started: list[Launch] = []

    def start(plan: LaunchPlan | bytes, **kwargs: Any) -> Launch:
        run = Launch(plan, **kwargs)
        started.append(run)
        return run

    yield start
    for run in started:
        run.close()


@pytest.fixture
def marker() -> Iterator[str]:
    value = unique_sleep()
    yield value
    for pid in marker_pids(value):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# --- the stages, in order ------------------------------------------------------------------------------


def test_the_stages_report_in_order_with_their_fields(launch: Any, workdir: Path) -> None:
    run = launch(make_plan(workdir, ["sh", "-c", "echo hi; exit 7"]))
    assert run.finish() == 0  # the launcher itself succeeded; the command's status is on the pipe
    assert run.names() == ["namespaces", "setup", "applied", "exit"]
    namespaces, setup, applied, exit_ = run.events

    # Root with CAP_SYS_ADMIN: the user namespace comes after the uid switch; without it (a container's
    # root) the launcher drops to the command's uid first and unshares everything at once.
    root_path = IS_ROOT and privilege.root_path(0, privilege.own_effective_caps())
    expected_ns = [n for n in NAMESPACE_NAMES if not (root_path and n == "user")]
    assert namespaces == {"event": "namespaces", "active": expected_ns, "error": None}

    assert setup == {
        "event": "setup",
        "errors": {},
        "rootfs": True,
        "proc": True,
        "private_tmp": True,
        "loopback": True,
        "scoped": True,
        "proxy": False,
    }

    assert applied["errors"] == {}
    # What the command read back from the kernel right before exec, ids mapped out of its user namespace.
    assert applied["uids"] == [COMMAND_UID] * 3 and applied["gids"] == [COMMAND_GID] * 3
    assert applied["user_ns"] is True
    assert applied["rlimits"] == {"core": [0, 0], "nofile": [256, 256], "nproc": [64, 64]}
    assert applied["no_new_privs"] == 1
    assert isinstance(applied["landlock_abi"], int) and applied["landlock_abi"] >= 1
    assert (applied["seccomp_mode"], applied["seccomp_filters"]) == ((2, 1) if _seccomp() else (0, 0))
    assert applied["caps"]["inh"] == applied["caps"]["amb"] == applied["caps"]["bnd"] == 0
    report = run.report
    assert (report.uid, report.gid, report.rlimits, report.no_new_privs) == (COMMAND_UID, COMMAND_GID, True, True)
    assert report.capabilities_empty and report.seccomp is bool(_seccomp()) and report.errors == {}

    assert exit_["exit_code"] == 7
    assert exit_["signal"] is None
    assert exit_["status"] == 7 << 8
    assert isinstance(exit_["cpu_user_s"], float) and isinstance(exit_["cpu_sys_s"], float)
    assert isinstance(exit_["peak_rss_kb"], int) and exit_["peak_rss_kb"] > 0

    assert run.stdout == b"hi\n"


def test_a_plan_without_layers_reports_none(launch: Any, workdir: Path) -> None:
    plan = LaunchPlan(
        argv=("/bin/sh", "-c", "echo bare"),
        env={"PATH": "/usr/bin:/bin"},
        cwd=str(workdir),
        uid=COMMAND_UID if IS_ROOT else None,
        gid=COMMAND_GID if IS_ROOT else None,
    )
    run = launch(plan)
    assert run.finish() == 0
    assert run.names() == ["namespaces", "setup", "applied", "exit"]
    assert run.events[0]["active"] == []
    assert run.events[1] == {
        "event": "setup", "errors": {}, "rootfs": False, "proc": False, "private_tmp": False, "loopback": False,
        "scoped": False, "proxy": False,
    }  # fmt: skip
    applied = run.events[2]
    assert applied["user_ns"] is False
    assert applied["rlimits"] == {} and applied["landlock_abi"] is None
    # Mode 2 already under a container runtime's filter; the count is of filters the launcher added.
    own_mode = _own_seccomp_mode()
    assert (applied["no_new_privs"], applied["seccomp_mode"], applied["seccomp_filters"]) == (0, own_mode, 0)
    assert applied["uids"] == [COMMAND_UID] * 3
    assert not (run.report.rlimits or run.report.no_new_privs or run.report.seccomp)
    assert run.events[3]["exit_code"] == 0
    assert run.stdout == b"bare\n"


def test_without_landlock_the_private_root_still_hides_unlisted_paths(launch: Any, workdir: Path) -> None:
    """The private root stands alone: with Landlock off, a host path outside the allowlist does not exist."""
    assert os.path.isdir("/var/log"), "precondition: the host has /var/log"
    run = launch(make_plan(workdir, ["sh", "-c", "test -e /var/log && echo seen || echo hidden"], landlock=None))
    assert run.finish() == 0
    assert run.wait_event("setup")["rootfs"] is True
    assert run.wait_event("applied")["landlock_abi"] is None
    assert run.stdout == b"hidden\n"


def test_without_a_private_root_landlock_still_denies_unlisted_paths(launch: Any, workdir: Path) -> None:
    """Landlock stands alone: with the mount namespace kept but no private root, the host's /var/log exists
    (the control: stat needs no Landlock right) and reading it is denied."""
    assert os.path.isdir("/var/log"), "precondition: the host has /var/log"
    script = "test -e /var/log && echo exists; ls /var/log >/dev/null 2>&1 && echo listed || echo denied"
    run = launch(make_plan(workdir, ["sh", "-c", script], root=None))
    assert run.finish() == 0
    assert run.wait_event("setup")["rootfs"] is False
    assert isinstance(run.wait_event("applied")["landlock_abi"], int)
    assert run.stdout == b"exists\ndenied\n"


def test_a_command_killed_by_a_signal(launch: Any, workdir: Path) -> None:
    run = launch(make_plan(workdir, ["sh", "-c", "kill -USR1 $$"]))
    run.finish()
    exit_ = run.wait_event("exit")
    assert exit_["exit_code"] is None
    assert exit_["signal"] == signal.SIGUSR1


def test_a_missing_program_reports_exec_failed(launch: Any, workdir: Path) -> None:
    run = launch(make_plan(workdir, ["no-such-program-hanzo"]))
    run.finish()
    assert run.names() == ["namespaces", "setup", "applied", "exec_failed", "exit"]
    assert run.events[3]["message"].startswith("no-such-program-hanzo: command not found")
    assert run.events[4]["exit_code"] == 127


@pytest.mark.parametrize(
    ("path_var", "exit_code", "message"),
    [
        ("{bad}:/usr/bin:/bin", 0, None),  # a non-executable match earlier on PATH: the search goes on
        ("{bad}", 126, "hanzo-prog: cannot execute (Permission denied)"),
        ("{empty}:/nowhere", 127, "hanzo-prog: command not found (No such file or directory)"),
        ("", 127, "hanzo-prog: command not found (No such file or directory)"),  # "" is the cwd
    ],
    ids=["later-entry-wins", "only-unexecutable", "missing", "empty-path"],
)
def test_the_program_is_looked_up_on_path_like_the_shell(
    launch: Any, workdir: Path, path_var: str, exit_code: int, message: str | None
) -> None:
    """The launcher's own PATH search (os.execvpe imports lazily, which fails after the pivot when the
    server's Python is out of reach): 127 when nothing matches, 126 when only unexecutable files do."""
    bad, empty = workdir / "bad", workdir / "empty"
    bad.mkdir()
    empty.mkdir()
    (bad / "hanzo-prog").write_text("#!/bin/sh\necho bad\n")  # mode 0644: not executable
    (workdir / "bin").mkdir()
    os.symlink("/bin/true", workdir / "bin" / "hanzo-prog")
    path = path_var.format(bad=bad, empty=empty).replace("/usr/bin:/bin", f"{workdir}/bin:/usr/bin:/bin")
    run = launch(make_plan(workdir, ["hanzo-prog"], env={"PATH": path, "HOME": str(workdir)}))
    run.finish()
    assert run.wait_event("exit")["exit_code"] == exit_code
    failed = [event["message"] for event in run.events if event["event"] == "exec_failed"]
    assert failed == ([message] if message else [])


def test_no_inherited_descriptor_reaches_the_command(launch: Any, workdir: Path) -> None:
    leak_r, leak_w = os.pipe()
    try:
        os.set_inheritable(leak_w, True)
        script = f"test -e /dev/fd/{leak_w} && echo LEAK || echo clean"
        run = launch(make_plan(workdir, ["sh", "-c", script]), extra_fds=(leak_w,))
        run.finish()
    finally:
        os.close(leak_r)
        os.close(leak_w)
    assert run.stdout == b"clean\n"


# --- aborts --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"\x00garbage\xff" * 10, b"", marshal.dumps(["not", "a", "plan"]), marshal.dumps({"argv": ("true",)})],
    ids=["garbage", "empty", "list", "incomplete"],
)
def test_an_unreadable_plan_aborts_with_125(launch: Any, raw: bytes) -> None:
    run = launch(raw)
    assert run.finish() == 125
    assert run.names() == ["abort"]
    assert run.events[0]["message"].startswith("unreadable launch plan: ")


def test_a_missing_cwd_aborts_before_exec(launch: Any, workdir: Path) -> None:
    missing = workdir / "not-there"
    run = launch(make_plan(workdir, ["sh", "-c", "echo ran"], cwd=str(missing)))
    run.finish()
    assert run.names() == ["namespaces", "setup", "abort", "exit"]
    assert run.events[2]["message"].startswith(f"cannot enter working directory {missing}")
    assert run.events[2]["strict"] is False
    assert run.events[3]["exit_code"] == 125
    assert run.stdout == b""


def test_strict_aborts_when_a_layer_fails(launch: Any, workdir: Path) -> None:
    broken = LandlockSpec(read_exec=(*SYSTEM_READ_PATHS, "relative/path"), read_write=(str(workdir),))
    run = launch(make_plan(workdir, ["sh", "-c", "echo ran"], landlock=broken, strict=True))
    assert run.finish() == 125
    # The ruleset is built once, when the session's sandbox is made: under strict, no sandbox is made.
    assert run.names() == ["namespaces", "abort"]
    abort = run.events[1]
    assert abort["strict"] is True
    assert abort["message"].startswith("strict policy: the landlock layer could not be applied")
    assert run.stdout == b""


def test_without_strict_a_failed_layer_is_reported_and_the_command_runs(launch: Any, workdir: Path) -> None:
    broken = LandlockSpec(read_exec=(*SYSTEM_READ_PATHS, "relative/path"), read_write=(str(workdir),))
    run = launch(make_plan(workdir, ["sh", "-c", "echo ran"], landlock=broken))
    run.finish()
    applied = run.wait_event("applied")
    assert "landlock" in applied["errors"]
    assert applied["landlock_abi"] is None
    assert applied["no_new_privs"] == 1  # the layers before and after it still fired
    assert run.wait_event("exit")["exit_code"] == 0
    assert run.stdout == b"ran\n"


def test_a_launcher_whose_server_already_died_runs_nothing(launch: Any, workdir: Path) -> None:
    """Re-parented before it armed its parent-death signal (the pid in the plan is not its parent): the
    signal would never come, so it must not start a sandbox that nothing watches."""
    run = launch(make_plan(workdir, ["sh", "-c", "echo ran"], parent_pid=os.getpid() + 1))
    assert run.finish() == 125
    assert run.names() == ["abort"]
    assert run.events[0]["message"] == "the server that started this sandbox has exited"
    assert run.stdout == b""
    # Control: the same plan naming its real parent runs.
    control = launch(make_plan(workdir, ["sh", "-c", "echo ran"], parent_pid=os.getpid()))
    assert control.finish() == 0 and control.stdout == b"ran\n"


def test_wrong_arguments_print_usage() -> None:
    proc = subprocess.run(launcher_argv("session", 0), capture_output=True, timeout=DEADLINE_S, env={}, check=False)
    assert proc.returncode == 2
    assert b"usage: launcher.py session CTRL_FD STATUS_FD | template CTRL_FD" in proc.stderr


# --- signals -------------------------------------------------------------------------------------------


def test_closing_the_cancel_pipe_kills_the_calls_whole_tree(launch: Any, workdir: Path, marker: str) -> None:
    """What a timeout does: the call init kills the command and everything it started, TERM or not."""
    script = f'trap "" TERM INT HUP; sleep {marker} & echo ready; wait'
    run = launch(make_plan(workdir, ["sh", "-c", script]))
    run.read_stdout_until(b"ready\n")
    assert marker_pids(marker), "the sleep is not running"
    run.session.cancel()
    assert run.finish() == 0  # the session ended normally once its call had
    assert run.wait_event("exit")["signal"] == signal.SIGKILL
    assert not wait_marker_gone(marker), "the background sleep outlived its call"


def test_a_daemon_dies_with_the_call_that_started_it(launch: Any, workdir: Path, marker: str) -> None:
    """A double-forked `setsid` daemon is an orphan of the call's init (a subreaper), killed when the
    command exits: nothing a call starts outlives it."""
    script = f"setsid sh -c 'sleep {marker} & exit 0' </dev/null >/dev/null 2>&1; echo started"
    run = launch(make_plan(workdir, ["sh", "-c", script]))
    assert run.finish() == 0
    assert run.wait_event("exit")["exit_code"] == 0 and b"started" in run.stdout
    assert not wait_marker_gone(marker), "the daemon outlived its call"


def test_sigterm_to_the_supervisor_kills_the_whole_sandbox(launch: Any, workdir: Path, marker: str) -> None:
    # The command ignores TERM: only the supervisor killing the pid namespace's init can stop it.
    script = f'trap "" TERM INT; sleep {marker} & echo ready; wait'
    run = launch(make_plan(workdir, ["sh", "-c", script]))
    run.read_stdout_until(b"ready\n")
    assert marker_pids(marker)
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.finish() == 125
    assert "exit" not in run.names()  # init was killed, not left to report
    assert not wait_marker_gone(marker), "processes of the sandbox survived SIGTERM to the supervisor"


def test_sigkill_of_the_supervisor_kills_the_command(launch: Any, workdir: Path, marker: str) -> None:
    script = f'trap "" TERM INT HUP; echo ready; exec sleep {marker}'
    run = launch(make_plan(workdir, ["sh", "-c", script]))
    run.read_stdout_until(b"ready\n")
    deadline = time.monotonic() + DEADLINE_S
    while not marker_pids(marker):  # bounded: the exec follows the echo
        assert time.monotonic() < deadline, "the sleep never started"
        time.sleep(0.02)
    os.kill(run.proc.pid, signal.SIGKILL)
    assert run.proc.wait(timeout=DEADLINE_S) == -signal.SIGKILL
    assert not wait_marker_gone(marker), "the command survived its supervisor (no PDEATHSIG)"


def _own_seccomp_mode() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Seccomp:"))
