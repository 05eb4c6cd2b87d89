"""A filesystem per workdir, limited by the kernel: a sparse ext4 image, loop-mounted `nosuid,nodev`.

Why a filesystem rather than a walk: the kernel then counts every block and inode the command writes, at
the moment it writes it (ENOSPC, no overshoot, no walk of a tree the command controls, no cost that grows
with the tree), and `nosuid,nodev` on the host-side mount makes a setuid file or a device node the command
leaves behind inert for every host user.

Making one (about 20 ms, 0.7 MB of real disk for 1 GiB): a sparse image file of mode 0600 in a root-only
directory, `mkfs.ext4` without a journal and with lazily initialised inode tables, the blocks beyond the
quota reserved for root (so the quota is exact), then `mount -o loop` (which sets the loop device to clear
itself when the last user of the mount goes). The image never appears below the workdir or in a sandbox's
private root.

Layout: one filesystem holds a session's workdir and its scratch space, so that /tmp and /dev/shm are disk
counted in the same quota rather than RAM outside it:

    <mountpoint>/          root:root 0711  (traversable, not listable, not writable)
        lost+found/        root:root 0700  (mkfs's, kept where no command sees it)
        work/              uid:gid 0700    the workdir
        tmp/               uid:gid 0700    the sandbox's /tmp
        shm/               uid:gid 0700    the sandbox's /dev/shm

Never 1777: the sessions root is traversable by every host user, so a world-writable directory here would
let them plant files in a session's /tmp. The root staying root's own means the command can neither rename
`tmp` away nor put a link in its place, so the server may reach these three by path.

Removing one (`release`): unmount (lazily when something still holds it), delete the image, remove the
empty mount point. The crash reaper calls `release` for mounts a dead server left behind.

Needs root, `/dev/loop-control`, `mkfs.ext4` and `tune2fs` (e2fsprogs) and `mount` (util-linux);
`unavailable_reason` tries all of it once with a real image.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import subprocess
from pathlib import Path

from .libc import libc

__all__ = [
    "FULL_BELOW_BYTES",
    "LAYOUT",
    "MOUNT_OPTIONS",
    "QuotaFsError",
    "create",
    "image_size",
    "is_full",
    "release",
    "unavailable_reason",
]

MOUNT_OPTIONS = "loop,nosuid,nodev,noatime"
#: A filesystem with less room than this (or no free inode) is full: the next ordinary write fails.
FULL_BELOW_BYTES = 128 * 1024
_INODE_SIZE = 256
_BLOCK_SIZE = 4096
_MiB = 1024 * 1024
_MNT_DETACH = 0x2
_EXT4_MAGIC = 0xEF53
#: The directories made at the filesystem's root for the command (see the module docstring).
LAYOUT = ("work", "tmp", "shm")
_ROOT_MODE = 0o711
_LAYOUT_MODE = 0o700
#: Each layout directory takes one block, which the byte quota does not charge to the command. Their inodes
#: come out of the inode limit, as ext4's reserved inodes 1-11 always have: the limit is an upper bound.
_LAYOUT_BLOCKS = len(LAYOUT)
_TOOL_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_TOOL_TIMEOUT_S = 30.0

libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class QuotaFsError(OSError):
    """Making or mounting a workdir filesystem failed (the message carries the tool's own words)."""


def image_size(quota_bytes: int, inodes: int) -> int:
    """Image bytes whose ext4 offers at least `quota_bytes` of free space and `inodes` inodes (the rest is
    then held back, see `_hold_back_the_excess`).

    ext4 takes room for the inode tables (256 bytes an inode), bitmaps and group descriptors, lost+found
    and the layout directories, and keeps 2% of all its blocks (at most 16 MiB) back for delayed
    allocation: 2% of the whole image, which the inode tables can make far larger than the quota (100,000
    inodes for 16 MiB); measured on 1 MiB to 4 GiB images.
    """
    size = quota_bytes + inodes * _INODE_SIZE + quota_bytes // 128 + _MiB
    size += min(size // 49, 16 * _MiB + _MiB // 2)
    return (size + _BLOCK_SIZE - 1) // _BLOCK_SIZE * _BLOCK_SIZE


def _tool(name: str) -> str | None:
    return shutil.which(name, path=_TOOL_PATH)


def _run(argv: list[str]) -> str:
    proc = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env={"PATH": _TOOL_PATH, "LC_ALL": "C"},
        timeout=_TOOL_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        words = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip().splitlines()
        raise QuotaFsError(errno.EIO, f"{os.path.basename(argv[0])} failed: {' / '.join(words) or proc.returncode}")
    return proc.stdout.decode("utf-8", "replace")


def _superblock_counts(image: Path) -> tuple[int, int]:
    """(block count, free blocks), read from the primary superblock (1,024 bytes into the image)."""
    with open(image, "rb") as handle:
        handle.seek(1024)
        sb = handle.read(1024)
    if len(sb) < 0x15C or int.from_bytes(sb[0x38:0x3A], "little") != _EXT4_MAGIC:
        raise QuotaFsError(errno.EIO, f"{image} holds no ext4 superblock after mkfs.ext4")

    def u32(offset: int) -> int:
        return int.from_bytes(sb[offset : offset + 4], "little")

    return u32(0x04) | u32(0x150) << 32, u32(0x0C) | u32(0x158) << 32


def _hold_back_the_excess(image: Path, quota_bytes: int) -> None:
    """Make the room a command can use exactly `quota_bytes`: the blocks beyond it become ext4's reserved
    blocks, which only root (resuid 0) may fill, and commands never run as root."""
    tune2fs = _tool("tune2fs")
    if tune2fs is None:
        raise QuotaFsError(errno.ENOENT, "tune2fs (e2fsprogs) is not installed")
    blocks, free = _superblock_counts(image)
    # ext4 keeps 2% of the blocks (at most 4,096) back for delayed allocation: it never counts as free.
    # The layout directories `create` makes after mounting take their blocks from what is left.
    available = free - min(blocks // 50, 4096) - _LAYOUT_BLOCKS
    excess = available - quota_bytes // _BLOCK_SIZE
    if excess < 0:  # fail closed: a smaller quota than capabilities() reports would be a false report
        raise QuotaFsError(errno.ENOSPC, f"the image holds {-excess} blocks fewer than the quota (image_size)")
    if excess > 0:
        _run([tune2fs, "-r", str(excess), str(image)])


def create(image: Path, mountpoint: Path, *, quota_bytes: int, inodes: int, uid: int, gid: int) -> None:
    """Make the image (mode 0600, which must not exist yet), mount it at the existing, empty `mountpoint`
    and lay it out (see the module docstring): `work`, `tmp` and `shm`, owned by uid:gid with mode 0700,
    share `quota_bytes` and `inodes`. On failure nothing is left mounted and the image is gone; raises
    QuotaFsError (or OSError)."""
    mkfs, mount = _tool("mkfs.ext4"), _tool("mount")
    if mkfs is None or mount is None:
        raise QuotaFsError(errno.ENOENT, "mkfs.ext4 (e2fsprogs) or mount (util-linux) is not installed")
    fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    mounted = False
    try:
        try:
            os.ftruncate(fd, image_size(quota_bytes, inodes))
        finally:
            os.close(fd)
        _run(
            [
                mkfs,
                "-q",
                "-F",
                "-b",
                str(_BLOCK_SIZE),
                "-I",
                str(_INODE_SIZE),
                "-N",
                str(inodes),
                "-m",
                "0",
                "-O",
                "^has_journal",
                "-E",
                "lazy_itable_init=1,nodiscard,root_owner=0:0",
                str(image),
            ]
        )
        _hold_back_the_excess(image, quota_bytes)
        _run([mount, "-t", "ext4", "-o", MOUNT_OPTIONS, str(image), str(mountpoint)])
        mounted = True
        _lay_out(mountpoint, uid, gid)
    except BaseException:
        if mounted:
            _unmount(mountpoint)
        image.unlink(missing_ok=True)
        raise


def _lay_out(mountpoint: Path, uid: int, gid: int) -> None:
    """The fresh filesystem's root becomes root's 0711, with the command's directories below it."""
    root = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(root, _ROOT_MODE)
        for name in LAYOUT:
            os.mkdir(name, _LAYOUT_MODE, dir_fd=root)
            os.chown(name, uid, gid, dir_fd=root, follow_symlinks=False)
            os.chmod(name, _LAYOUT_MODE, dir_fd=root)  # the umask may have taken bits; set exactly
    finally:
        os.close(root)


def _unmount(mountpoint: Path) -> bool:
    """True when nothing is mounted at `mountpoint` any more. A busy mount is detached lazily: it goes
    (and its loop device with it) when its last user does."""
    path = os.fsencode(mountpoint)
    for flags in (0, _MNT_DETACH):
        if libc.umount2(path, flags) == 0:
            return True
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return True  # not (or no longer) a mount point
        if err != errno.EBUSY:
            return False
    return False


def release(mountpoint: Path, image: Path | None = None) -> bool:
    """Unmount `mountpoint`, delete `image` and remove the empty mount point. Never raises; True when all
    three are gone (the reaper calls it with image=None for a mount found in /proc/self/mountinfo)."""
    done = _unmount(mountpoint)
    if image is not None:
        try:
            image.unlink(missing_ok=True)
        except OSError:
            done = False
    if done:
        try:
            os.rmdir(mountpoint)
        except FileNotFoundError:
            pass
        except OSError:
            done = False
    return done


def is_full(mountpoint: Path) -> bool:
    """The filesystem at `mountpoint` has no room for an ordinary write, or no free inode."""
    vfs = os.statvfs(mountpoint)
    return vfs.f_bavail * vfs.f_frsize < FULL_BELOW_BYTES or vfs.f_favail == 0


def unavailable_reason(scratch: Path) -> str | None:
    """None when a workdir filesystem can be made here (tried for real, in `scratch`, a root-only
    directory), else why not, in words for `capabilities`. The caller is root."""
    if not os.path.exists("/dev/loop-control"):
        return "/dev/loop-control is missing (no loop device support, or a container without it)"
    if _tool("mkfs.ext4") is None or _tool("tune2fs") is None:
        return "mkfs.ext4 or tune2fs is not installed (apt-get install e2fsprogs)"
    if _tool("mount") is None:
        return "mount is not installed (apt-get install mount)"
    mountpoint = scratch / f"probe-{os.getpid()}"
    image = scratch / f"probe-{os.getpid()}.img"
    try:
        mountpoint.mkdir(mode=0o700)
        create(image, mountpoint, quota_bytes=_MiB, inodes=64, uid=0, gid=0)
    except OSError as exc:
        return f"a trial workdir filesystem could not be made: {exc.strerror or exc}"
    finally:
        release(mountpoint, image)
    return None
