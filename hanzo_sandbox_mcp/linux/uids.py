"""A host uid (and the gid of the same number) per session, from a range no host account uses.

When the server runs as root, each session's commands run as an unprivileged id of their own, so that
sessions are kept apart by plain file permissions as well as by the private root and Landlock. Two parts:

- `check_range`, once at start: refuse a range that overlaps an account or a group (the files and NSS),
  that holds 0 or the kernel's overflow id (what an unmapped id shows as), that reaches 2**32-1 (which the
  kernel reads as "no id"), or that is not wholly mapped into this process's user namespace (in a
  container only the mapped ids exist; a setuid to any other fails with EINVAL).
- `UidAllocator.acquire`, per session: one id whose lock file this process holds with `flock`. Several
  servers may run on one host at once, so the lock lives in the kernel, not in memory: an id is in use
  exactly while some open file description holds its lock, and a server that dies, even by SIGKILL, frees
  its ids when the kernel closes its descriptors. Nothing ever needs cleaning up after a crash.

Not imported by the launcher (server side only), so it may use the whole standard library.
"""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import random
import stat
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, SandboxSetupError, SessionLimitReached

__all__ = [
    "DEFAULT_LOCK_DIR",
    "UidAllocator",
    "UidLease",
    "UidLockDirError",
    "UidRangeError",
    "UidsExhausted",
    "check_range",
]

DEFAULT_LOCK_DIR = Path("/run/hanzo-sandbox-mcp/uids")
#: The largest usable id: (uid_t)-1 = 2**32-1 means "unchanged" to setresuid and "no id" to chown.
MAX_ID = 2**32 - 2
#: What the kernel shows for an id with no mapping; never hand it to a session (files "owned" by it would
#: be confused with every unmapped owner). The live value is read from /proc/sys as well.
_OVERFLOW_ID = 65534
_OVERFLOW_FILES = (Path("/proc/sys/kernel/overflowuid"), Path("/proc/sys/kernel/overflowgid"))
_DEFAULT_PASSWD = Path("/etc/passwd")
_DEFAULT_GROUP = Path("/etc/group")
#: Collisions named in one message; the rest are counted.
_SHOWN_PROBLEMS = 5
_DIR_MODE = 0o700
_LOCK_MODE = 0o600


class UidRangeError(ConfigError, ValueError):
    """The configured session uid range is unusable on this host (the message says which id and why)."""


class UidLockDirError(ConfigError):
    """The lock directory of the session uids is unsafe or cannot be made (the message says why)."""


class UidsExhausted(SessionLimitReached):
    """Every uid of the session range is held by an open session of this server or another one."""


# --- check_range ----------------------------------------------------------------------------------------


def check_range(
    start: int,
    count: int,
    *,
    passwd: Path = _DEFAULT_PASSWD,
    group: Path = _DEFAULT_GROUP,
    uid_map: Path = Path("/proc/self/uid_map"),
    gid_map: Path = Path("/proc/self/gid_map"),
) -> None:
    """Raise `UidRangeError` unless every id in [start, start+count) is free for sessions, as uid and gid.

    NSS (`getpwall`/`getgrall`: LDAP, sssd, systemd's dynamic users, ...) is asked only when `passwd` and
    `group` are the defaults, so that tests with their own files see exactly those files.
    """
    if count < 1:
        raise UidRangeError(f"the session uid range must hold at least one id, not {count}")
    end = start + count  # exclusive
    problems = [
        *_reserved_ids(start, end),
        *_unmapped(start, end, uid_map, "uid"),
        *_unmapped(start, end, gid_map, "gid"),
        *_account_collisions(start, end, passwd, group),
    ]
    if problems:
        shown = "; ".join(problems[:_SHOWN_PROBLEMS])
        more = f"; and {len(problems) - _SHOWN_PROBLEMS} more" if len(problems) > _SHOWN_PROBLEMS else ""
        raise UidRangeError(
            f"the session uid range {start}-{end - 1} cannot be used: {shown}{more}. Choose "
            "sessions.uid_range_start and uid_range_size so that no account or group uses an id in the range "
            "and the whole range is mapped (or set uid_range_size = 0 for one uid for all sessions)"
        )


def _reserved_ids(start: int, end: int) -> Iterator[str]:
    if start <= 0:
        yield "it includes 0 (root)" if start == 0 else f"it starts below 0 ({start})"
    if end - 1 > MAX_ID:
        yield f"it ends above {MAX_ID} ({end - 1}; {MAX_ID + 1} means 'no id' to the kernel)"
    for overflow in sorted(_overflow_ids()):
        if start <= overflow < end:
            yield f"it includes {overflow}, the kernel's overflow id (what an unmapped id shows as)"


def _overflow_ids() -> set[int]:
    ids = {_OVERFLOW_ID}
    for path in _OVERFLOW_FILES:
        try:
            ids.add(int(path.read_text(encoding="ascii")))
        except (OSError, ValueError):
            pass  # not Linux, or /proc not mounted: the default is still refused
    return ids


def _unmapped(start: int, end: int, map_path: Path, kind: str) -> list[str]:
    """The gaps of [start, end) in a user namespace's id map (`inside outside count` per line)."""
    try:
        text = map_path.read_text(encoding="ascii")
    except OSError as exc:
        return [f"{map_path} cannot be read ({exc.strerror}), so the {kind}s mapped here are unknown"]
    extents: list[tuple[int, int]] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and all(value.isdigit() for value in fields):
            inside, length = int(fields[0]), int(fields[2])
            extents.append((inside, inside + length))
    gaps: list[str] = []
    covered = start  # every id of the range below this one is mapped; always < end inside the loop
    for low, high in sorted(extents):
        if high <= covered:
            continue
        if low > covered:
            gaps.append(_gap(covered, min(low, end), map_path, kind))
        covered = max(covered, high)
        if covered >= end:
            break
    if covered < end:
        gaps.append(_gap(covered, end, map_path, kind))
    return gaps


def _gap(low: int, high: int, map_path: Path, kind: str) -> str:
    ids = f"{kind} {low} is" if high - low == 1 else f"{kind}s {low}-{high - 1} are"
    return f"{ids} not mapped in this user namespace (see {map_path}; inside a container only the mapped ids exist)"


def _account_collisions(start: int, end: int, passwd: Path, group: Path) -> list[str]:
    use_nss = passwd == _DEFAULT_PASSWD and group == _DEFAULT_GROUP
    found: dict[str, str] = {}  # collision -> where it was seen first (the files and NSS list the same accounts)
    for name, uid, gid, source in _accounts(passwd, use_nss=use_nss):
        if start <= uid < end:
            found.setdefault(f"uid {uid} is the account {name!r}", source)
        if start <= gid < end:
            found.setdefault(f"gid {gid} is the primary group of the account {name!r}", source)
    for name, gid, source in _groups(group, use_nss=use_nss):
        if start <= gid < end:
            found.setdefault(f"gid {gid} is the group {name!r}", source)
    return [f"{collision} ({source})" for collision, source in found.items()]


def _accounts(passwd: Path, *, use_nss: bool) -> Iterator[tuple[str, int, int, str]]:
    for fields in _colon_records(passwd, minimum=4):
        yield fields[0], int(fields[2]), int(fields[3]), str(passwd)
    if use_nss:
        for entry in pwd.getpwall():
            yield entry.pw_name, entry.pw_uid, entry.pw_gid, "NSS"


def _groups(group: Path, *, use_nss: bool) -> Iterator[tuple[str, int, str]]:
    for fields in _colon_records(group, minimum=3):
        yield fields[0], int(fields[2]), str(group)
    if use_nss:
        for entry in grp.getgrall():
            yield entry.gr_name, entry.gr_gid, "NSS"


def _colon_records(path: Path, *, minimum: int) -> Iterable[list[str]]:
    """The well-formed records of a passwd or group file (NIS `+`/`-` lines and junk are NSS's business)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []  # a file that does not exist lists no account
    except OSError as exc:
        raise UidRangeError(f"cannot read {path} ({exc.strerror}) to check the session uid range") from None
    records = (line.split(":") for line in text.splitlines())
    return [
        fields
        for fields in records
        if len(fields) >= minimum and all(value.isdigit() for value in fields[2:minimum]) and fields[0][:1] not in "+-"
    ]


# --- the allocator --------------------------------------------------------------------------------------


@dataclass(eq=False)
class UidLease:
    """One session's uid and gid (the same number), held until `release` (or until this process dies).

    Keep the lease as long as anything may run as the id: dropping the last reference releases it.
    """

    uid: int
    gid: int
    _fd: int = field(repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def release(self) -> None:
        """Give the id back; idempotent, never raises."""
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd < 0:
            return
        try:
            # LOCK_UN before close: the lock belongs to the open file description, so a copy of the fd that a
            # forked child still holds would otherwise keep the id taken after the session has let it go.
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass  # the close below drops it anyway (when no copy is left)
        try:
            os.close(fd)
        except OSError:
            pass

    def __del__(self) -> None:
        self.release()


class UidAllocator:
    """Hands out ids of [start, start+count) that no process on this host holds, without ever blocking.

    The lock directory is made mode 0700 when missing, and refused when it is a symbolic link, not owned
    by this process's uid, or writable by group or others: whoever can write there can delete a lock file,
    after which two servers could hand out the same id (see `acquire`).
    """

    def __init__(self, start: int, count: int, lock_dir: Path = DEFAULT_LOCK_DIR) -> None:
        if count < 1:
            raise ValueError(f"the session uid range must hold at least one id, not {count}")
        self.start = start
        self.count = count
        self.lock_dir = lock_dir
        os.close(self._open_lock_dir(create=True))  # refuse an unsafe directory now, not at the first session

    def acquire(self) -> UidLease:
        """Lock and return a free id; `UidsExhausted` when every id of the range is held.

        Ids are tried from a random offset, wrapping around, so that servers starting at once do not all
        contend for the first ones. Lock files are never deleted: a process that unlinks a file another one
        holds locked lets a third create a new file of the same name and lock that too, and two sessions would
        then share one id. They cost an inode each and may stay on disk (in /run they vanish at reboot).
        """
        dir_fd = self._open_lock_dir(create=False)
        try:
            offset = random.randrange(self.count)
            for step in range(self.count):
                uid = self.start + (offset + step) % self.count
                fd = self._try_lock(dir_fd, uid)
                if fd is not None:
                    return UidLease(uid=uid, gid=uid, _fd=fd)
        finally:
            os.close(dir_fd)
        raise UidsExhausted(
            f"all {self.count} session uids ({self.start}-{self.start + self.count - 1}) are in use by open "
            "sessions of this server or another one on this host; close a session you no longer need "
            "(close_session) and try again"
        )

    def _try_lock(self, dir_fd: int, uid: int) -> int | None:
        name = f"{uid}.lock"
        try:
            # O_NOFOLLOW and the regular-file check: only we can write in the directory, but a lock file that
            # is not a plain file would be a sign that someone else could, and locking through it proves nothing.
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, _LOCK_MODE, dir_fd=dir_fd)
        except OSError as exc:
            raise self._setup_error(f"cannot open the lock file {self.lock_dir / name}", exc) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SandboxSetupError(f"{self.lock_dir / name} is not a regular file; remove it")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None  # held by an open session (here or in another server)
        except OSError as exc:
            os.close(fd)
            raise self._setup_error(f"cannot lock {self.lock_dir / name}", exc) from None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_lock_dir(self, *, create: bool) -> int:
        """An fd of the checked lock directory; the lock files are opened relative to it (no path races)."""
        path = self.lock_dir
        if create:
            _make_private_dirs(path)
        try:
            before = os.lstat(path)
        except OSError as exc:
            raise UidLockDirError(f"the uid lock directory {path} cannot be used: {exc.strerror}") from None
        if stat.S_ISLNK(before.st_mode):
            raise UidLockDirError(
                f"the uid lock directory {path} is a symbolic link; set sessions.uid_lock_dir to a real directory"
            )
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise UidLockDirError(f"the uid lock directory {path} cannot be opened: {exc.strerror}") from None
        try:
            _check_private_dir(path, os.fstat(fd), before)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _setup_error(self, what: str, exc: OSError) -> SandboxSetupError:
        return SandboxSetupError(f"{what}: {exc.strerror or exc}")


def _make_private_dirs(path: Path) -> None:
    """Make `path` and any missing parent, each mode 0700 (never wider, whatever the umask)."""
    missing: list[Path] = []
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            break
        missing.append(candidate)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, _DIR_MODE)
        except FileExistsError:
            continue  # made by another server at the same moment; checked below like any other
        except OSError as exc:
            raise UidLockDirError(
                f"cannot make the uid lock directory {directory}: {exc.strerror}; set sessions.uid_lock_dir "
                "to a directory this server may create"
            ) from None
        os.chmod(directory, _DIR_MODE)  # a umask such as 0o077 keeps 0700; 0o700 would have left 0000


def _check_private_dir(path: Path, opened: os.stat_result, before: os.stat_result) -> None:
    if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
        raise UidLockDirError(f"the uid lock directory {path} was replaced while it was being opened; try again")
    if opened.st_uid != os.geteuid():
        raise UidLockDirError(
            f"the uid lock directory {path} belongs to uid {opened.st_uid}, not to this server "
            f"(uid {os.geteuid()}): another user could delete its lock files; use a directory of this server's"
        )
    if opened.st_mode & 0o022:
        raise UidLockDirError(
            f"the uid lock directory {path} is writable by group or others (mode {stat.S_IMODE(opened.st_mode):o}), "
            f"so they could delete its lock files; run chmod 700 {path}"
        )
