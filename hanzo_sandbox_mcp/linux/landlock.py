"""A small typed Landlock binding: confine the calling process to a filesystem allowlist.

The launcher imports this module under `python -I -S` between fork and exec, so it uses only modules the
interpreter has already loaded at startup (ctypes, os, errno, stat, _collections_abc): `dataclasses` alone
would cost about 15 ms (it imports inspect and re), more than the whole launcher, hence the hand-written
immutable result class.

Why not the PyPI `landlock` package: it handles filesystem rights only (no TCP, no scopes), reads errno
without looking at the return value, leaks the ruleset fd and refuses rules on files such as /dev/null.

Semantics of `restrict_self`:

- Every filesystem right the running ABI knows is handled, so anything not granted below is denied.
- `read_exec` paths get READ_FILE | READ_DIR | EXECUTE.
- `read_write` paths get every handled right, including REFER (from ABI 2), so links and renames work
  between read-write directories but a file can never be linked or moved across the allowlist boundary.
- A path that is not a directory (a regular file such as /etc/ld.so.cache, or a device such as /dev/null)
  gets only the rights that apply to files: read-write files (put /dev/null, /dev/zero, /dev/tty in
  `read_write`) are readable, writable, truncatable and accept device ioctls; read-exec files are readable
  and executable. No separate list is needed.
- `list_only` directories get READ_DIR alone: their entries (and those of every directory beneath) can be
  listed, but no file in them read, written or executed unless another rule grants it. The launcher gives
  it the private root's `/`, whose contents are the allowlist anyway, never the host's.
- A path that does not exist gets no rule and is reported in `LandlockResult.skipped`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat

# `collections.abc` would import the `collections` package (about 2 ms at launcher start); the
# `_collections_abc` module it re-exports from is already loaded by `os`.
from _collections_abc import Sequence

__all__ = [
    "ACCESS_FS_EXECUTE",
    "ACCESS_FS_IOCTL_DEV",
    "ACCESS_FS_MAKE_BLOCK",
    "ACCESS_FS_MAKE_CHAR",
    "ACCESS_FS_MAKE_DIR",
    "ACCESS_FS_MAKE_FIFO",
    "ACCESS_FS_MAKE_REG",
    "ACCESS_FS_MAKE_SOCK",
    "ACCESS_FS_MAKE_SYM",
    "ACCESS_FS_READ_DIR",
    "ACCESS_FS_READ_FILE",
    "ACCESS_FS_REFER",
    "ACCESS_FS_REMOVE_DIR",
    "ACCESS_FS_REMOVE_FILE",
    "ACCESS_FS_TRUNCATE",
    "ACCESS_FS_WRITE_FILE",
    "ACCESS_NET_BIND_TCP",
    "ACCESS_NET_CONNECT_TCP",
    "SCOPE_ABSTRACT_UNIX_SOCKET",
    "SCOPE_SIGNAL",
    "LandlockError",
    "LandlockResult",
    "abi_version",
    "build_ruleset",
    "enforce",
    "handled_fs_rights",
    "restrict_self",
    "scope_self",
]

# Filesystem access rights (include/uapi/linux/landlock.h).
ACCESS_FS_EXECUTE = 1 << 0
ACCESS_FS_WRITE_FILE = 1 << 1
ACCESS_FS_READ_FILE = 1 << 2
ACCESS_FS_READ_DIR = 1 << 3
ACCESS_FS_REMOVE_DIR = 1 << 4
ACCESS_FS_REMOVE_FILE = 1 << 5
ACCESS_FS_MAKE_CHAR = 1 << 6
ACCESS_FS_MAKE_DIR = 1 << 7
ACCESS_FS_MAKE_REG = 1 << 8
ACCESS_FS_MAKE_SOCK = 1 << 9
ACCESS_FS_MAKE_FIFO = 1 << 10
ACCESS_FS_MAKE_BLOCK = 1 << 11
ACCESS_FS_MAKE_SYM = 1 << 12
ACCESS_FS_REFER = 1 << 13  # ABI 2
ACCESS_FS_TRUNCATE = 1 << 14  # ABI 3
ACCESS_FS_IOCTL_DEV = 1 << 15  # ABI 5

# Network access rights (ABI 4).
ACCESS_NET_BIND_TCP = 1 << 0
ACCESS_NET_CONNECT_TCP = 1 << 1

# Scopes (ABI 6).
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

_FS_ABI1 = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
# Rights added by each ABI; ABIs 4, 6 and 7 added no filesystem right.
_FS_ADDED = {2: ACCESS_FS_REFER, 3: ACCESS_FS_TRUNCATE, 5: ACCESS_FS_IOCTL_DEV}

# The only rights a rule on a non-directory may carry (the kernel answers EINVAL to anything else).
_FILE_RIGHTS = ACCESS_FS_EXECUTE | ACCESS_FS_WRITE_FILE | ACCESS_FS_READ_FILE | ACCESS_FS_TRUNCATE | ACCESS_FS_IOCTL_DEV
_READ_EXEC = ACCESS_FS_READ_FILE | ACCESS_FS_READ_DIR | ACCESS_FS_EXECUTE

_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_PR_GET_NO_NEW_PRIVS = 39

# landlock_create_ruleset, landlock_add_rule, landlock_restrict_self: the same numbers on x86_64 and on
# the generic table aarch64 uses.
_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}.get(os.uname().machine)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
    # struct landlock_ruleset_attr. Older kernels accept the full size as long as the fields they do not
    # know are zero, which the ABI masking below guarantees.
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    # struct landlock_path_beneath_attr is packed: 12 bytes, not 16.
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


class LandlockError(OSError):
    """A Landlock step failed; `step` names it and `path` the path it was working on, if any."""

    def __init__(self, err: int, step: str, path: str | None = None, hint: str = "") -> None:
        where = f" for {path!r}" if path is not None else ""
        super().__init__(err, f"Landlock {step}{where} failed: {os.strerror(err)}{hint}")
        self.step = step
        self.path = path


class LandlockResult:
    """What `restrict_self` put in force (immutable).

    - `abi`: the Landlock ABI the ruleset was built for (the kernel's, or lower when capped by `max_abi`).
    - `handled_fs`: the filesystem rights denied everywhere except where a rule grants them.
    - `tcp_denied`: TCP bind and connect are denied on every port.
    - `scoped`: abstract unix sockets and signals cannot reach processes outside the sandbox.
    - `ruled`: paths that got a rule; `skipped`: paths that do not exist and got none.
    - `unenforced`: what was asked for or is usually expected but this ABI cannot enforce, one sentence each.
    """

    __slots__ = ("abi", "handled_fs", "ruled", "scoped", "skipped", "tcp_denied", "unenforced")
    _FIELDS = ("abi", "handled_fs", "tcp_denied", "scoped", "ruled", "skipped", "unenforced")  # repr order

    abi: int
    handled_fs: int
    tcp_denied: bool
    scoped: bool
    ruled: tuple[str, ...]
    skipped: tuple[str, ...]
    unenforced: tuple[str, ...]

    def __init__(
        self,
        *,
        abi: int,
        handled_fs: int,
        tcp_denied: bool,
        scoped: bool,
        ruled: tuple[str, ...],
        skipped: tuple[str, ...],
        unenforced: tuple[str, ...],
    ) -> None:
        values = (abi, handled_fs, tcp_denied, scoped, ruled, skipped, unenforced)
        for name, value in zip(self._FIELDS, values, strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"LandlockResult is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"LandlockResult is immutable (cannot delete {name!r})")

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LandlockResult):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"LandlockResult({fields})"


def _syscall(index: int, *args: int | ctypes._CArgObject | None) -> int:
    """Run landlock syscall `index` (0 create, 1 add_rule, 2 restrict_self); -errno on failure."""
    if _SYSCALLS is None:
        return -errno.ENOSYS
    c_args = [ctypes.c_long(arg) if isinstance(arg, int) else arg for arg in args]
    result = int(_libc.syscall(ctypes.c_long(_SYSCALLS[index]), *c_args))
    # errno is meaningful only when the call itself reports failure.
    return -ctypes.get_errno() if result == -1 else result


def abi_version() -> int:
    """The Landlock ABI version the kernel offers; 0 when Landlock is missing or disabled at boot."""
    result = _syscall(0, None, 0, _CREATE_RULESET_VERSION)
    if result >= 0:
        return result
    if -result in (errno.ENOSYS, errno.EOPNOTSUPP):
        return 0
    raise LandlockError(-result, "create_ruleset(VERSION)")


def handled_fs_rights(abi: int) -> int:
    """Every filesystem right ABI `abi` can handle (the kernel rejects a ruleset naming any other)."""
    if abi < 1:
        raise ValueError(f"Landlock ABI must be at least 1, got {abi}")
    rights = _FS_ABI1
    for added_in, right in _FS_ADDED.items():
        if abi >= added_in:
            rights |= right
    return rights


def _no_new_privs() -> bool:
    result = int(
        _libc.prctl(
            ctypes.c_int(_PR_GET_NO_NEW_PRIVS),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )
    )
    return result == 1


def _check_path(path: str) -> None:
    # A relative path would be resolved against whatever the launcher's cwd happens to be.
    if not path.startswith("/") or "\0" in path:
        raise LandlockError(errno.EINVAL, "rule", path, ": paths must be absolute and contain no NUL byte")


def _add_path_rule(ruleset_fd: int, path: str, rights: int) -> bool:
    """Grant `rights` beneath `path`; False (no rule) when the path does not exist or this process may
    not reach it (after the launcher's uid switch, a venv under a mode-700 /root, say): no rule means
    denied, the safe direction, and DAC would deny that process the path anyway."""
    try:
        # O_PATH follows symlinks, so the rule lands on the real inode (/lib -> usr/lib).
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return False
    except OSError as exc:
        raise LandlockError(exc.errno or errno.EIO, "open", path) from exc
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= _FILE_RIGHTS
        attr = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        result = _syscall(1, ruleset_fd, _RULE_PATH_BENEATH, ctypes.byref(attr), 0)
        if result < 0:
            raise LandlockError(-result, "add_rule", path)
    finally:
        os.close(fd)
    return True


def restrict_self(
    read_exec: Sequence[str],
    read_write: Sequence[str],
    *,
    deny_tcp: bool,
    scope: bool,
    list_only: Sequence[str] = (),
    max_abi: int | None = None,
) -> LandlockResult:
    """Confine the calling thread (and every process it later execs or forks) to the allowlist: a
    `build_ruleset` enforced at once. Raises LandlockError; no fd stays open either way."""
    ruleset_fd, result = build_ruleset(
        read_exec, read_write, deny_tcp=deny_tcp, scope=scope, list_only=list_only, max_abi=max_abi
    )
    try:
        enforce(ruleset_fd)
    finally:
        os.close(ruleset_fd)
    return result


def build_ruleset(
    read_exec: Sequence[str],
    read_write: Sequence[str],
    *,
    deny_tcp: bool,
    scope: bool,
    list_only: Sequence[str] = (),
    max_abi: int | None = None,
) -> tuple[int, LandlockResult]:
    """Make the ruleset of the allowlist (see the module docstring) without enforcing it: the fd (the
    kernel makes it close-on-exec) can be enforced again and again by forked children (`enforce`), so a
    session builds it once and each call only enforces it.

    `deny_tcp` (ABI 4+) denies TCP bind and connect on every port, for network "none".
    `scope` (ABI 6+) stops the sandbox from signalling processes outside it or connecting to abstract unix
    sockets they created. Either is reported in `unenforced` when the ABI is too old.
    `max_abi` caps the ABI used (to test the behaviour of older kernels, or to pin one).

    Raises LandlockError (an OSError carrying errno) naming the step and path; on error no fd stays open.
    """
    for path in (*read_exec, *read_write, *list_only):
        _check_path(path)
    kernel_abi = abi_version()
    if kernel_abi == 0:
        raise LandlockError(
            errno.EOPNOTSUPP,
            "create_ruleset",
            hint=": this kernel has no Landlock (Linux 5.13+ with landlock in the lsm= boot list is needed)",
        )
    abi = kernel_abi if max_abi is None else min(kernel_abi, max_abi)
    handled_fs = handled_fs_rights(abi)
    # No port rule is ever added, so handling TCP denies every bind and connect.
    handled_net = ACCESS_NET_BIND_TCP | ACCESS_NET_CONNECT_TCP if deny_tcp and abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if scope and abi >= 6 else 0

    unenforced: list[str] = []
    if abi < 3:
        unenforced.append(f"truncate() of read-only files is not denied (needs Landlock ABI 3, have {abi})")
    if abi < 5:
        unenforced.append(f"ioctl() on devices is not restricted (needs Landlock ABI 5, have {abi})")
    if deny_tcp and not handled_net:
        unenforced.append(f"TCP bind/connect are not denied by Landlock (needs ABI 4, have {abi})")
    if scope and not scoped:
        unenforced.append(
            f"signals and abstract unix sockets are not confined to the sandbox (needs Landlock ABI 6, have {abi})"
        )

    attr = _RulesetAttr(handled_access_fs=handled_fs, handled_access_net=handled_net, scoped=scoped)
    ruleset_fd = _syscall(0, ctypes.byref(attr), ctypes.sizeof(attr), 0)
    if ruleset_fd < 0:
        raise LandlockError(-ruleset_fd, "create_ruleset")
    ruled: list[str] = []
    skipped: list[str] = []
    try:
        # REFER is granted only in read-write paths: with REFER handled (ABI 2+), a hard link or rename
        # across the allowlist boundary is denied, so a file cannot be moved out or pulled in.
        for paths, rights in (
            (read_exec, handled_fs & _READ_EXEC),
            (read_write, handled_fs),
            (list_only, ACCESS_FS_READ_DIR),
        ):
            for path in paths:
                (ruled if _add_path_rule(ruleset_fd, path, rights) else skipped).append(path)
    except BaseException:
        os.close(ruleset_fd)
        raise
    result = LandlockResult(
        abi=abi,
        handled_fs=handled_fs,
        tcp_denied=bool(handled_net),
        scoped=bool(scoped),
        ruled=tuple(ruled),
        skipped=tuple(skipped),
        unenforced=tuple(unenforced),
    )
    return ruleset_fd, result


def enforce(ruleset_fd: int) -> None:
    """Confine the calling thread with a ruleset from `build_ruleset` (a new, nested Landlock domain).

    The caller must have set `prctl(PR_SET_NO_NEW_PRIVS, 1)` first: this is checked before anything is
    enforced (the kernel would let a process with CAP_SYS_ADMIN skip it, so a root launcher could otherwise
    run without no_new_privs unnoticed). Call it while the process is single-threaded: other threads stay
    unconfined. Raises LandlockError unless the kernel returned 0, so a ruleset enforced is one in force.
    """
    if not _no_new_privs():
        raise LandlockError(
            errno.EPERM,
            "restrict_self",
            hint=": no_new_privs is not set; call prctl(PR_SET_NO_NEW_PRIVS, 1) first",
        )
    result = _syscall(2, ruleset_fd, 0)
    if result < 0:
        raise LandlockError(-result, "restrict_self")


def scope_self() -> bool:
    """Scope the calling process and everything it later forks (ABI 6+): no signal to a process outside
    this domain, no connection to an abstract unix socket made outside it. No filesystem or network right
    is handled, so nothing else changes. A session's sandbox takes this once, before its first call: each
    call's own domain (`enforce`) nests inside it, so the calls and background processes of one session
    may signal each other, while nothing in the session can signal the server or the host. Per-call scopes
    would make sibling domains, which cannot signal each other.

    Returns False when the kernel's ABI has no scopes (then nothing is enforced); raises LandlockError.
    """
    if abi_version() < 6:
        return False
    attr = _RulesetAttr(handled_access_fs=0, handled_access_net=0, scoped=SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL)
    ruleset_fd = _syscall(0, ctypes.byref(attr), ctypes.sizeof(attr), 0)
    if ruleset_fd < 0:
        raise LandlockError(-ruleset_fd, "create_ruleset")
    try:
        enforce(ruleset_fd)
    finally:
        os.close(ruleset_fd)
    return True
