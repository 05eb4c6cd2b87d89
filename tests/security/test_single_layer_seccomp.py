"""The seccomp filter alone, against a process that holds every capability a namespace can grant.

A sandboxed command holds no capability anywhere, so for a syscall that checks one before its arguments
(pivot_root, the new mount API, reboot, sethostname) the kernel answers EPERM with or without the filter,
and a probe in the sandbox cannot tell the two apart. Here a forked child first becomes root of fresh user,
mount, uts, ipc, net and pid namespaces, *then* installs the sandbox's own filter (`build_filter`) and calls
every denied syscall with try-syscall arguments (-1 everywhere: EBADF, EFAULT or EINVAL once past the
capability check). The control is the same child without the filter: every syscall it is not refused is
judged; what it is refused needs a capability of the initial namespace (tests/unit/test_seccomp.py probes
those as root). This is how an unprivileged run catches a deny-list entry dropped from the filter.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable

import pytest
from support.syscalls import ARGUMENT_RULES, EXPECTED_DENIED, syscall_number, try_arguments
from unit import _forked

from hanzo_sandbox_mcp.linux import seccomp

_LIBC = ctypes.CDLL(None, use_errno=True)
#: CLONE_NEWUSER | NEWNS | NEWUTS | NEWIPC | NEWNET | NEWPID.
_NAMESPACES = 0x10000000 | 0x00020000 | 0x04000000 | 0x08000000 | 0x40000000 | 0x20000000
PROBED = tuple(sorted({*EXPECTED_DENIED, *seccomp.DENIED_SYSCALLS} - set(ARGUMENT_RULES)))
#: Checked against a capability a user namespace grants, so the control must get past EPERM for these.
NAMESPACE_CAPABLE = ("fsopen", "pivot_root", "reboot", "sethostname", "setdomainname")


def _probe() -> dict[str, int]:
    results = {}
    for name in PROBED:
        number = syscall_number(name)
        if number is not None:
            args = [ctypes.c_ulong(a & 0xFFFFFFFFFFFFFFFF) for a in try_arguments(name)]
            ret = int(_LIBC.syscall(ctypes.c_long(number), *args))
            results[name] = -ctypes.get_errno() if ret == -1 else ret
    return results


def _as_namespace_root(then: Callable[[], None]) -> dict[str, int]:
    """In a forked child: become root of fresh namespaces, fork pid 1 of the new pid namespace, run `then`
    (install the filter, or nothing), probe."""

    def become_root() -> None:
        uid, gid = os.getuid(), os.getgid()
        if _LIBC.unshare(_NAMESPACES) != 0:
            raise OSError(ctypes.get_errno(), "unshare of user and other namespaces")
        for path, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{path}", "w") as handle:
                handle.write(text)

    def pid_one() -> dict[str, int]:
        return _forked.in_child(_probe, then)  # type: ignore[no-any-return]

    return _forked.in_child(pid_one, become_root)  # type: ignore[no-any-return]


def _install_filter() -> None:
    _forked.set_no_new_privs()
    seccomp.install_filter(seccomp.build_filter("full"))


@pytest.fixture(scope="module")
def control() -> dict[str, int]:
    return _as_namespace_root(lambda: None)


def test_namespace_root_gets_past_the_capability_checks_positive_control(control):
    refused = {name: control[name] for name in NAMESPACE_CAPABLE if control.get(name) == -errno.EPERM}
    assert refused == {}, f"root of fresh namespaces is still refused, so nothing below is judged: {refused}"


def test_seccomp_alone_denies_what_namespace_root_may_call(control):
    filtered = _as_namespace_root(_install_filter)
    judged = [name for name in seccomp.DENIED_SYSCALLS if name in control and control[name] != -errno.EPERM]
    assert set(NAMESPACE_CAPABLE) <= set(judged), judged
    let_through = {name: filtered[name] for name in judged if filtered[name] != -errno.EPERM}
    assert let_through == {}, f"the filter lets these through to namespace root (control: not EPERM): {let_through}"
