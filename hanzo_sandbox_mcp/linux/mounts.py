"""Mounts inside the sandbox's mount namespace (stdlib only: runs inside the launcher).

Propagation is made private first so nothing mounted here reaches the host. The private root (rootfs.py)
is built from these primitives: tmpfs mounts are freed when the namespace dies.
"""

from __future__ import annotations

import ctypes
import os

from .libc import check, libc

__all__ = ["make_private", "mount", "mount_tmpfs"]

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000

libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    """mount(2) with Python strings; raises OSError naming the target."""
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
    mount(None, "/", None, MS_REC | MS_PRIVATE, None)


def mount_tmpfs(target: str, size_mb: int, uid: int, gid: int, *, mode: str = "1777") -> None:
    """A private tmpfs of `size_mb` MiB (by default sticky and world-writable like /tmp)."""
    options = f"size={size_mb}m,mode={mode},uid={uid},gid={gid}"
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, options)
