"""Mounts inside the sandbox's mount namespace (stdlib only: runs inside the launcher).

Propagation is made private first so nothing mounted here reaches the host; then a fresh /proc that only
shows the sandbox's pid namespace (hides host processes and their environ), and private size-capped tmpfs
on /tmp and /dev/shm (programs that hard-code /tmp work without touching the host's /tmp; the memory is
freed when the namespace dies).
"""

from __future__ import annotations

import ctypes
import os

from .libc import check, libc

__all__ = ["bind_fd", "make_private", "mount_proc", "mount_tmpfs", "preserve_under"]

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    check(
        libc.mount(
            None if source is None else os.fsencode(source),
            os.fsencode(target),
            None if fstype is None else fstype.encode(),
            flags,
            None if data is None else data.encode(),
        ),
        f"mount {target}",
    )


def make_private() -> None:
    """Stop mount events propagating back to the host (fail closed: callers abort the mount stage)."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)


def mount_proc() -> None:
    """A procfs for the new pid namespace over /proc."""
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)


def mount_tmpfs(target: str, size_mb: int, uid: int, gid: int) -> None:
    """A private tmpfs of `size_mb` MiB, sticky and world-writable like /tmp, owned by the command's uid."""
    options = f"size={size_mb}m,mode=1777,uid={uid},gid={gid}"
    _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, options)


def preserve_under(roots: tuple[str, ...], paths: list[str]) -> list[tuple[int, str]]:
    """Open (O_PATH) every existing path that lies under one of `roots`, before a tmpfs hides them.

    A session workdir may live under /tmp (`run --workdir /tmp/x`, or the default temp dir); it must stay
    visible at the same path once the private /tmp is mounted, so it is bound back into it afterwards.
    """
    kept: list[tuple[int, str]] = []
    for path in paths:
        real = os.path.realpath(path)
        if any(real == root or real.startswith(root + "/") for root in roots) and real not in roots:
            try:
                kept.append((os.open(real, os.O_PATH | os.O_CLOEXEC), real))
            except OSError:
                continue
    return kept


def bind_fd(fd: int, target: str) -> None:
    """Bind the file or directory behind `fd` onto `target`, creating the mount point in the new tmpfs."""
    if os.path.isdir(f"/proc/self/fd/{fd}"):
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC, None)
