"""Seeing, signalling, reading and tracing host processes from inside the sandbox.

The victim is a host `sleep` with a secret in its environment. When pytest runs as root the victim runs
as nobody, the very uid of the sandboxed command, so DAC would allow every one of these attacks: only the
pid namespace (and Landlock's ptrace/signal scoping) stops them. The sleep must survive.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import pytest
from _security_support import (
    IS_ROOT,
    NOBODY,
    json_lines,
    marker_pids,
    py,
    unique_sleep,
)

PTRACE_PROBE = r"""
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
pid = int(sys.argv[1])
r = libc.ptrace(16, pid, None, None)  # PTRACE_ATTACH
e = ctypes.get_errno()
print(json.dumps({"ptrace_attach": r, "errno": e, "strerror": os.strerror(e) if r else ""}))
"""


@pytest.fixture
def victim():
    """A host sleep (as nobody when we are root) carrying a secret in its environment."""
    marker = unique_sleep()
    secret = f"VICTIM-ENV-SECRET-{uuid.uuid4().hex}"
    kwargs = {}
    if IS_ROOT:
        kwargs = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    proc = subprocess.Popen(
        ["sleep", marker],
        stdin=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "VICTIM_SECRET": secret},
        **kwargs,
    )
    deadline = time.monotonic() + 10
    while proc.pid not in marker_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.02)  # until the child has exec'd sleep (its cmdline is empty before that)
    try:
        yield proc, marker, secret
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _alive(proc: subprocess.Popen) -> bool:
    return proc.poll() is None


def _pid_ns_fired(result: object) -> None:
    namespaces = result.protection.namespaces  # type: ignore[attr-defined]
    assert "pid" in namespaces, f"no pid namespace: {result.protection}"  # type: ignore[attr-defined]


def test_host_sees_its_victim_positive_control(victim):
    """The test process itself can read the victim's /proc entry and environ (as its owner or root)."""
    proc, marker, secret = victim
    with open(f"/proc/{proc.pid}/cmdline", "rb") as handle:
        assert marker.encode() in handle.read()
    try:
        with open(f"/proc/{proc.pid}/environ", "rb") as handle:
            assert secret.encode() in handle.read()
    except PermissionError:
        pytest.skip("this root may not read another uid's environ (no CAP_SYS_PTRACE, as in a container)")


def test_sandbox_sees_and_kills_its_own_processes_positive_control(sandbox_run):
    """ps and kill work inside: the denials below are not a broken ps or kill."""
    inner = unique_sleep()
    # Until the child has exec'd, ps shows the forked shell's args: ask again (bounded) until it is sleep.
    result = sandbox_run(
        f"sleep {inner} & p=$!; for i in $(seq 50); do a=$(ps -o args= -p $p); case $a in sleep*) break;; esac; "
        'sleep 0.1; done; echo "$a"; kill -9 $p && echo KILLED; wait $p; test -e /proc/$p && echo STILL-THERE; true'
    )
    assert result.exit_code == 0, result
    assert result.stdout.splitlines()[0].strip() == f"sleep {inner}", result.stdout
    assert "KILLED" in result.stdout
    assert "STILL-THERE" not in result.stdout


def test_sandbox_blocks_listing_host_processes(sandbox_run, victim):
    proc, marker, _ = victim
    # The pattern is bracketed so this command's own cmdline does not contain the marker.
    pattern = marker.replace(".", "[.]")
    result = sandbox_run(f"ps -eo pid,user,args; grep -l '{pattern}' /proc/[0-9]*/cmdline 2>/dev/null; true")
    assert result.exit_code == 0, result
    assert marker not in result.stdout, f"host process visible inside the sandbox: {result.stdout}"
    # Only the sandbox's own handful of processes is visible, not the host's hundreds.
    pids = [line.split()[0] for line in result.stdout.splitlines()[1:] if line.split() and line.split()[0].isdigit()]
    assert len(pids) < 20, result.stdout
    assert str(proc.pid) not in pids or proc.pid < 20
    _pid_ns_fired(result)


def test_sandbox_blocks_killing_host_process_by_pid(sandbox_run, victim):
    proc, _, _ = victim
    result = sandbox_run(f"kill -9 {proc.pid}; kill -TERM {proc.pid}; true")
    assert _alive(proc), "the host sleep was killed from inside the sandbox"
    if proc.pid > 20:  # a low host pid could collide with a sandbox pid; then "No such process" is moot
        assert "No such process" in result.stderr, result
    _pid_ns_fired(result)


def test_sandbox_blocks_kill_minus_one_reaching_host(sandbox_run, victim):
    """kill(-1, SIGKILL) signals every process the uid may signal: with the pid namespace, only the
    sandbox's own. The victim has the command's uid when we are root."""
    proc, _, _ = victim
    result = sandbox_run(py("import os, signal\ntry: os.kill(-1, signal.SIGKILL)\nexcept OSError as e: print(e)"))
    assert _alive(proc), f"kill(-1) from the sandbox killed a host process: {result}"
    _pid_ns_fired(result)


def test_sandbox_blocks_reading_host_process_environ(sandbox_run, victim):
    proc, _, secret = victim
    result = sandbox_run(
        f"cat /proc/{proc.pid}/environ; cat /proc/{proc.pid}/cmdline; "
        "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep VICTIM; true"
    )
    assert secret not in result.stdout + result.stderr
    assert "VICTIM_SECRET" not in result.stdout
    _pid_ns_fired(result)


def test_sandbox_blocks_host_process_mem(sandbox_run, victim):
    proc, _, _ = victim
    result = sandbox_run(
        py(
            "import sys\n"
            "for mode in ('rb', 'r+b'):\n"
            "  try: open(f'/proc/{sys.argv[1]}/mem', mode); print('OPEN-OK', mode)\n"
            "  except OSError as e: print('ERR', e.errno, e.strerror)",
            str(proc.pid),
        )
    )
    assert "OPEN-OK" not in result.stdout, result
    assert "ERR" in result.stdout
    assert _alive(proc)
    _pid_ns_fired(result)


def test_sandbox_blocks_ptrace_attach_to_host_process(sandbox_run, victim):
    proc, _, _ = victim
    result = sandbox_run(py(PTRACE_PROBE, str(proc.pid)))
    rows = json_lines(result.stdout)
    assert rows, result
    assert rows[0]["ptrace_attach"] == -1, f"ptrace attached to a host process: {result}"
    assert rows[0]["errno"] in (1, 3), rows  # EPERM (seccomp) or ESRCH (pid namespace)
    assert _alive(proc)
    _pid_ns_fired(result)


def test_sandbox_blocks_strace_of_host_process(sandbox_run, victim):
    if not shutil.which("strace"):
        pytest.skip("strace is not installed")
    proc, _, _ = victim
    result = sandbox_run(f"timeout 5 strace -p {proc.pid}; true")
    assert (
        "attach: ptrace(PTRACE_SEIZE" in result.stderr
        or "Operation not permitted" in result.stderr
        or ("No such process" in result.stderr)
    ), result
    assert _alive(proc)
    _pid_ns_fired(result)


def test_sandbox_blocks_ptrace_of_sandbox_init(sandbox_run):
    """pid 1 of the sandbox is the launcher's init, which runs without Landlock or seccomp: tracing it or
    writing its memory would be an escape from every later layer."""
    result = sandbox_run(
        py(PTRACE_PROBE, "1")
        + "; "
        + py(
            "try: open('/proc/1/mem', 'r+b'); print('MEM-OPEN-OK')\n"
            "except OSError as e: print('ERR', e.errno, e.strerror)"
        )
        + "; cat /proc/1/environ >/dev/null && echo ENVIRON-OK; true"
    )
    rows = json_lines(result.stdout)
    assert rows and rows[0]["ptrace_attach"] == -1, result
    assert rows[0]["errno"] == 1, rows
    assert "MEM-OPEN-OK" not in result.stdout, result
    assert "ENVIRON-OK" not in result.stdout, result
    _pid_ns_fired(result)


SHM_PROBE = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
shmid = libc.shmget(ctypes.c_int(int(sys.argv[1])), ctypes.c_size_t(0), 0)
if shmid < 0:
    print("ERR", ctypes.get_errno())
else:
    addr = libc.shmat(shmid, None, 0o10000)  # SHM_RDONLY
    print("ATTACHED", ctypes.string_at(addr, 64).split(b"\0")[0].decode(errors="replace"))
"""


def test_sandbox_blocks_host_sysv_shared_memory(sandbox_run):
    """A host System V shared-memory segment (mode 0666, as databases and X servers create them) must be
    out of reach: the command has its own IPC namespace. POSIX shm lives in the private /dev/shm."""
    import ctypes
    import random

    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    key = random.randint(0x10000000, 0x7FFFFFFF)
    shmid = libc.shmget(ctypes.c_int(key), ctypes.c_size_t(4096), 0o1000 | 0o666)  # IPC_CREAT
    if shmid < 0:
        pytest.skip(f"cannot create a SysV shm segment here (errno {ctypes.get_errno()})")
    secret = f"SHM-{uuid.uuid4().hex[:16]}".encode()
    try:
        addr = libc.shmat(shmid, None, 0)
        ctypes.memmove(addr, secret, len(secret))
        libc.shmdt(ctypes.c_void_p(addr))
        host = subprocess.run(
            ["/usr/bin/python3", "-I", "-S", "-c", SHM_PROBE, str(key)], capture_output=True, text=True
        )
        assert secret.decode() in host.stdout, f"positive control: the host probe should attach: {host}"
        result = sandbox_run(py(SHM_PROBE, str(key)))
        assert secret.decode() not in result.stdout, f"host shared memory read from the sandbox: {result}"
        assert "ERR 2" in result.stdout, result  # ENOENT: no such key in this IPC namespace
        assert "ipc" in result.protection.namespaces, result.protection
    finally:
        libc.shmctl(shmid, 0, None)  # IPC_RMID
