"""One process layer at a time: each attack runs with a single layer standing, and its control runs the same
attack, as the same uid, with that layer off too, and succeeds.

`layered_run(keep, cmd)` is the real sandbox with every layer not in `keep` switched off in the launch plan
(tests/support/layers.py). `BASE` (the command's uid and environment) stays on in tests and controls alike.
The all-layers versions of these attacks are in test_host_processes.py and test_resource_exhaustion.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid

import pytest
from _security_support import IS_ROOT, NO_UID_DROP, SANDBOX_PYTHON, json_lines, py
from support.layers import BASE

from hanzo_sandbox_mcp.launch_plan import NAMESPACE_NAMES
from hanzo_sandbox_mcp.linux import landlock

#: An unprivileged server needs a user namespace to create any other; alone it stops none of these attacks.
USER_NS = BASE | {"user"}
USER_NS_NEEDED = (
    "an unprivileged server needs a user namespace for any other, and the user namespace alone already refuses "
    "this (test_user_namespace_alone_blocks_ptrace_environ_and_mem_of_host_process)"
)
#: /proc/self/ns/<file> of each namespace name.
NS_FILES = {"user": "user", "pid": "pid", "mount": "mnt", "net": "net", "ipc": "ipc", "uts": "uts"}

PTRACE_PROBE = r"""
import ctypes, json, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
r = libc.ptrace(0x4206, int(sys.argv[1]), None, None)  # PTRACE_SEIZE: attaches without stopping the victim
print(json.dumps({"ptrace": r, "errno": ctypes.get_errno()}))
"""
MEM_PROBE = r"""
import sys
try: open('/proc/%s/mem' % sys.argv[1], 'rb'); print('MEM-OPEN-OK')
except OSError as e: print('ERR', e.errno, e.strerror)
"""


def _ptrace(result: object) -> dict[str, int]:
    rows = json_lines(result.stdout)  # type: ignore[attr-defined]
    assert rows, result
    return rows[0]


# --- namespaces: each one reported is a new one ----------------------------------------------------------


@pytest.mark.parametrize("name", NAMESPACE_NAMES)
def test_each_reported_namespace_is_new(layered_run, name):
    """The command's /proc/self/ns/<name> differs from the server's when the namespace is on (and is
    reported), and equals it when that namespace alone is off (the control)."""
    ns_file = NS_FILES[name]
    host = os.readlink(f"/proc/self/ns/{ns_file}")
    on = layered_run(USER_NS | {name}, f"readlink /proc/self/ns/{ns_file}")
    off = layered_run(USER_NS if name != "user" else BASE, f"readlink /proc/self/ns/{ns_file}")
    assert on.exit_code == 0 and off.exit_code == 0, (on, off)
    assert on.stdout.strip() != host, f"the {name} namespace is the server's own: {on}"
    assert name in on.protection.namespaces, on.protection
    assert off.stdout.strip() == host, f"control: without the {name} namespace the command shares it: {off}"
    assert name not in off.protection.namespaces, off.protection


# --- the pid namespace alone ----------------------------------------------------------------------------


def test_pid_namespace_alone_blocks_killing_host_process(layered_run, victims):
    victim = victims()
    result = layered_run(USER_NS | {"pid"}, f"kill -9 {victim.pid}; true")
    assert victim.alive(), f"the pid namespace alone let a host process be killed: {result}"
    assert "No such process" in result.stderr, result
    assert "pid" in result.protection.namespaces and result.protection.landlock_abi is None, result.protection

    control_victim = victims()
    control = layered_run(USER_NS, f"kill -9 {control_victim.pid} && echo KILLED")
    assert "KILLED" in control.stdout, f"control: without the pid namespace the kill works: {control}"
    assert control_victim.proc.wait(timeout=10) == -signal.SIGKILL


@pytest.mark.skipif(not IS_ROOT, reason=USER_NS_NEEDED)
def test_pid_namespace_alone_blocks_ptrace_of_host_process(layered_run, victims):
    victim = victims()
    result = layered_run(BASE | {"pid"}, py(PTRACE_PROBE, str(victim.pid)))
    assert _ptrace(result) == {"ptrace": -1, "errno": 3}, result  # ESRCH: no such pid in the namespace
    assert result.protection.namespaces == ("pid",), result.protection
    control = layered_run(BASE, py(PTRACE_PROBE, str(victims().pid)))
    assert _ptrace(control)["ptrace"] == 0, f"control: without the pid namespace ptrace attaches: {control}"


def test_user_namespace_alone_blocks_ptrace_environ_and_mem_of_host_process(layered_run, victims):
    """A process in a child user namespace needs CAP_SYS_PTRACE in the victim's (the host's) namespace to
    trace it or read its environ and mem, even with the same uid."""
    victim = victims()
    cmd = py(PTRACE_PROBE, str(victim.pid)) + f"; cat /proc/{victim.pid}/environ; " + py(MEM_PROBE, str(victim.pid))
    result = layered_run(USER_NS, cmd)
    assert _ptrace(result) == {"ptrace": -1, "errno": 1}, result
    assert victim.secret not in result.stdout and "MEM-OPEN-OK" not in result.stdout, result
    assert result.protection.namespaces == ("user",), result.protection
    control = layered_run(BASE, cmd.replace(str(victim.pid), str(victims().pid)))
    assert _ptrace(control)["ptrace"] == 0, f"control: without the user namespace ptrace attaches: {control}"
    assert "MEM-OPEN-OK" in control.stdout and "VICTIM-ENV-SECRET" in control.stdout, control


@pytest.mark.skipif(not IS_ROOT, reason=USER_NS_NEEDED)
def test_pid_namespace_with_its_fresh_proc_blocks_reading_host_process_environ(layered_run, victims):
    """A pid namespace hides host processes from /proc only with its own /proc, which needs the mount
    namespace (the private root); the control keeps the private root and drops the pid namespace, so
    /proc is the host's."""
    victim = victims()
    cmd = f"cat /proc/{victim.pid}/environ; " + py(MEM_PROBE, str(victim.pid)) + "; true"
    result = layered_run(BASE | {"pid", "mount"}, cmd)
    assert victim.secret not in result.stdout, result
    assert "MEM-OPEN-OK" not in result.stdout, result
    assert "No such file or directory" in result.stderr, result
    assert result.protection.private_root, result.protection
    control = layered_run(BASE | {"mount"}, cmd)
    assert victim.secret in control.stdout, f"control: the host /proc shows the victim's environ: {control}"
    assert "MEM-OPEN-OK" in control.stdout, control


# --- Landlock alone: its signal scope, and the ptrace confinement of every domain --------------------


def test_landlock_signal_scope_alone_blocks_killing_host_process(layered_run, victims):
    if landlock.abi_version() < 6:
        pytest.skip(f"Landlock ABI {landlock.abi_version()} has no signal scope (needs 6)")
    victim = victims()
    result = layered_run(BASE | {"landlock_scope"}, f"kill -9 {victim.pid}; true")
    assert victim.alive(), f"Landlock's signal scope let a host process be killed: {result}"
    assert "not permitted" in result.stderr.lower(), result
    assert result.protection.namespaces == () and result.protection.landlock_abi, result.protection

    control_victim = victims()
    control = layered_run(BASE, f"kill -9 {control_victim.pid} && echo KILLED")
    assert "KILLED" in control.stdout, f"control: with no layer the kill works: {control}"
    assert control_victim.proc.wait(timeout=10) == -signal.SIGKILL


def test_landlock_domain_alone_blocks_ptrace_and_mem_of_host_process(layered_run, victims):
    """A Landlock domain may not trace (or open /proc/<pid>/mem of) a process outside it, whatever its
    rules: the domain here grants every filesystem right and no scope."""
    victim = victims()
    cmd = py(PTRACE_PROBE, str(victim.pid)) + "; " + py(MEM_PROBE, str(victim.pid))
    result = layered_run(BASE | {"landlock_domain"}, cmd)
    assert _ptrace(result) == {"ptrace": -1, "errno": 1}, result
    assert "MEM-OPEN-OK" not in result.stdout and "ERR 13" in result.stdout, result
    assert result.protection.seccomp is False and result.protection.namespaces == (), result.protection
    control = layered_run(BASE, cmd)
    assert _ptrace(control)["ptrace"] == 0 and "MEM-OPEN-OK" in control.stdout, control


def test_seccomp_alone_blocks_ptrace_of_host_process(layered_run, victims):
    victim = victims()
    result = layered_run(BASE | {"seccomp"}, py(PTRACE_PROBE, str(victim.pid)))
    assert _ptrace(result) == {"ptrace": -1, "errno": 1}, result
    assert result.protection.landlock_abi is None and result.protection.namespaces == (), result.protection
    control = layered_run(BASE, py(PTRACE_PROBE, str(victims().pid)))
    assert _ptrace(control)["ptrace"] == 0, control


# --- the IPC namespace alone ---------------------------------------------------------------------------


SHM_PROBE = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
shmid = libc.shmget(ctypes.c_int(int(sys.argv[1])), ctypes.c_size_t(0), 0)
print("SHM-FOUND" if shmid >= 0 else f"ERR {ctypes.get_errno()}")
"""


def test_ipc_namespace_alone_hides_host_sysv_shared_memory(layered_run):
    import ctypes
    import random

    libc = ctypes.CDLL(None, use_errno=True)
    key = random.randint(0x10000000, 0x7FFFFFFF)
    shmid = libc.shmget(ctypes.c_int(key), ctypes.c_size_t(4096), 0o1000 | 0o666)  # IPC_CREAT
    if shmid < 0:
        pytest.skip(f"cannot create a SysV shm segment here (errno {ctypes.get_errno()})")
    try:
        result = layered_run(USER_NS | {"ipc"}, py(SHM_PROBE, str(key)))
        assert "ERR 2" in result.stdout, result
        control = layered_run(USER_NS, py(SHM_PROBE, str(key)))
        assert "SHM-FOUND" in control.stdout, f"control: the host segment is found without the namespace: {control}"
    finally:
        libc.shmctl(shmid, 0, None)  # IPC_RMID


# --- rlimits alone -------------------------------------------------------------------------------------

RLIMIT_CASES = {
    # name: (policy override, probe that prints OK when it gets past the limit)
    "memory": (
        {"max_memory_mb": 256},
        "try: b = bytearray(512 << 20); print('OK')\nexcept MemoryError: print('LIMITED')",
    ),
    "open_fds": (
        {"max_open_fds": 64},
        "fds = []\ntry:\n for _ in range(200): fds.append(open('/dev/null'))\n print('OK')\n"
        "except OSError as e: print('LIMITED', e.errno)",
    ),
    "file_size": (
        {"max_file_sz_mb": 1},
        "try: open('big', 'wb').write(b'x' * (3 << 20)); print('OK')\nexcept OSError as e: print('LIMITED', e.errno)",
    ),
    "cpu_time": (
        {"max_cpu_secs": 1},
        "import time\nwhile time.process_time() < 3: pass\nprint('OK')",
    ),
}


@pytest.mark.parametrize("case", sorted(RLIMIT_CASES))
def test_rlimits_alone_stop_resource_grabs(layered_run, case):
    overrides, code = RLIMIT_CASES[case]
    argv = [SANDBOX_PYTHON, "-I", "-S", "-c", code]
    result = layered_run(BASE | {"rlimits"}, argv=argv, policy_overrides=overrides)
    assert "OK" not in result.stdout.split(), f"{case} got past its rlimit: {result}"
    if case == "cpu_time":
        assert result.signal in (signal.SIGXCPU, signal.SIGKILL), result
    else:
        assert "LIMITED" in result.stdout, result
    assert result.protection.rlimits_applied is True and result.protection.namespaces == (), result.protection
    control = layered_run(BASE, argv=argv, policy_overrides=overrides)
    assert control.stdout.split() == ["OK"], f"control: without rlimits {case} succeeds: {control}"
    assert control.protection.rlimits_applied is False, control.protection


# --- uid drop alone (a root server) --------------------------------------------------------------------


@pytest.mark.skipif(not IS_ROOT, reason=NO_UID_DROP)
def test_uid_drop_alone_blocks_signalling_root_processes(layered_run):
    """A root-owned host process (here a root `sleep` this test starts): the command's uid may not signal it."""
    marker = f"300.{uuid.uuid4().int % 10**7:07d}"
    proc = subprocess.Popen(["sleep", marker], stdin=subprocess.DEVNULL)
    try:
        result = layered_run(BASE, f"kill -0 {proc.pid} && echo SIGNAL-OK; true")
        assert "SIGNAL-OK" not in result.stdout and "not permitted" in result.stderr.lower(), result
        control = layered_run(BASE - {"uid_drop"}, f"kill -0 {proc.pid} && echo SIGNAL-OK")
        assert "SIGNAL-OK" in control.stdout, f"control: as root the signal is allowed: {control}"
    finally:
        proc.kill()
        proc.wait(timeout=10)
