"""Which way a launcher started as uid 0 builds the sandbox (stdlib only: runs inside the launcher).

Root with CAP_SYS_ADMIN (a root server on a host) unshares pid, mount, net, ipc and uts in the initial user
namespace and creates the user namespace last, after the uid switch. Root *without* CAP_SYS_ADMIN (the root
of a container, whose runtime drops that capability) gets EPERM there, so it takes the path a non-root
server takes: drop to the command's uid first, then unshare everything with a user namespace that owns the
others. Either way the command never holds uid 0.
"""

from __future__ import annotations

import os

from .libc import prctl

__all__ = ["CAP_SYS_ADMIN", "drop_to", "effective_caps", "own_effective_caps", "root_path"]

CAP_SYS_ADMIN = 21
PR_SET_DUMPABLE = 4


def root_path(euid: int, effective: int) -> bool:
    """True when the launcher should build the sandbox as root (namespaces before the user namespace):
    uid 0 holding CAP_SYS_ADMIN in its effective set. Otherwise the user namespace comes first."""
    return euid == 0 and bool(effective >> CAP_SYS_ADMIN & 1)


def effective_caps(status: str) -> int:
    """The CapEff bit mask from the text of /proc/PID/status (0 when the line is missing)."""
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def own_effective_caps() -> int:
    try:
        with open("/proc/self/status") as handle:
            return effective_caps(handle.read())
    except OSError:
        return 0  # no /proc: assume no capability, which takes the path that needs none


def drop_to(uid: int, gid: int) -> None:
    """Become uid/gid for good (no supplementary groups), and dumpable again: the switch leaves the process
    non-dumpable, which makes /proc/self/uid_map root's and the user namespace's id maps unwritable."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    prctl(PR_SET_DUMPABLE, 1)
