"""A private root filesystem made of the allowlist only (stdlib only: runs inside the launcher's init).

Landlock governs reads, writes and execution, but not everything a path gives access to: it does not
cover chmod/chown/utime/xattr on files outside the workdir, nor connect() to a pathname unix socket (a
user's docker.sock is a root shell). So, inside its mount namespace, the sandbox gets a new root: a small
tmpfs holding only the allowlisted host paths, bound read-only (the workdir and `extra_fs_write` read-write),
a fresh /proc, a minimal /dev, and private size-capped /tmp and /dev/shm. Whatever is not listed does not
exist for the command, whether or not Landlock is available.

Order: every allowlisted path is opened (O_PATH) before anything is mounted, because the staging tmpfs
covers /tmp (a workdir may live there); then the new root is assembled under the staging mount, entered
with pivot_root, the old root detached, and the new root's own tmpfs made read-only.
"""

from __future__ import annotations

import os
import stat

from .libc import check, libc, syscall
from .mounts import (
    MS_BIND,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    mount,
    mount_tmpfs,
)

__all__ = ["DEVICE_LINKS", "build_root"]

MNT_DETACH = 0x2
# statvfs f_flag bits -> mount flags that a remount inside a user namespace must keep (the kernel locks
# them on mounts inherited from a more privileged namespace, and refuses a remount that drops one).
_KEPT_FLAGS = (
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
STAGING = "/tmp"
#: Symlinks every /dev has, pointing into the sandbox's own /proc.
DEVICE_LINKS = {
    "/dev/fd": "/proc/self/fd",
    "/dev/stdin": "/proc/self/fd/0",
    "/dev/stdout": "/proc/self/fd/1",
    "/dev/stderr": "/proc/self/fd/2",
}


class _Entry:
    """One allowlisted host path and how it appears in the new root."""

    __slots__ = ("fd", "link", "mode_chain", "path", "writable")

    def __init__(self, path: str, writable: bool) -> None:
        self.path = path
        self.writable = writable
        self.fd = -1
        self.link: str | None = None
        # Modes of the host's parent directories, recreated so DAC on the way down stays as strict.
        self.mode_chain: list[tuple[str, int]] = []


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _collect(read_only: list[str], read_write: list[str]) -> list[_Entry]:
    entries: dict[str, _Entry] = {}
    pending = [(p, False) for p in read_only] + [(p, True) for p in read_write]
    while pending:
        raw, writable = pending.pop(0)
        path = os.path.normpath(raw)
        if path in ("/", "/proc", "/tmp", "/dev/shm") or not path.startswith("/"):
            continue  # the root, /proc and the private tmpfs are built, never bound
        try:
            st = os.lstat(path)
        except OSError:
            continue
        entry = entries.get(path)
        if entry is not None:
            entry.writable = entry.writable or writable
            continue
        entry = _Entry(path, writable)
        if stat.S_ISLNK(st.st_mode):
            target = os.path.realpath(path)
            if os.path.isdir(target):
                # /bin -> usr/bin: recreate the link, and make sure its target exists in the new root.
                entry.link = os.readlink(path)
                pending.append((target, writable))
            # A link to a file (/etc/resolv.conf -> /run/...) is bound as the file itself, at the link.
        entries[path] = entry
    out = _drop_covered(sorted(entries.values(), key=lambda e: e.path))
    for entry in out:
        try:
            entry.mode_chain = [(p, stat.S_IMODE(os.stat(p).st_mode)) for p in _parents(entry.path)]
            if entry.link is None:
                entry.fd = os.open(entry.path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            entry.fd = -1
            entry.link = None  # unreachable for this process: leave it out
    return [e for e in out if e.fd >= 0 or e.link is not None]


def _drop_covered(entries: list[_Entry]) -> list[_Entry]:
    """Skip a path already inside a bound ancestor with the same or more access (/usr/lib under /usr)."""
    kept: list[_Entry] = []
    for entry in entries:
        covered = any(
            parent.link is None and entry.path.startswith(parent.path + "/") and (parent.writable or not entry.writable)
            for parent in kept
        )
        if not covered:
            kept.append(entry)
    return kept


def _remount_flags(fd: int, writable: bool) -> int:
    vfs = os.statvfs(f"/proc/self/fd/{fd}")
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (0 if writable else MS_RDONLY)
    if writable and not stat.S_ISCHR(os.fstat(fd).st_mode):
        flags |= MS_NODEV  # the workdir never serves device nodes (/dev/null and friends keep theirs)
    for st_flag, ms_flag in _KEPT_FLAGS:
        if vfs.f_flag & st_flag:
            flags |= ms_flag
    return flags


def _make_parents(root: str, entry: _Entry) -> None:
    for parent, mode in entry.mode_chain:
        target = root + parent
        if not os.path.lexists(target):
            os.mkdir(target, 0o700)
            os.chmod(target, mode)


def _place(root: str, entry: _Entry) -> None:
    target = root + entry.path
    _make_parents(root, entry)
    if entry.link is not None:
        if not os.path.lexists(target):
            os.symlink(entry.link, target)
        return
    if not os.path.lexists(target):
        if os.path.isdir(f"/proc/self/fd/{entry.fd}"):
            os.mkdir(target, 0o755)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    mount(f"/proc/self/fd/{entry.fd}", target, None, MS_BIND | MS_REC, None)
    mount(None, target, None, _remount_flags(entry.fd, entry.writable), None)


def _pivot(root: str) -> None:
    number = _PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(0, f"pivot_root: unknown syscall number on {os.uname().machine}")
    os.chdir(root)
    # pivot_root(".", ".") stacks the old root under the new one; detaching "." then drops it.
    syscall(number, b".", b".")
    check(libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")


def build_root(
    read_only: list[str],
    read_write: list[str],
    *,
    tmp_size_mb: int,
    uid: int,
    gid: int,
    fresh_proc: bool,
    scratch: tuple[str, str] | None = None,
) -> None:
    """Assemble the private root and pivot into it. Raises OSError; the caller decides (strict or not).

    `scratch`: host directories (on the session's quota filesystem) bound read-write as /tmp and /dev/shm,
    so that they are disk counted in the quota; None: size-capped tmpfs mounts owned by uid/gid."""
    entries = _collect(read_only, read_write)
    scratch_fds = [os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC) for path in scratch or ()]
    staged = False
    try:
        mount_tmpfs(STAGING, 4, os.getuid(), os.getgid(), mode="0755")
        staged = True
        root = STAGING
        for index, private in enumerate(("/tmp", "/dev/shm")):
            os.makedirs(root + private, 0o755, exist_ok=True)
            if scratch_fds:
                source = f"/proc/self/fd/{scratch_fds[index]}"
                mount(source, root + private, None, MS_BIND, None)
                mount(None, root + private, None, _remount_flags(scratch_fds[index], True), None)
            else:
                mount_tmpfs(root + private, tmp_size_mb, uid, gid)
        for entry in entries:
            _place(root, entry)
        os.makedirs(root + "/proc", 0o555, exist_ok=True)
        if fresh_proc:
            mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
        else:
            mount("/proc", root + "/proc", None, MS_BIND | MS_REC, None)
        for link, target in DEVICE_LINKS.items():
            if not os.path.lexists(root + link):
                os.symlink(target, root + link)
    except OSError:
        if staged:
            # Uncover the host's /tmp (a workdir may live there), so that without a private root the command
            # still runs and the report says what is missing (a container that masks /proc, for one).
            libc.umount2(STAGING.encode(), MNT_DETACH)
        raise
    finally:
        for entry in entries:
            if entry.fd >= 0:
                os.close(entry.fd)
        for fd in scratch_fds:
            os.close(fd)
    _pivot(root)
    # The root tmpfs only holds mount points: nothing may be created beside them.
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
