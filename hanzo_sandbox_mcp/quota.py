"""How a workdir's disk use is bounded, in one of two modes, and what `quota_exceeded` means in each.

- **filesystem** (the server is root, loop devices and `mkfs.ext4` work): each session has a filesystem of
  its own (linux/quotafs.py) holding the byte quota and the inode limit, with the workdir (`work/`) and the
  session's /tmp and /dev/shm (`tmp/`, `shm/`) side by side on it: scratch files are disk, counted in the
  same quota, not RAM outside it. The kernel enforces both limits at every write: the command sees ENOSPC
  and is *not* stopped. `quota_exceeded` is true when the filesystem was full (bytes or inodes) at the end
  of the call. Nothing is walked, so a call costs the same whatever the workdir holds.
- **polled** (anything else): a background thread per session counts the workdir's blocks and inodes with
  the descriptor-based walker (treewalk.py) while any call runs, and once more after the last one ends.
  When a count finds the workdir over either limit, the call is stopped (its process tree killed) and
  `quota_exceeded` is true; a call that began over a limit may add a little, so that clean-up can run.
  The overshoot is what the command writes between two counts; `RLIMIT_FSIZE` is capped to the room the
  last count left, so one file cannot exceed it. The session's /tmp and /dev/shm are size-capped tmpfs
  mounts of the sandbox (their RAM is budgeted server-wide, tmp_budget.py), not part of this quota.

`WorkdirFactory` picks the mode once (a trial filesystem is really made), creates workdirs, and refuses a
new filesystem workdir when the host disk could not hold every quota already promised: sparse images can
promise more than the disk has, and a full host disk gives the command I/O errors instead of ENOSPC.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import anyio
import anyio.to_thread

from . import treewalk
from .errors import SessionLimitReached
from .treewalk import TreeUsage, remove_tree, tree_usage
from .workdir import create_workdir

__all__ = [
    "INODES_PER_MIB",
    "FilesystemQuota",
    "PolledQuota",
    "QuotaLimits",
    "QuotaMode",
    "WorkdirFactory",
    "WorkdirQuota",
]

_log = logging.getLogger("hanzo_sandbox_mcp.quota")

QuotaMode = Literal["filesystem", "polled"]
#: Default inode limit per MiB of byte quota: 262,144 for 1 GiB, room for a large node_modules.
INODES_PER_MIB = 256
_MiB = 1024 * 1024
#: A warm sandbox starts a command within milliseconds of the call, so the first pause is all writing:
#: small trees (a count well under a millisecond) are counted every 10 ms, the 10x rule below still bounding
#: the CPU a larger tree's counts take.
_CHECK_INTERVAL_S = 0.01
_MIN_COUNT_INTERVAL_S = 0.01
_MAX_COUNT_INTERVAL_S = 1.0
#: A count may take at most this share of one core: the pause after a count is 10x its duration.
_COUNT_PAUSE_FACTOR = 10
_JOIN_TIMEOUT_S = 30.0
_INODE_SLACK = 64
#: Trees the last count found larger than this are counted in a child process: a long walk in a thread
#: holds the GIL for most of each 5 ms switch interval and slows every call the server runs.
_IN_THREAD_MAX_INODES = 5000
_CHILD_TIMEOUT_S = 600.0
_SCRATCH_MODE = 0o700

StopCall = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class QuotaLimits:
    """A workdir's byte quota and inode limit."""

    bytes: int
    inodes: int

    @classmethod
    def of(cls, quota_mb: int, inodes: int | None = None) -> QuotaLimits:
        """`inodes` None: INODES_PER_MIB per MiB of quota (at least 1,024)."""
        return cls(bytes=quota_mb * _MiB, inodes=inodes if inodes is not None else max(1024, quota_mb * INODES_PER_MIB))

    def describe(self) -> str:
        return f"{self.bytes // _MiB} MiB and {self.inodes} files and directories"


class WorkdirQuota(ABC):
    """One workdir and the way its quota is enforced; `release()` removes it.

    `tmp_dir` and `shm_dir` are the directories the session's sandbox mounts as /tmp and /dev/shm when they
    live under the same quota (filesystem mode); None when the sandbox gives it size-capped tmpfs mounts.
    """

    mode: ClassVar[QuotaMode]
    tmp_dir: Path | None = None
    shm_dir: Path | None = None

    def __init__(self, path: Path, limits: QuotaLimits) -> None:
        self.path = path
        self.limits = limits

    @abstractmethod
    def file_size_cap(self) -> int | None:
        """Largest file a call may write (RLIMIT_FSIZE), or None when the quota needs no cap."""

    @abstractmethod
    async def supervise(self, stop_call: StopCall) -> str:
        """Run beside a call; when the quota requires it, stop the call and return why. Cancelled when the
        call ends (it may also never return)."""

    @abstractmethod
    def full_after_call(self) -> str | None:
        """Why the quota counts as exceeded at the end of a call the quota did not stop, or None."""

    @abstractmethod
    async def release(self) -> bool:
        """Stop counting and delete the workdir (if this server made it). Never raises; True when gone."""

    async def clear_scratch(self) -> bool:
        """Empty `tmp_dir` and `shm_dir` (a replaced sandbox starts with an empty /tmp, as the result says),
        keeping the directories. Links are removed, never followed. Never raises; True when both are empty.
        Nothing to do when the sandbox's scratch space is tmpfs: it went with the sandbox."""
        return True


class FilesystemQuota(WorkdirQuota):
    """A session's own filesystem, mounted at `mountpoint`: the workdir (`path`) and the scratch
    directories are on it, and the kernel holds the limits for all three together."""

    mode: ClassVar[QuotaMode] = "filesystem"

    def __init__(self, mountpoint: Path, limits: QuotaLimits, image: Path, image_bytes: int) -> None:
        from .linux import quotafs

        work, tmp, shm = (mountpoint / name for name in quotafs.LAYOUT)
        super().__init__(work, limits)
        self.mountpoint = mountpoint
        self.tmp_dir: Path = tmp
        self.shm_dir: Path = shm
        self.image = image
        self.image_bytes = image_bytes

    def file_size_cap(self) -> int | None:
        return None  # no file can outgrow its filesystem

    async def supervise(self, stop_call: StopCall) -> str:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    def full_after_call(self) -> str | None:
        from .linux import quotafs

        try:
            full = quotafs.is_full(self.mountpoint)
        except OSError:
            return None
        if not full:
            return None
        return f"the session's filesystem (its workdir, /tmp and /dev/shm together) is full ({self.limits.describe()})"

    def unallocated_bytes(self) -> int:
        """What the sparse image may still take from the host disk."""
        try:
            allocated = os.stat(self.image).st_blocks * 512
        except OSError:
            return 0
        return max(0, self.image_bytes - allocated)

    async def release(self) -> bool:
        from .linux import quotafs

        return await anyio.to_thread.run_sync(quotafs.release, self.mountpoint, self.image)

    async def clear_scratch(self) -> bool:
        return await anyio.to_thread.run_sync(_empty_dirs, (self.tmp_dir, self.shm_dir))


def _empty_dirs(directories: tuple[Path, ...]) -> bool:
    """Remove what each directory holds, entry by entry with the descriptor-based walker (a link is
    unlinked, never followed), and give it back its mode 0700 (its owner, the command, may have opened it
    to every host user). The directories' own paths are trusted: their parent is root's 0711 root of the
    session filesystem, so the command cannot swap them. Never raises."""
    done = True
    for directory in directories:
        try:
            os.chmod(directory, _SCRATCH_MODE)
            names = os.listdir(directory)
        except OSError as exc:
            _log.warning("cannot empty %s: %s", directory, exc)
            done = False
            continue
        for name in names:
            done = remove_tree(directory / name) and done
    return done


class PolledQuota(WorkdirQuota):
    """A workdir on a shared filesystem, counted by a background thread while calls run."""

    mode: ClassVar[QuotaMode] = "polled"

    def __init__(self, path: Path, limits: QuotaLimits, *, owned: bool) -> None:
        super().__init__(path, limits)
        self.owned = owned
        self.usage = TreeUsage()
        """The latest count (an empty workdir until the first one)."""
        self.counts = 0
        self._lock = threading.Condition()
        self._active = 0
        self._recount = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen[bytes] | None = None

    # -- the counting thread --------------------------------------------------------------------------

    def begin(self) -> None:
        """Something that may write runs in the workdir (a call, or a process that outlives one)."""
        with self._lock:
            self._active += 1
            self._recount = True
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._count_loop, name="hanzo-quota", daemon=True)
                self._thread.start()

    def end(self) -> None:
        """It stopped; one more count follows, so what it wrote last is counted too."""
        with self._lock:
            self._active -= 1
            self._recount = True
            self._lock.notify_all()

    def _count_loop(self) -> None:
        while True:
            with self._lock:
                if self._closed or (self._active == 0 and not self._recount):
                    self._thread = None
                    return
                self._recount = False
            started = time.monotonic()
            try:
                usage = self._count()
            except Exception as exc:  # a count never takes anything down: log, and count again later
                _log.warning("counting the workdir %s failed: %s", self.path, exc)
                usage = None
            spent = time.monotonic() - started
            with self._lock:
                if usage is not None and usage.complete:
                    self.usage = usage
                    self.counts += 1
                pause = min(_MAX_COUNT_INTERVAL_S, max(_MIN_COUNT_INTERVAL_S, _COUNT_PAUSE_FACTOR * spent))
                if not self._closed and self._active:
                    self._lock.wait(pause)

    def _count(self) -> TreeUsage | None:
        if self.usage.inodes <= _IN_THREAD_MAX_INODES:
            return tree_usage(self.path, stop=lambda: self._closed)
        child = subprocess.Popen(
            [sys.executable, "-I", "-S", treewalk.__file__, str(self.path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={},
        )
        with self._lock:
            self._child = child
        try:
            out, err = child.communicate(timeout=_CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise
        finally:
            with self._lock:
                self._child = None
        if child.returncode != 0:
            if self._closed:
                return None
            words = err.decode("utf-8", "replace").strip().splitlines()
            raise RuntimeError(words[-1] if words else f"the counting process exited with {child.returncode}")
        used, inodes, complete = (int(word) for word in out.split())
        return TreeUsage(bytes=used, inodes=inodes, complete=bool(complete))

    def excess(self, baseline: TreeUsage) -> str | None:
        """Why the latest count breaks the quota, or None.

        A call that began with the workdir already over a limit is stopped only when it adds more than a
        little (its $TMPDIR, a lock file): a call that cleans up must be able to finish.
        """
        usage, limits = self.usage, self.limits
        byte_cap = limits.bytes if baseline.bytes <= limits.bytes else baseline.bytes + max(_MiB, limits.bytes // 100)
        inode_cap = limits.inodes if baseline.inodes <= limits.inodes else baseline.inodes + _INODE_SLACK
        if usage.bytes > byte_cap:
            held = f"{usage.bytes / _MiB:.1f} MiB"
            return f"the session workdir holds {held}, over its quota of {limits.bytes // _MiB} MiB"
        if usage.inodes > inode_cap:
            return f"the session workdir holds {usage.inodes} files and directories, over its limit of {limits.inodes}"
        return None

    # -- WorkdirQuota ---------------------------------------------------------------------------------

    def file_size_cap(self) -> int | None:
        return max(0, self.limits.bytes - self.usage.bytes)

    async def supervise(self, stop_call: StopCall) -> str:
        baseline = self.usage
        self.begin()
        try:
            while True:
                await anyio.sleep(_CHECK_INTERVAL_S)
                why = self.excess(baseline)
                if why is not None:
                    await stop_call()
                    return why
        finally:
            self.end()

    def full_after_call(self) -> str | None:
        return None

    async def close(self) -> None:
        """Stop the counting thread (a count in progress stops at its next entry) and wait for it."""
        with self._lock:
            self._closed = True
            thread = self._thread
            if self._child is not None:
                self._child.kill()
            self._lock.notify_all()
        if thread is not None:
            await anyio.to_thread.run_sync(thread.join, _JOIN_TIMEOUT_S)

    async def release(self) -> bool:
        await self.close()
        if not self.owned:
            return True
        return await anyio.to_thread.run_sync(remove_tree, self.path)


class WorkdirFactory:
    """Makes the workdirs of one server (or one `run`) below `root`, in the mode this machine allows.

    Layout: `root/<prefix>XXXX` are the workdirs in polled mode, and in filesystem mode the mount points of
    the session filesystems (the workdir is `<mount point>/work`, see linux/quotafs.py); `root/images/`
    (mode 0700, owned by the server) holds the filesystem images, out of every command's reach.
    """

    def __init__(
        self,
        root: Path,
        owner: tuple[int, int],
        limits: QuotaLimits,
        *,
        force_polled: bool = False,
        disk_reserve_bytes: int = 0,
    ) -> None:
        self.root = root
        self.owner = owner
        self.limits = limits
        self.force_polled = force_polled
        self.disk_reserve_bytes = disk_reserve_bytes
        self._mode: tuple[QuotaMode, str] | None = None
        self._probing = anyio.Lock()
        """One probe at a time: the pool's refill and a new session may ask at once, and two trial
        filesystems made side by side trip over each other's image."""
        self._live: set[FilesystemQuota] = set()
        self._pending = 0
        """Image bytes of filesystems being made right now (promised, not yet in `_live`)."""

    @property
    def images(self) -> Path:
        return self.root / "images"

    async def mode(self) -> tuple[QuotaMode, str]:
        """The mode workdirs get here and why (probed once, by making a trial filesystem)."""
        async with self._probing:
            if self._mode is None:
                self._mode = await anyio.to_thread.run_sync(self._probe)
                _log.debug("workdir quota: %s (%s)", *self._mode)
        return self._mode

    def _probe(self) -> tuple[QuotaMode, str]:
        if self.force_polled:
            return "polled", 'configured: sessions.quota_mode = "polled"'
        if os.uname().sysname != "Linux":
            return "polled", "a filesystem per workdir needs Linux loop devices"
        from .linux import quotafs

        if os.geteuid() != 0:
            return "polled", "the server is not root: a filesystem per workdir needs loop devices, which need root"
        self._make_images_dir()
        why = quotafs.unavailable_reason(self.images)
        if why is not None:
            return "polled", why
        return "filesystem", "root with loop devices and mkfs.ext4: each workdir is an ext4 filesystem of its own"

    def _make_images_dir(self) -> None:
        try:
            self.images.mkdir(mode=0o700)
        except FileExistsError:
            pass
        os.chmod(self.images, 0o700)

    async def create(self, prefix: str = "w-", *, owner: tuple[int, int] | None = None) -> WorkdirQuota:
        """A fresh, empty, private (0700) workdir owned by `owner` (the uid:gid its commands run as;
        default: the factory's), with its quota."""
        owner = self.owner if owner is None else owner
        mode, _why = await self.mode()
        if mode == "filesystem":
            from .linux import quotafs

            size = quotafs.image_size(self.limits.bytes, self.limits.inodes)
            self._check_disk(size)  # on the event loop: one statvfs and a stat per open session, microseconds
            self._pending += size
            try:
                quota = await anyio.to_thread.run_sync(self._create_filesystem, prefix, size, owner)
            except OSError as exc:
                # Loop devices used up, an image that cannot be made: this workdir is counted instead
                # (its results say quota_mode "polled"), rather than the session failing.
                _log.warning("a workdir filesystem could not be made (%s); this workdir is polled", exc)
            else:
                self._live.add(quota)
                return quota
            finally:
                self._pending -= size
        path = await anyio.to_thread.run_sync(create_workdir, self.root, prefix, owner)
        return PolledQuota(path, self.limits, owned=True)

    def _create_filesystem(self, prefix: str, size: int, owner: tuple[int, int]) -> FilesystemQuota:
        from .linux import quotafs

        mountpoint = Path(tempfile.mkdtemp(prefix=prefix, dir=self.root))
        image = self.images / f"{mountpoint.name}.img"
        try:
            quotafs.create(
                image,
                mountpoint,
                quota_bytes=self.limits.bytes,
                inodes=self.limits.inodes,
                uid=owner[0],
                gid=owner[1],
            )
        except BaseException:
            quotafs.release(mountpoint, image)
            raise
        return FilesystemQuota(mountpoint, self.limits, image, size)

    def _check_disk(self, size: int) -> None:
        """Refuse a workdir the host disk could not hold beside the quotas already promised (sparse images
        make the promise; filling the host disk would turn ENOSPC into I/O errors)."""
        vfs = os.statvfs(self.images)
        free = vfs.f_bavail * vfs.f_frsize
        promised = self._pending + sum(q.unallocated_bytes() for q in self._live)
        if free - self.disk_reserve_bytes < promised + size:
            raise SessionLimitReached(
                f"the host disk has {free // _MiB} MiB free; the {len(self._live)} open sessions may still "
                f"write {promised // _MiB} MiB of their quotas, a new one needs {size // _MiB} MiB more, and "
                f"{self.disk_reserve_bytes // _MiB} MiB stay in reserve: close a session you no longer need "
                "(close_session), or reuse one by passing its session_id"
            )

    async def release(self, quota: WorkdirQuota) -> bool:
        """Delete a workdir made here; never raises. True when it is gone."""
        try:
            done = await quota.release()
        except Exception as exc:
            _log.warning("releasing the workdir %s failed: %s", quota.path, exc)
            done = False
        if done and isinstance(quota, FilesystemQuota):
            self._live.discard(quota)
        return done
