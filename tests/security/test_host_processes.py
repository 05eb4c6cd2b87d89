"""Seeing, signalling, reading and tracing host processes from inside the sandbox.

The victim is a host `sleep` with a secret in its environment and the very uid of the sandboxed command
(nobody when pytest is root), so DAC allows every one of these attacks: each control runs the same attack
from an unsandboxed process of that uid against a live victim and it works. Inside, the pid namespace (with
the private root's fresh /proc), Landlock's scopes and seccomp stop them; each alone:
test_single_layer_process.py. The sleep must survive.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from _security_support import (
    SANDBOX_PYTHON,
    Victim,
    json_lines,
    py,
    run_as_command_uid,
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


MEM_PROBE = r"""
import sys
for mode in ('rb', 'r+b'):
    try: open(f'/proc/{sys.argv[1]}/mem', mode); print('OPEN-OK', mode)
    except OSError as e: print('ERR', e.errno, e.strerror)
"""


def _pid_ns_fired(result: object) -> None:
    namespaces = result.protection.namespaces  # type: ignore[attr-defined]
    assert "pid" in namespaces, f"no pid namespace: {result.protection}"  # type: ignore[attr-defined]


@pytest.fixture
def victim(victims: Callable[[], Victim]) -> Victim:
    return victims()


@dataclass(frozen=True)
class Attack:
    """A shell command against host pid {pid} (marker {pattern}), and how to tell that it worked."""

    command: str
    worked: Callable[[Victim, str, str], bool]
    needs: str | None = None


ATTACKS = {
    # The pattern is bracketed so this command's own cmdline does not contain the marker.
    "listing": Attack(
        "grep -l '{pattern}' /proc/[0-9]*/cmdline 2>/dev/null; true",
        lambda v, out, err: f"/proc/{v.pid}/cmdline" in out,
    ),
    "kill": Attack("kill -9 {pid} && echo KILL-OK; true", lambda v, out, err: "KILL-OK" in out or not v.alive()),
    "environ": Attack("cat /proc/{pid}/environ; true", lambda v, out, err: v.secret in out),
    "mem": Attack(py(MEM_PROBE, "{pid}"), lambda v, out, err: "OPEN-OK" in out),
    "ptrace": Attack(py(PTRACE_PROBE, "{pid}"), lambda v, out, err: '"ptrace_attach": 0' in out),
    "strace": Attack(
        "timeout 3 strace -p {pid} -e trace=none; true", lambda v, out, err: "attached" in err, needs="strace"
    ),
}


def _attack(name: str, victim: Victim) -> str:
    attack = ATTACKS[name]
    if attack.needs and not shutil.which(attack.needs):
        pytest.skip(f"{attack.needs} is not installed")
    return attack.command.replace("{pid}", str(victim.pid)).replace("{pattern}", victim.marker.replace(".", "[.]"))


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_command_uid_attacks_host_process_outside_the_sandbox_positive_control(victims, name):
    """The same attack, from an unsandboxed process with the command's uid, against a victim that exists,
    works: DAC allows it, so every denial below is the sandbox's."""
    target = victims()
    outside = run_as_command_uid(["/bin/sh", "-c", _attack(name, target)])
    assert ATTACKS[name].worked(target, outside.stdout, outside.stderr), f"control {name} failed: {outside}"


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_sandbox_blocks_attack_on_host_process(sandbox_run, victim, name):
    """Listing, killing, reading environ or mem of, and tracing a host process of the command's own uid."""
    result = sandbox_run(_attack(name, victim))
    assert not ATTACKS[name].worked(victim, result.stdout, result.stderr), f"{name} reached the host: {result}"
    assert victim.alive(), f"the host victim died during the {name} attack: {result}"
    assert victim.secret not in result.stdout + result.stderr
    _pid_ns_fired(result)


def test_sandbox_sees_and_kills_its_own_processes_positive_control(sandbox_run):
    """ps and kill work inside: the denials are not a broken ps or kill."""
    inner = unique_sleep()
    # Until the child has exec'd, ps shows the forked shell's args: ask again (bounded) until it is sleep.
    result = sandbox_run(
        # ps shows the shell's command line until the child has exec'd sleep: wait for that (bounded).
        f"sleep {inner} & p=$!; for i in $(seq 100); do a=$(ps -o args= -p $p); "
        f'[ "$a" = "sleep {inner}" ] && break; sleep 0.05; done; echo "$a"; '
        "kill -9 $p && echo KILLED; wait $p; test -e /proc/$p && echo STILL-THERE; true"
    )
    assert result.exit_code == 0, result
    assert result.stdout.splitlines()[0].strip() == f"sleep {inner}", result.stdout
    assert "KILLED" in result.stdout
    assert "STILL-THERE" not in result.stdout


def test_sandbox_shows_only_its_own_processes(sandbox_run, victim):
    """ps lists the sandbox's own handful of processes, not the host's hundreds."""
    result = sandbox_run("ps -eo pid,user,args; true")
    assert result.exit_code == 0, result
    assert victim.marker not in result.stdout, f"host process visible inside the sandbox: {result.stdout}"
    pids = [line.split()[0] for line in result.stdout.splitlines()[1:] if line.split() and line.split()[0].isdigit()]
    assert 0 < len(pids) < 20, result.stdout
    _pid_ns_fired(result)


def test_sandbox_blocks_kill_by_pid_with_no_such_process(sandbox_run, victim):
    """A host pid names nothing in the sandbox's pid namespace (unless it collides with a sandbox pid)."""
    if victim.pid <= 20:
        pytest.skip(f"the victim's host pid {victim.pid} may collide with a pid inside the sandbox")
    result = sandbox_run(f"kill -9 {victim.pid}; kill -TERM {victim.pid}; true")
    assert victim.alive(), "the host sleep was killed from inside the sandbox"
    assert "No such process" in result.stderr, result
    _pid_ns_fired(result)


def test_sandbox_blocks_kill_minus_one_reaching_host(sandbox_run, victim):
    """kill(-1, SIGKILL) signals every process the uid may signal: with the pid namespace, only the
    sandbox's own. The victim has the command's uid (the kill control above shows the uid may kill it)."""
    result = sandbox_run(py("import os, signal\ntry: os.kill(-1, signal.SIGKILL)\nexcept OSError as e: print(e)"))
    assert victim.alive(), f"kill(-1) from the sandbox killed a host process: {result}"
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
        host = run_as_command_uid([SANDBOX_PYTHON, "-I", "-S", "-c", SHM_PROBE, str(key)])
        assert secret.decode() in host.stdout, f"control: the command's uid attaches outside the sandbox: {host}"
        result = sandbox_run(py(SHM_PROBE, str(key)))
        assert secret.decode() not in result.stdout, f"host shared memory read from the sandbox: {result}"
        assert "ERR 2" in result.stdout, result  # ENOENT: no such key in this IPC namespace
        assert "ipc" in result.protection.namespaces, result.protection
    finally:
        libc.shmctl(shmid, 0, None)  # IPC_RMID
