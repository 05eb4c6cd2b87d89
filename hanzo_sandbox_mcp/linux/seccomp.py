"""The seccomp deny-list: compiled once per policy by the server, installed by the launcher before exec.

Two halves in one module so the rules and their description cannot drift apart:

- `build_filter` (server side) compiles the deny-list with libseccomp through `pyseccomp` and returns the
  raw BPF program. pyseccomp is imported inside the function: the launcher imports this module under
  `python -I -S` and must stay on the standard library.
- `install_filter` (launcher side) loads those bytes with a single `prctl(PR_SET_SECCOMP)` through ctypes.

The filter allows by default and answers EPERM to what it denies (one errno, so a model reading
"Operation not permitted" can tell policy from a missing feature). Two exceptions: clone3 answers ENOSYS
so glibc falls back to clone(), and a syscall from a foreign ABI (x32, i386 `int 0x80`) kills the process,
because those ABIs number their syscalls differently and a deny-list written for the native table does not
cover them.
"""

from __future__ import annotations

import ctypes
import errno
import os

from .namespaces import CLONE_FLAGS, CLONE_NEWCGROUP

__all__ = [
    "DENIED_SYSCALLS",
    "NETWORK_MODES",
    "SeccompError",
    "build_filter",
    "describe_filter",
    "filter_available",
    "install_filter",
]

NETWORK_MODES = ("none", "loopback", "full")

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
_UNIFIED_NUMBERS = {"open_tree_attr": 467}

# Namespace flags in clone()'s flags (argument 0 on x86_64 and aarch64). CLONE_NEWTIME (0x80) is absent on
# purpose: through clone() that bit is part of the exit signal (CSIGNAL) and the kernel never reads it as a
# flag; unshare and clone3 (denied) are the only ways to ask for a time namespace.
CLONE_NAMESPACE_FLAGS = (*CLONE_FLAGS.values(), CLONE_NEWCGROUP)

_TIOCSTI = 0x5412  # pushes bytes into a terminal's input: commands typed into the user's shell
_TIOCLINUX = 0x541C  # virtual console selection/paste: the same injection on a Linux VT

_AF_UNIX = 1
_AF_INET = 2
_AF_INET6 = 10
_AF_PACKET = 17
_SOCK_RAW = 3
_SOCK_PACKET = 10
_SOCK_TYPE_MASK = 0xF  # the low bits of socket()'s type; SOCK_NONBLOCK and SOCK_CLOEXEC sit above them
_LOW32 = 0xFFFFFFFF

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


def build_filter(network: str) -> bytes:
    """Compile the deny-list for `network` ("none", "loopback" or "full") into a raw BPF program.

    For "none", socket() and socketpair() are limited to AF_UNIX (EPERM for every other family); the
    other modes leave networking to the namespace layer. Raises ValueError for an unknown mode,
    SeccompError on an unsupported machine, ImportError/RuntimeError when pyseccomp or libseccomp is missing.
    """
    if network not in NETWORK_MODES:
        raise ValueError(f"network must be one of {', '.join(NETWORK_MODES)}, got {network!r}")
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
    eperm = sc.ERRNO(errno.EPERM)

    for name in DENIED_SYSCALLS:
        number = number_of(name)
        if number is not None:
            flt.add_rule(eperm, number)

    # clone3 passes its flags in memory BPF cannot read: ENOSYS makes glibc fall back to clone().
    flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
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

    # Packet sockets see and forge every frame on an interface; AF_INET + SOCK_PACKET is the legacy
    # spelling of the same thing, and raw IP sockets forge headers. (All need CAP_NET_RAW, which a root
    # sandbox could still hold in its user namespace.)
    flt.add_rule(eperm, "socket", sc.Arg(0, sc.MASKED_EQ, _LOW32, _AF_PACKET))
    for family, sock_type in ((_AF_INET, _SOCK_RAW), (_AF_INET6, _SOCK_RAW), (_AF_INET, _SOCK_PACKET)):
        flt.add_rule(
            eperm,
            "socket",
            sc.Arg(0, sc.MASKED_EQ, _LOW32, family),
            sc.Arg(1, sc.MASKED_EQ, _SOCK_TYPE_MASK, sock_type),
        )

    if network == "none":
        for name in ("socket", "socketpair"):
            # Only AF_UNIX (1) passes: family 0 by its low 32 bits, and anything >= 2 over all 64 bits
            # (a value whose low half is 1 but with high bits set is denied too, which is merely strict).
            flt.add_rule(eperm, name, sc.Arg(0, sc.MASKED_EQ, _LOW32, 0))
            flt.add_rule(eperm, name, sc.Arg(0, sc.GE, _AF_UNIX + 1))

    fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
    with os.fdopen(fd, "rb") as program:
        flt.export_bpf(program)
        program.seek(0)
        return program.read()


def describe_filter(network: str) -> tuple[str, ...]:
    """One line per rule of `build_filter(network)`, for the protection report and the doctor."""
    if network not in NETWORK_MODES:
        raise ValueError(f"network must be one of {', '.join(NETWORK_MODES)}, got {network!r}")
    lines = [f"{name}: EPERM ({reason})" for name, reason in _DENIED]
    lines += [
        "clone3: ENOSYS (so glibc falls back to clone(), whose flags the filter can read)",
        "fallocate: EOPNOTSUPP (instant disk reservations would outrun the session's disk quota)",
        "clone with CLONE_NEWUSER/NEWNS/NEWPID/NEWNET/NEWIPC/NEWUTS/NEWCGROUP: EPERM (no new namespaces)",
        "personality other than PER_LINUX, PER_LINUX32 and the query: EPERM (no ASLR switch-off)",
        "ioctl TIOCSTI/TIOCLINUX: EPERM (no typing into the user's terminal)",
        "socket AF_PACKET, raw AF_INET/AF_INET6, AF_INET SOCK_PACKET: EPERM (no packet forging or sniffing)",
        "x32 and i386 syscalls: process killed with SIGSYS (foreign syscall tables)",
    ]
    if network == "none":
        lines.append("socket/socketpair other than AF_UNIX: EPERM (network 'none')")
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
