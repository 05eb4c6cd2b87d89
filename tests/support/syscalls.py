"""What the seccomp filter must deny, written from outside sources rather than read from the module under test.

`EXPECTED_DENIED` is the union of two published policies, each entry cited; `ALLOWED_ON_PURPOSE` and
`NOT_IMPLEMENTED` account for every entry of those policies this project does not deny, with the reason (the
second is checked: those syscalls must answer ENOSYS without any filter). `syscall_number` resolves a name
without the module under test: from the kernel's UAPI header when it is installed, else from libseccomp, and
from the kernel's unified table for the syscalls newer than both.

Sources:
- Docker's default profile, github.com/moby/profiles `seccomp/default.json` at cd3bed80 (2026-06-30). It is an
  allowlist; the syscalls below are those it does not allow a container that holds no added capability.
- OpenAI Codex's Linux sandbox, github.com/openai/codex `codex-rs/linux-sandbox/src/seccomp.rs` at c63929af:
  ptrace, process_vm_readv/writev and io_uring in every restricted mode, and socket()/socketpair() of
  AF_VSOCK even with full network ("VM sockets can reach host services outside the filesystem sandbox").
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

__all__ = [
    "ALLOWED_ON_PURPOSE",
    "ARGUMENT_RULES",
    "CODEX_DENIES",
    "DOCKER_DENIES",
    "EXPECTED_DENIED",
    "NOT_IMPLEMENTED",
    "syscall_number",
    "try_arguments",
]

DOCKER_DENIES = (
    "acct", "add_key", "bpf", "chroot", "clock_settime", "delete_module", "fanotify_init", "finit_module",
    "fsconfig", "fsmount", "fsopen", "fspick", "init_module", "io_uring_enter", "io_uring_register",
    "io_uring_setup", "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie",
    "lsm_set_self_attr", "migrate_pages", "mount", "mount_setattr", "move_mount", "move_pages",
    "open_by_handle_at", "open_tree", "open_tree_attr", "perf_event_open", "pidfd_getfd", "pivot_root",
    "process_madvise", "quotactl", "quotactl_fd", "reboot", "request_key", "setdomainname", "sethostname",
    "setns", "settimeofday", "swapoff", "swapon", "sysfs", "syslog", "umount2", "unshare", "uselib",
    "userfaultfd", "ustat", "vhangup",
)  # fmt: skip
CODEX_DENIES = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
)
EXPECTED_DENIED = tuple(sorted({*DOCKER_DENIES, *CODEX_DENIES}))

#: Entries of Docker's list that this project allows, and why.
ALLOWED_ON_PURPOSE = {
    "get_mempolicy": "the caller's own NUMA policy (Docker gates it behind CAP_SYS_NICE); NUMA-aware runtimes use it",
    "set_mempolicy": "the caller's own NUMA policy, as get_mempolicy",
    "set_mempolicy_home_node": "the caller's own NUMA policy, as get_mempolicy",
    "mbind": "the caller's own memory placement, as get_mempolicy",
    "lsm_get_self_attr": "reads the caller's own security labels (also in /proc/self/attr)",
    "lsm_list_modules": "lists the active security modules (also in /sys/kernel/security/lsm)",
    "file_getattr": "newer than Docker's review; the inode flags FS_IOC_FSGETXATTR reads through ioctl anyway",
    "file_setattr": "newer than Docker's review; FS_IOC_FSSETXATTR through ioctl, on files Landlock lets it write",
}
#: Entries of Docker's list that this kernel does not implement: ENOSYS without any filter (checked by tests).
NOT_IMPLEMENTED = (
    "_sysctl", "afs_syscall", "create_module", "get_kernel_syms", "getpmsg", "nfsservctl", "putpmsg",
    "query_module", "security", "tuxcall", "vserver",
)  # fmt: skip
#: Entries both policies restrict by argument, each with its own test: clone with namespace flags, clone3
#: (ENOSYS in both), personality (only PER_LINUX, PER_LINUX32 and the query), socket (AF_VSOCK; Docker also
#: AF_ALG), socketpair (AF_VSOCK).
ARGUMENT_RULES = ("clone", "clone3", "personality", "socket", "socketpair")

# Where -1 everywhere meets a capability check before the arguments, arguments that work without one.
_TRY_ARGUMENTS = {"fanotify_init": (0x200, 0)}  # FAN_CLASS_NOTIF | FAN_REPORT_FID: unprivileged since Linux 5.13


def try_arguments(name: str) -> tuple[int, ...]:
    """Arguments for probing `name` (bubblewrap's try-syscall): -1 for every fd, pointer and flag, which an
    allowed call rejects with EBADF, EFAULT or EINVAL, unless the call checks a capability first."""
    return _TRY_ARGUMENTS.get(name, (-1,) * 6)


# The kernel's unified table (424 and up, the same on x86_64 and aarch64), for syscalls newer than the installed
# header and libseccomp.
_UNIFIED = {
    "cachestat": 451, "fchmodat2": 452, "lsm_get_self_attr": 459, "lsm_set_self_attr": 460,
    "lsm_list_modules": 461, "open_tree_attr": 467, "file_getattr": 468, "file_setattr": 469,
}  # fmt: skip
_HEADERS = {"x86_64": "asm/unistd_64.h", "aarch64": "asm-generic/unistd.h"}


@cache
def _header_numbers() -> dict[str, int]:
    relative = _HEADERS.get(os.uname().machine)
    if relative is None:
        return {}
    for header in (*Path("/usr/include").glob(f"*/{relative}"), Path("/usr/include") / relative):
        if header.is_file():
            return {name: int(number) for name, number in re.findall(r"#define __NR_(\w+)\s+(\d+)", header.read_text())}
    return {}


def syscall_number(name: str) -> int | None:
    """The native number of `name`, or None when this architecture has no such syscall."""
    numbers = _header_numbers()
    if name in numbers:
        return numbers[name]
    if name in _UNIFIED:
        return _UNIFIED[name]
    import pyseccomp

    number = int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name))
    return number if number >= 0 else None
