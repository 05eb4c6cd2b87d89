"""Namespaces, id maps and capability dropping (stdlib only: runs inside the launcher).

Order matters: the launcher unshares every namespace in one call (so the new user namespace, when there
is one, owns the others), then forks the init of the new pid namespace.
"""

from __future__ import annotations

import os

from .libc import check, libc, prctl

TYPE_CHECKING = False  # typing/collections.abc cost the launcher milliseconds at run time
if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "CLONE_FLAGS",
    "drop_bounding_set",
    "namespace_flags",
    "unshare",
    "write_id_maps",
]

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWCGROUP = 0x02000000

#: Namespace name (as in `LaunchPlan.namespaces`) -> clone flag.
CLONE_FLAGS = {
    "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID,
    "mount": CLONE_NEWNS,
    "net": CLONE_NEWNET,
    "ipc": CLONE_NEWIPC,
    "uts": CLONE_NEWUTS,
}

PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


def namespace_flags(names: Iterable[str]) -> int:
    """OR of the clone flags for `names`."""
    flags = 0
    for name in names:
        flags |= CLONE_FLAGS[name]
    return flags


def unshare(flags: int) -> None:
    """unshare(2); raises OSError (EPERM under Docker's profile or Ubuntu's AppArmor userns rule)."""
    check(libc.unshare(flags), "unshare")


def _write(path: str, text: str) -> None:
    # Bytes through os.open: the command writes its maps after the pivot, where no codec may be imported.
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode("ascii"))
    finally:
        os.close(fd)


def write_id_maps(uid_inside: int, uid_outside: int, gid_inside: int, gid_outside: int) -> None:
    """Map exactly one uid and gid into the new user namespace; `setgroups` is denied first (required
    for an unprivileged gid_map, and it stops a process dropping a group that denies it access)."""
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid_inside} {uid_outside} 1\n")
    _write("/proc/self/gid_map", f"{gid_inside} {gid_outside} 1\n")


def _last_cap() -> int:
    try:
        fd = os.open("/proc/sys/kernel/cap_last_cap", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return int(os.read(fd, 32))
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return 40


def drop_bounding_set() -> None:
    """Empty the capability bounding and ambient sets, so nothing exec'd later can regain a capability
    (the kernel clears the permitted set at exec for a non-root uid; this also covers file capabilities)."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in range(_last_cap() + 1):
        prctl(PR_CAPBSET_DROP, cap)
