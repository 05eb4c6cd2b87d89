"""Kernel attack surface: every syscall the seccomp filter denies, probed inside the real sandbox.

The list is the outside expectation of tests/support/syscalls.py (Docker's default profile and Codex's Linux
policy) plus this project's own additions, each resolved to a number without the module under test. Each
syscall is called with arguments that fail with something other than EPERM when the call reaches the kernel
(bubblewrap's try-syscall: -1 for fds, pointers and flags gives EBADF, EFAULT or EINVAL), and a few with
arguments that succeed (an io_uring ring, a perf counter, a key, a user namespace, TIOCSTI on a pipe, which
reaches the ioctl and gets ENOTTY). Inside, each must be EPERM (clone3 and openat2: ENOSYS; x32: SIGSYS).

The positive control runs the very same probe unsandboxed as the command's uid; where the kernel itself says
EPERM there (a capability check before the arguments), as root of fresh user, mount, pid, net, ipc and uts
namespaces. A probe whose control is still EPERM needs a capability of the initial namespace: it is a skip
naming that, and tests/unit/test_seccomp.py checks it when run as root. Inside, the probe first tries the same
escalation (unshare of a user namespace and the others): only the filter stops it, so a sandbox without the
filter would answer EINVAL to the capability-checked calls too, and these tests would fail.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
from _security_support import assert_protection, make_workdir, py, run_in_sandbox
from support.controls import command_uid, python_as_command_uid
from support.syscalls import ARGUMENT_RULES, EXPECTED_DENIED, syscall_number, try_arguments

from hanzo_sandbox_mcp.linux.seccomp import DENIED_SYSCALLS

PROBE = r"""
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def buffer(kind):
    if kind == "io_uring_params":
        return ctypes.create_string_buffer(120)
    if kind == "perf_attr":  # PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK, disabled, user space only
        attr = ctypes.create_string_buffer(128)
        ctypes.c_uint32.from_buffer(attr, 0).value = 1
        ctypes.c_uint32.from_buffer(attr, 4).value = 128
        ctypes.c_uint64.from_buffer(attr, 40).value = (1 << 0) | (1 << 5) | (1 << 6)
        return attr
    if kind == "bpf_map_attr":  # BPF_MAP_TYPE_ARRAY, key 4, value 4, 1 entry
        attr = ctypes.create_string_buffer(72)
        for offset, value in ((0, 2), (4, 4), (8, 4), (12, 1)):
            ctypes.c_uint32.from_buffer(attr, offset).value = value
        return attr
    if kind == "byte":
        return ctypes.byref(ctypes.c_char(b"x"))
    if kind == "pipe":
        return ctypes.c_long(os.pipe()[0])
    if kind.startswith("str:"):
        return ctypes.c_char_p(kind[4:].encode())
    raise ValueError(kind)

def argument(a):
    return buffer(a) if isinstance(a, str) else ctypes.c_ulong(a & 0xFFFFFFFFFFFFFFFF)

def call(number, args):
    values = [argument(a) for a in args]
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(number), *values)
    return (r, ctypes.get_errno()) if r == -1 else (r, 0)

def forked(number, args, kind):
    # Calls that change the process (unshare, ptrace, personality) run in a child; "clone" makes one.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        result = call(number, args)
        if kind == "clone" and result[0] == 0:
            os._exit(0)  # the clone's own child
        if kind == "clone" and result[0] > 0:
            os.waitpid(result[0], 0)
            result = (0, 0)
        os.write(w, json.dumps(result).encode())
        os._exit(0)
    os.close(w)
    data = os.read(r, 200)
    os.waitpid(pid, 0)
    return tuple(json.loads(data)) if data else (-1, -1)

# Become root of fresh user, mount, uts, ipc, net and pid namespaces where the kernel allows it: only the
# capabilities of the initial namespace stay out of reach. No uid map is needed (and Landlock would refuse
# writing one): the creator of a user namespace holds every capability in it until it execs.
NEW_NAMESPACES = 0x10000000 | 0x00020000 | 0x04000000 | 0x08000000 | 0x40000000 | 0x20000000  # user mnt uts ipc net pid
namespace_root = False
if sys.argv[2] == "escalate" and libc.unshare(NEW_NAMESPACES) == 0:
    namespace_root = True
    pid = os.fork()
    if pid:  # the probes run as pid 1 of the new pid namespace
        sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print(json.dumps({"namespace_root": namespace_root}))
for name, number, args, kind in json.loads(sys.argv[1]):
    ret, err = forked(number, args, kind) if kind else call(number, args)
    if ret > 2 and err == 0:  # an fd (io_uring, perf, socket...)
        try:
            os.close(ret)
        except OSError:
            pass
    print(json.dumps({"case": name, "ret": ret, "errno": err}))
"""

_CLONE_NEWUSER, _CLONE_NEWNS, _SIGCHLD = 0x10000000, 0x00020000, 17
_TIOCSTI = 0x5412
_ADDR_NO_RANDOMIZE = 0x0040000


def _cases() -> list[tuple[str, int, list[int | str], str]]:
    """(case, number, arguments, "" or "child" or "clone") for every denied syscall on this machine."""
    cases: list[tuple[str, int, list[int | str], str]] = []

    def add(case: str, name: str, args: list[int | str], fork: str = "") -> None:
        number = syscall_number(name)
        if number is not None:
            cases.append((case, number, args, fork))

    for name in sorted({*EXPECTED_DENIED, *DENIED_SYSCALLS} - set(ARGUMENT_RULES)):
        add(name, name, list(try_arguments(name)))

    # Arguments that succeed when the call reaches the kernel.
    add("io_uring_setup ring of 8", "io_uring_setup", [8, "io_uring_params"])
    add("perf_event_open cpu clock", "perf_event_open", ["perf_attr", 0, -1, -1, 0])
    add("bpf BPF_MAP_CREATE", "bpf", [0, "bpf_map_attr", 72])
    add("keyctl get session keyring", "keyctl", [0, -3, 0])
    add("add_key user key", "add_key", ["str:user", "str:hanzo-probe", "byte", 1, -2])
    add("unshare CLONE_NEWUSER", "unshare", [_CLONE_NEWUSER], fork="child")
    add("unshare CLONE_NEWNS", "unshare", [_CLONE_NEWUSER | _CLONE_NEWNS], fork="child")
    add("clone CLONE_NEWUSER", "clone", [_CLONE_NEWUSER | _SIGCHLD, 0, 0, 0, 0], fork="clone")
    add("ptrace PTRACE_TRACEME", "ptrace", [0, 0, 0, 0], fork="child")
    add("userfaultfd UFFD_USER_MODE_ONLY", "userfaultfd", [1])
    add("personality ADDR_NO_RANDOMIZE", "personality", [_ADDR_NO_RANDOMIZE], fork="child")
    add("socket AF_VSOCK", "socket", [40, 1, 0])
    add("socket AF_PACKET", "socket", [17, 3, 0])
    add("socket raw AF_INET ICMP", "socket", [2, 3, 1])
    # TIOCSTI on a pipe reaches the ioctl (the control gets ENOTTY); the high 32 bits are ignored by the kernel.
    add("ioctl TIOCSTI", "ioctl", ["pipe", _TIOCSTI, "byte"])
    add("ioctl TIOCSTI high bits", "ioctl", ["pipe", 0xFFFFFFFF_00000000 | _TIOCSTI, "byte"])
    add("clone3", "clone3", [0, 0])
    add("openat2", "openat2", [-100, "str:hanzo-openat2-probe", 0, 0])
    return cases


CASES = _cases()
#: What the sandbox answers where it is not EPERM: ENOSYS lets glibc and Python fall back to clone() and openat().
EXPECTED_ERRNO = {"clone3": errno.ENOSYS, "openat2": errno.ENOSYS}
_ARGS = json.dumps(CASES)


def _rows(text: str) -> tuple[bool, dict[str, dict[str, int]]]:
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert lines and "namespace_root" in lines[0], f"the probe printed nothing: {text!r}"
    return lines[0]["namespace_root"], {row["case"]: row for row in lines[1:]}


@pytest.fixture(scope="module")
def inside(sandbox: Any, work_root: Path) -> tuple[Any, bool, dict[str, dict[str, int]]]:
    """One sandboxed run of every probe, after trying to become root of fresh namespaces (default policy)."""
    result = run_in_sandbox(sandbox, py(PROBE, _ARGS, "escalate"), workdir=make_workdir(work_root), timeout_s=60)
    namespace_root, rows = _rows(result.stdout)
    return result, namespace_root, rows


@pytest.fixture(scope="module")
def control() -> dict[str, tuple[bool, dict[str, dict[str, int]]]]:
    runs = {}
    for name, how in (("plain", "plain"), ("namespace root", "escalate")):
        proc = python_as_command_uid(PROBE, _ARGS, how)
        assert proc.returncode == 0, proc
        runs[name] = _rows(proc.stdout)
    return runs


def _describe(row: dict[str, int]) -> str:
    return f"ret={row['ret']} errno={row['errno']} ({errno.errorcode.get(row['errno'], 'ok')})"


def test_sandbox_cannot_become_root_of_new_namespaces(inside, control) -> None:
    """The escalation the probe tries first works for the control and fails inside."""
    result, namespace_root, _ = inside
    assert control["namespace root"][0] is True, "the control could not become root of a user namespace"
    assert namespace_root is False, result


@pytest.mark.parametrize("case", [case for case, *_ in CASES])
def test_sandbox_denies_syscall(inside, control, case: str) -> None:
    result, _, rows = inside
    assert case in rows, f"probe {case} did not report: {result.stdout} {result.stderr}"
    row = rows[case]
    want = EXPECTED_ERRNO.get(case, errno.EPERM)
    assert (row["ret"], row["errno"]) == (-1, want), f"{case} inside the sandbox: {_describe(row)}"
    assert_protection(result, seccomp=True, no_new_privs=True)
    plain, as_root = control["plain"][1][case], control["namespace root"][1][case]
    answer = as_root if plain["errno"] == errno.EPERM else plain
    if answer["errno"] == errno.EPERM:
        pytest.skip(
            f"{case}: uid {command_uid()} gets EPERM from the kernel itself, even as root of a user namespace "
            "(a capability of the initial namespace), so the filter's EPERM cannot be told apart here"
        )
    assert answer["errno"] != want, f"control of {case}: {_describe(answer)}"


def test_x32_syscall_kills_the_process(sandbox: Any, work_root: Path) -> None:
    """x32 numbers its syscalls differently: a deny-list for the native table cannot cover it, so the filter
    kills the process (SIGSYS, exit status 159 from the shell). Unsandboxed, the call merely fails."""
    if os.uname().machine != "x86_64":
        pytest.skip("x32 exists on x86_64 only")
    code = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall.restype = ctypes.c_long\n"
        "print('returned', libc.syscall(ctypes.c_long(0x40000000 | 39)))"  # x32 getpid
    )
    control = python_as_command_uid(code)
    assert control.returncode == 0 and "returned" in control.stdout, control
    result = run_in_sandbox(sandbox, f"{py(code)}; echo status=$?", workdir=make_workdir(work_root))
    assert "status=159" in result.stdout and "returned" not in result.stdout, result
