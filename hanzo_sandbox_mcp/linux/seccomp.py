"""The seccomp deny-list: compiled once per policy by the server, installed by the launcher before exec.

Two halves in one module so the rules and their description cannot drift apart:

- `build_filter` (server side) compiles the deny-list with libseccomp through `pyseccomp` and returns the
  raw BPF program. pyseccomp is imported inside the function: the launcher imports this module under
  `python -I -S` and must stay on the standard library.
- `install_filter` (launcher side) loads those bytes with a single `prctl(PR_SET_SECCOMP)` through ctypes.

The filter allows by default and answers EPERM to what it denies (one errno, so a model reading
"Operation not permitted" can tell policy from a missing feature). Exceptions: clone3 and openat2 answer
ENOSYS so that glibc and Python fall back to clone() and openat(), whose arguments the filter can read, and a
syscall from a foreign ABI (x32, i386 `int 0x80`) kills the process, because those ABIs number their
syscalls differently and a deny-list written for the native table does not cover them.

Socket families are the one allowlist: each network mode names the families it may create
(`socket_families`), and every other family is EPERM.
"""

from __future__ import annotations

import ctypes
import errno
import os

from .namespaces import CLONE_FLAGS, CLONE_NEWCGROUP

TYPE_CHECKING = False  # typing costs the launcher milliseconds at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = [
    "DENIED_SYSCALLS",
    "NETWORK_MODES",
    "SeccompError",
    "build_filter",
    "describe_filter",
    "filter_available",
    "install_filter",
    "socket_families",
]

# Every syscall denied outright with EPERM, and the attack it stops.
_DENIED: tuple[tuple[str, str], ...] = (
    ("ptrace", "reading and steering other processes"),
    ("process_vm_readv", "reading another process's memory"),
    ("process_vm_writev", "writing another process's memory"),
    (
        "io_uring_setup",
        "io_uring: large kernel attack surface; its socket/open operations bypass this filter",
    ),
    ("io_uring_enter", "io_uring (see io_uring_setup)"),
    ("io_uring_register", "io_uring (see io_uring_setup)"),
    ("bpf", "loading eBPF programs (kernel attack surface)"),
    ("perf_event_open", "performance counters: kernel attack surface and side channels"),
    ("userfaultfd", "stalling kernel copies mid-flight, a staple of kernel race exploits"),
    ("keyctl", "the kernel keyrings, which outlive and reach beyond the sandbox"),
    ("add_key", "the kernel keyrings"),
    ("request_key", "the kernel keyrings"),
    ("mount", "changing the mount table"),
    ("umount2", "uncovering what a mount hides"),
    ("pivot_root", "changing the root mount"),
    ("move_mount", "the new mount API"),
    ("open_tree", "the new mount API"),
    ("fsopen", "the new mount API"),
    ("fsconfig", "the new mount API"),
    ("fsmount", "the new mount API"),
    ("fspick", "the new mount API"),
    ("mount_setattr", "the new mount API (clearing read-only/nosuid/noexec)"),
    ("open_tree_attr", "the new mount API"),
    ("unshare", "new namespaces: a user namespace exposes root-only kernel code to the sandbox"),
    ("setns", "joining another namespace"),
    ("kexec_load", "replacing the running kernel"),
    ("kexec_file_load", "replacing the running kernel"),
    ("init_module", "loading kernel code"),
    ("finit_module", "loading kernel code"),
    ("delete_module", "unloading kernel modules"),
    ("reboot", "rebooting or halting the machine"),
    ("swapon", "changing swap devices"),
    ("swapoff", "changing swap devices"),
    ("open_by_handle_at", "opening files by handle past every path check (the 'shocker' container escape)"),
    ("name_to_handle_at", "minting file handles for open_by_handle_at"),
    ("acct", "process accounting to an arbitrary file"),
    ("quotactl", "disk quota administration"),
    ("quotactl_fd", "disk quota administration"),
    ("kcmp", "comparing kernel objects of other processes (a kernel pointer-ordering oracle)"),
    ("pidfd_getfd", "copying file descriptors out of another process"),
    ("process_madvise", "advising on another process's memory"),
    ("migrate_pages", "moving another process's memory between NUMA nodes"),
    ("move_pages", "moving another process's memory between NUMA nodes"),
    ("fanotify_init", "filesystem-wide access notification (watching other sessions' activity)"),
    ("sethostname", "renaming the host when no UTS namespace holds"),
    ("setdomainname", "renaming the host's NIS domain when no UTS namespace holds"),
    ("lsm_set_self_attr", "changing the process's own security-module labels"),
    ("uselib", "the a.out library loader (obsolete kernel code)"),
    ("ustat", "obsolete filesystem statistics by device number"),
    ("sysfs", "obsolete filesystem type enumeration"),
    ("iopl", "raw I/O port access (x86)"),
    ("ioperm", "raw I/O port access (x86)"),
    ("lookup_dcookie", "profiler cookie lookups (old kernel attack surface)"),
    ("vhangup", "hanging up the terminal"),
    ("syslog", "reading or clearing the kernel log, which leaks kernel addresses"),
    ("chroot", "changing the root directory, the first step of classic chroot escapes"),
    ("settimeofday", "setting the system clock"),
    ("clock_settime", "setting the system clock"),
    ("adjtimex", "steering the system clock"),
    ("clock_adjtime", "steering the system clock"),
)

DENIED_SYSCALLS: tuple[str, ...] = tuple(name for name, _ in _DENIED)

# Numbers of syscalls newer than the libseccomp in use (2.5.4 resolves these names to -1). They come from the
# unified table (424 and up), where x86_64 and aarch64 share the same numbers.
_UNIFIED_NUMBERS = {"fchmodat2": 452, "lsm_set_self_attr": 460, "open_tree_attr": 467}

# Namespace flags in clone()'s flags (argument 0 on x86_64 and aarch64). CLONE_NEWTIME (0x80) is absent on
# purpose: through clone() that bit is part of the exit signal (CSIGNAL) and the kernel never reads it as a
# flag; unshare and clone3 (denied) are the only ways to ask for a time namespace.
CLONE_NAMESPACE_FLAGS = (*CLONE_FLAGS.values(), CLONE_NEWCGROUP)

_TIOCSTI = 0x5412  # pushes bytes into a terminal's input: commands typed into the user's shell
_TIOCLINUX = 0x541C  # virtual console selection/paste: the same injection on a Linux VT

_AF_UNIX = 1
_AF_INET = 2
_AF_INET6 = 10
_AF_NETLINK = 16
_NETLINK_ROUTE = 0  # addresses, links and routes of the command's own network namespace (getifaddrs, ip)
_SOCK_RAW = 3
_SOCK_PACKET = 10
_SOCK_TYPE_MASK = 0xF  # the low bits of socket()'s type; SOCK_NONBLOCK and SOCK_CLOEXEC sit above them
_LOW32 = 0xFFFFFFFF

# The socket families each network mode may create; every other family is EPERM, AF_VSOCK above all (vsock
# is not network-namespaced: in a VM guest it reaches the hypervisor host's services), and AF_PACKET (every
# frame on an interface), AF_KEY, AF_XDP, AF_ALG and the rest of the kernel's protocol code with them. A new
# mode (for example an egress allowlist) is one line here.
_INET_FAMILIES = (_AF_UNIX, _AF_INET, _AF_INET6, _AF_NETLINK)
# "allowlist" is loopback's families: its way out is the proxy listening on the sandbox's 127.0.0.1.
_SOCKET_FAMILIES = {
    "none": (_AF_UNIX,),
    "loopback": _INET_FAMILIES,
    "full": _INET_FAMILIES,
    "allowlist": _INET_FAMILIES,
}
NETWORK_MODES = tuple(_SOCKET_FAMILIES)
_FAMILY_NAMES = {_AF_UNIX: "AF_UNIX", _AF_INET: "AF_INET", _AF_INET6: "AF_INET6", _AF_NETLINK: "AF_NETLINK (route)"}

# Mode bits that make a file run with its owner's uid or gid. The workdir's host path belongs to the command's
# uid, and `nosuid` covers only the sandbox's own mount: a setuid copy of a shell there would be a door for
# any host user into every session's files.
_S_ISUID = 0o4000
_S_ISGID = 0o2000
# The argument that carries the mode of every syscall that sets one (the same index on x86_64 and aarch64;
# aarch64 has no chmod, creat, mknod or open).
_MODE_ARGUMENT = {"chmod": 1, "fchmod": 1, "fchmodat": 2, "fchmodat2": 2, "creat": 1, "mknod": 1, "mknodat": 2}
# open and openat use their mode only when they create a file: (index of the flags, index of the mode).
_CREATING_OPEN = {"open": (1, 2), "openat": (2, 3)}
_O_CREAT = 0o100
_O_TMPFILE = 0o20000000  # __O_TMPFILE alone: with or without O_DIRECTORY (which differs by arch) the mode is used

_PR_GET_NO_NEW_PRIVS = 39
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_SECCOMP_GET_ACTION_AVAIL = 2
_SECCOMP_RET_KILL_PROCESS = 0x80000000
_SECCOMP_RET_ERRNO = 0x00050000
_SECCOMP_RET_ALLOW = 0x7FFF0000
_BPF_MAXINSNS = 4096
_SOCK_FILTER_SIZE = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k

# The machines whose argument layouts the rules assume, with their seccomp(2) numbers (for the probe).
_SECCOMP_SYSCALL = {"x86_64": 317, "aarch64": 277}.get(os.uname().machine)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class SeccompError(OSError):
    """Building or installing the filter failed; `step` names what was being done."""

    def __init__(self, err: int, step: str, hint: str = "") -> None:
        super().__init__(err, f"seccomp {step} failed: {os.strerror(err)}{hint}")
        self.step = step


class _SockFprog(ctypes.Structure):
    # struct sock_fprog: the instruction count, then a pointer to the instructions.
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def _personality_deny_masks() -> tuple[tuple[int, int], ...]:
    """(mask, value) pairs whose union is every personality except 0, 8 and 0xffffffff.

    Allowed: PER_LINUX (0), PER_LINUX32 (8, `linux32`/`setarch i686`, only changes uname's machine) and
    0xffffffff (the query). Everything else is denied, in particular ADDR_NO_RANDOMIZE (turns ASLR off for
    what the sandbox execs), READ_IMPLIES_EXEC, MMAP_PAGE_ZERO and UNAME26 (an old kernel-stack leak).
    libseccomp 2.5 allows one comparison per argument and rule, so "not one of three values" is written as
    a union of masked compares on the low 32 bits (the kernel reads personality as an unsigned int, so
    high bits cannot smuggle a value past them): "bit i set and bit i+1 clear" (cyclically) for every i but
    3 covers everything except 0, 0xffffffff and the runs of set bits ending at bit 3; "bits 2 and 3 set,
    bit 4 clear" covers those runs except 8 itself.
    """
    masks = tuple(((1 << bit) | (1 << ((bit + 1) % 32)), 1 << bit) for bit in range(32) if bit != 3)
    return (*masks, (0b11100, 0b01100))


def socket_families(network: str) -> tuple[int, ...]:
    """The socket families `network` lets socket() and socketpair() create (AF_NETLINK: NETLINK_ROUTE only)."""
    if network not in _SOCKET_FAMILIES:
        raise ValueError(f"network must be one of {', '.join(NETWORK_MODES)}, got {network!r}")
    return _SOCKET_FAMILIES[network]


def build_filter(network: str) -> bytes:
    """Compile the deny-list for `network` ("none", "loopback", "full" or "allowlist") into a raw BPF program.

    socket() and socketpair() may create only the families of `socket_families(network)`; what those sockets
    can reach is left to the namespace layer. Raises ValueError for an unknown mode, SeccompError on an unsupported
    machine, ImportError/RuntimeError when pyseccomp or libseccomp is missing.
    """
    families = socket_families(network)
    if _SECCOMP_SYSCALL is None:
        raise SeccompError(errno.EOPNOTSUPP, "build", ": rules are written for x86_64 and aarch64 only")
    import pyseccomp as sc

    def number_of(name: str) -> int | None:
        """The native number of `name`; None when this architecture has no such syscall (iopl on aarch64)."""
        number = int(sc.resolve_syscall(sc.Arch.NATIVE, name))
        if number >= 0:
            return number
        if number == -1:  # __NR_SCMP_ERROR: the syscall is newer than this libseccomp
            return _UNIFIED_NUMBERS[name]
        return None  # a libseccomp pseudo-syscall number: absent on this architecture

    flt = sc.SyscallFilter(sc.ALLOW)
    # x32 (nr | 0x40000000) and i386 syscalls reach this "bad arch" action: killed, not merely denied.
    flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    # A binary search over syscall numbers instead of a linear scan: every allowed syscall of the command
    # passes through the filter, so its cost grows with the log of the rules, not with their number.
    flt.set_attr(sc.Attr.CTL_OPTIMIZE, 2)
    eperm = sc.ERRNO(errno.EPERM)

    for name in DENIED_SYSCALLS:
        number = number_of(name)
        if number is not None:
            flt.add_rule(eperm, number)

    # clone3 passes its flags, and openat2 its mode, in memory BPF cannot read: ENOSYS makes glibc and
    # Python fall back to clone() and openat(), whose arguments the rules below check.
    for name in ("clone3", "openat2"):
        flt.add_rule(sc.ERRNO(errno.ENOSYS), name)
    # fallocate reserves gigabytes in microseconds, faster than any quota poll; "not supported" makes
    # glibc's posix_fallocate (and most callers) fall back to writing, which the quota can keep up with.
    flt.add_rule(sc.ERRNO(errno.EOPNOTSUPP), "fallocate")
    for flag in CLONE_NAMESPACE_FLAGS:
        # New namespaces (a user namespace above all) expose root-only kernel code to the sandbox.
        flt.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))

    for mask, value in _personality_deny_masks():
        flt.add_rule(eperm, "personality", sc.Arg(0, sc.MASKED_EQ, mask, value))

    for command in (_TIOCSTI, _TIOCLINUX):
        # Compare only the low 32 bits, as the kernel does: high bits must not let the command through
        # (CVE-2019-10063, flatpak).
        flt.add_rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, _LOW32, command))

    _add_socket_rules(flt, sc, eperm, families)
    _add_mode_rules(flt, sc, eperm, number_of)

    fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
    with os.fdopen(fd, "rb") as program:
        flt.export_bpf(program)
        program.seek(0)
        return program.read()


def _add_socket_rules(flt: Any, sc: Any, eperm: Any, families: tuple[int, ...]) -> None:
    """socket() and socketpair() create only `families`; raw and packet-type sockets of AF_INET/AF_INET6 never.

    libseccomp compares each argument once per rule and ANDs a rule's comparisons, so "not one of these" is
    one rule per excluded family below the highest allowed one, plus one for everything above it. The
    per-family rules compare the low 32 bits (the kernel reads the family as an int, so high bits cannot
    smuggle AF_VSOCK past them); the last one compares all 64 bits, so a value with high bits set is denied
    whatever its low half (strict: no libc sets them). Measured on Linux 6.18: families >= AF_MAX (46) and
    negative ones fail with EAFNOSUPPORT in the kernel anyway; the open-ended rule also covers the families a
    later kernel adds.
    """
    top = max(families)
    for name in ("socket", "socketpair"):
        for family in range(top):
            if family not in families:
                flt.add_rule(eperm, name, sc.Arg(0, sc.MASKED_EQ, _LOW32, family))
        flt.add_rule(eperm, name, sc.Arg(0, sc.GE, top + 1))
    if _AF_NETLINK in families:
        # Only NETLINK_ROUTE: the other protocols (audit, uevents, netfilter, crypto, ...) are kernel attack
        # surface, and some are not namespaced. Any protocol but 0 over all 64 bits is denied.
        flt.add_rule(eperm, "socket", sc.Arg(0, sc.MASKED_EQ, _LOW32, _AF_NETLINK), sc.Arg(2, sc.NE, _NETLINK_ROUTE))
    # Raw IP sockets forge headers, and AF_INET + SOCK_PACKET is the legacy spelling of a packet socket (all
    # need CAP_NET_RAW, which a root sandbox could still hold in its user namespace).
    for family, sock_type in ((_AF_INET, _SOCK_RAW), (_AF_INET6, _SOCK_RAW), (_AF_INET, _SOCK_PACKET)):
        if family in families:
            flt.add_rule(
                eperm,
                "socket",
                sc.Arg(0, sc.MASKED_EQ, _LOW32, family),
                sc.Arg(1, sc.MASKED_EQ, _SOCK_TYPE_MASK, sock_type),
            )


def _add_mode_rules(flt: Any, sc: Any, eperm: Any, number_of: Callable[[str], int | None]) -> None:
    """No syscall that sets a file's mode may set S_ISUID or S_ISGID (one bit per rule: a masked compare of a
    single bit, so no high bits can hide it). This also means no setgid directory."""
    for name, index in _MODE_ARGUMENT.items():
        number = number_of(name)
        if number is not None:
            for bit in (_S_ISUID, _S_ISGID):
                flt.add_rule(eperm, number, sc.Arg(index, sc.MASKED_EQ, bit, bit))
    for name, (flags, mode) in _CREATING_OPEN.items():
        number = number_of(name)
        if number is not None:
            for create in (_O_CREAT, _O_TMPFILE):
                for bit in (_S_ISUID, _S_ISGID):
                    flt.add_rule(
                        eperm, number, sc.Arg(flags, sc.MASKED_EQ, create, create), sc.Arg(mode, sc.MASKED_EQ, bit, bit)
                    )


def describe_filter(network: str) -> tuple[str, ...]:
    """One line per rule of `build_filter(network)`, for the protection report and the doctor."""
    families = ", ".join(_FAMILY_NAMES[family] for family in socket_families(network))
    lines = [f"{name}: EPERM ({reason})" for name, reason in _DENIED]
    lines += [
        "clone3, openat2: ENOSYS (so callers fall back to clone() and openat(), whose arguments the filter reads)",
        "fallocate: EOPNOTSUPP (instant disk reservations would outrun the session's disk quota)",
        "clone with CLONE_NEWUSER/NEWNS/NEWPID/NEWNET/NEWIPC/NEWUTS/NEWCGROUP: EPERM (no new namespaces)",
        "personality other than PER_LINUX, PER_LINUX32 and the query: EPERM (no ASLR switch-off)",
        "ioctl TIOCSTI/TIOCLINUX: EPERM (no typing into the user's terminal)",
        f"socket/socketpair of any family but {families}: EPERM (AF_VSOCK reaches a VM's host past every namespace)",
        "chmod/fchmod/fchmodat/fchmodat2/creat/mknod/mknodat, and open/openat creating a file, with S_ISUID or "
        "S_ISGID in the mode: EPERM (no setuid or setgid file on the host's side of the workdir)",
        "x32 and i386 syscalls: process killed with SIGSYS (foreign syscall tables)",
    ]
    if _AF_INET in socket_families(network):
        lines.append("socket raw AF_INET/AF_INET6, AF_INET SOCK_PACKET: EPERM (no packet forging or sniffing)")
    return tuple(lines)


def _prctl(option: int, arg2: int = 0, arg3: ctypes._CArgObject | None = None) -> int:
    """prctl(option, arg2, arg3, 0, 0) with an optional pointer as arg3; -errno on failure."""
    zero = ctypes.c_ulong(0)
    result = int(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), arg3, zero, zero))
    return -ctypes.get_errno() if result == -1 else result


def install_filter(bpf: bytes) -> None:
    """Install the BPF program `bpf` (from `build_filter`) on the calling thread; it is inherited across exec.

    The caller must have set `prctl(PR_SET_NO_NEW_PRIVS, 1)`: this is checked first (the kernel would let
    a process with CAP_SYS_ADMIN skip it). Install it last, right before exec: from then on the launcher
    itself is filtered. Raises SeccompError naming the problem; on error nothing is installed.
    """
    count, remainder = divmod(len(bpf), _SOCK_FILTER_SIZE)
    if remainder or not 0 < count <= _BPF_MAXINSNS:
        raise SeccompError(
            errno.EINVAL,
            "install",
            f": a BPF program is 1 to {_BPF_MAXINSNS} instructions of {_SOCK_FILTER_SIZE} bytes, got {len(bpf)} bytes",
        )
    if _prctl(_PR_GET_NO_NEW_PRIVS) != 1:
        raise SeccompError(
            errno.EPERM, "install", ": no_new_privs is not set; call prctl(PR_SET_NO_NEW_PRIVS, 1) first"
        )
    # The buffer must outlive the prctl call: keep a reference in this frame rather than a temporary.
    program = ctypes.create_string_buffer(bpf, len(bpf))
    fprog = _SockFprog(len=count, filter=ctypes.addressof(program))
    result = _prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog))
    if result < 0:
        raise SeccompError(-result, "install")


def filter_available() -> bool:
    """True when the kernel can run our filter: seccomp filters with KILL_PROCESS, ERRNO and ALLOW actions."""
    if _SECCOMP_SYSCALL is None:
        return False
    for action in (_SECCOMP_RET_KILL_PROCESS, _SECCOMP_RET_ERRNO, _SECCOMP_RET_ALLOW):
        value = ctypes.c_uint32(action)
        result = int(
            _libc.syscall(
                ctypes.c_long(_SECCOMP_SYSCALL),
                ctypes.c_long(_SECCOMP_GET_ACTION_AVAIL),
                ctypes.c_long(0),
                ctypes.byref(value),
            )
        )
        if result != 0:
            return False
    return True
