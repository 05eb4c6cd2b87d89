"""Exec a program under a seccomp filter that makes this machine look like a weaker one.

    python _degrade_exec.py MODE[,MODE...] -- PROGRAM [ARG...]

Modes (each is what a real environment does to the sandbox's layers):

- `no-userns`  Docker's default profile: unshare, setns, mount and clone with any namespace flag fail
               with EPERM, clone3 with ENOSYS (so libc falls back to clone, whose flags a filter can see).
- `no-landlock` a kernel older than 5.13 or built without Landlock: landlock_* fail with ENOSYS.
- `no-seccomp` a kernel without seccomp filters: seccomp(2) fails with ENOSYS and
               prctl(PR_SET_SECCOMP) with EINVAL.

no_new_privs is set first (required to load a filter without CAP_SYS_ADMIN, and inherited anyway).
Syscall numbers are x86_64 and passed as numbers: the system libseccomp does not know the newest names.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys

import pyseccomp as sc

CLONE_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)
NR = {
    "clone": 56,
    "mount": 165,
    "unshare": 272,
    "setns": 308,
    "seccomp": 317,
    "clone3": 435,
    "prctl": 157,
    "landlock_create_ruleset": 444,
    "landlock_add_rule": 445,
    "landlock_restrict_self": 446,
}
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22


def build(modes: set[str]) -> sc.SyscallFilter:
    filt = sc.SyscallFilter(defaction=sc.ALLOW)
    if "no-userns" in modes:
        for name in ("unshare", "setns", "mount"):
            filt.add_rule(sc.ERRNO(errno.EPERM), NR[name])
        for flag in CLONE_NAMESPACE_FLAGS:
            filt.add_rule(sc.ERRNO(errno.EPERM), NR["clone"], sc.Arg(0, sc.MASKED_EQ, flag, flag))
        filt.add_rule(sc.ERRNO(errno.ENOSYS), NR["clone3"])
    if "no-landlock" in modes:
        for name in ("landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"):
            filt.add_rule(sc.ERRNO(errno.ENOSYS), NR[name])
    if "no-seccomp" in modes:
        filt.add_rule(sc.ERRNO(errno.ENOSYS), NR["seccomp"])
        filt.add_rule(sc.ERRNO(errno.EINVAL), NR["prctl"], sc.Arg(0, sc.EQ, PR_SET_SECCOMP))
    return filt


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    modes = set(argv[0].split(","))
    unknown = modes - {"no-userns", "no-landlock", "no-seccomp"}
    if unknown:
        print(f"unknown mode(s): {sorted(unknown)}", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        print(f"prctl(NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1
    build(modes).load()
    os.execvp(argv[2], argv[2:])
    return 127  # not reached


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
