"""Measure and delete a directory tree that the model controls, by descriptors only.

The model owns every byte of a workdir, so the walk itself is under attack. The standard tools fail here:

- `os.walk`, `os.scandir(path)` and any path-based walk fail with ENAMETOOLONG below 4,096 bytes of path
  (data stored there went uncounted), and follow a directory that is swapped for a symbolic link between
  the `lstat` and the open (`renameat2(RENAME_EXCHANGE)` made a root walker walk `/`);
- `shutil.rmtree` and `os.fwalk` recurse: about 1,000 levels raise `RecursionError`, which is no OSError;
- a walk that keeps one descriptor per level runs out of descriptors on a deep chain.

So this walker is iterative (a list of frames), opens every directory with
`openat(parent_fd, name, O_DIRECTORY | O_NOFOLLOW)` relative to its parent's descriptor (a name can never
lead out through a link, and no path is ever longer than one component), never crosses onto another
filesystem, and keeps descriptors for the root and the deepest `max_open` frames only. Climbing back into
a frame whose descriptor was closed opens `..` of the child being left and checks that it is the very
directory (device and inode) the walk went down through; when the model moved things meanwhile, the frame
is re-opened by its names from the root, checked the same way, or given up for this pass.

A directory that the walker cannot enter (mode 000, possible when the server runs as the workdir's owner)
is made searchable through an `O_PATH` descriptor of that very inode; the usage walk restores its mode on
the way out. Entries that vanish during the walk (ENOENT) are skipped.

`python -I -S treewalk.py ROOT` prints "BYTES INODES COMPLETE" (stdlib only): the polled quota counts a
large tree in such a child process, so the count never holds the server's GIL for long.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import sys
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_MAX_OPEN", "TreeUsage", "remove_tree", "tree_usage"]

_log = logging.getLogger("hanzo_sandbox_mcp.treewalk")

#: Descriptors a walk holds below its root, whatever the depth (a server's limit may be 1,024).
DEFAULT_MAX_OPEN = 32
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OWNER_RWX = 0o700
#: Errors that mean "this entry is not (or no longer) a directory we may enter": skip or unlink it.
_NOT_A_DIR = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)

BeforeOpen = Callable[[int, str], None]
"""Test hook: called with (parent descriptor, name) just before a subdirectory is opened."""


@dataclass(frozen=True)
class TreeUsage:
    """What a tree holds below its root: disk blocks in bytes and inodes (each hard-linked inode once)."""

    bytes: int = 0
    inodes: int = 0
    complete: bool = True
    """False when part of the tree moved under the walk and was left for the next pass."""


class _Frame:
    __slots__ = ("fd", "ident", "name", "pending")

    def __init__(self, name: str, fd: int, st: os.stat_result) -> None:
        self.name = name
        self.fd: int | None = fd
        self.ident = (st.st_dev, st.st_ino)
        self.pending = os.listdir(fd)


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _open_dir(parent: int, name: str, *, make_writable: bool) -> tuple[int, os.stat_result, int | None]:
    """(descriptor, its stat, mode to restore or None). Raises OSError when it is not a directory.

    Without root, a directory the walk cannot read and search (or, to remove it, write) gets the missing
    owner bits first; the usage walk puts the original mode back when it leaves the directory.
    """
    needed = _OWNER_RWX if make_writable else 0o500
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except PermissionError:
        # Mode 000: change the mode of exactly this inode, reached through an O_PATH descriptor of it,
        # never by name (the name may be a link by the time of a second lookup).
        handle = os.open(name, _PATH_FLAGS, dir_fd=parent)
        try:
            original = stat.S_IMODE(os.fstat(handle).st_mode)
            os.chmod(f"/proc/self/fd/{handle}", original | needed)
            fd = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        finally:
            os.close(handle)
        return fd, os.fstat(fd), None if make_writable else original
    st = os.fstat(fd)
    mode = stat.S_IMODE(st.st_mode)
    if os.geteuid() != 0 and mode & needed != needed:
        os.fchmod(fd, mode | needed)
        return fd, st, None if make_writable else mode
    return fd, st, None


def _open_root(path: Path | str, *, make_writable: bool) -> tuple[int, int | None] | None:
    """The walk's root, opened from its parent like any other entry; None when it is missing or not a
    directory. The parent is opened O_PATH: a 0711 sessions root (or a user's) needs only search."""
    parent_path, name = os.path.split(os.path.abspath(os.fspath(path)))
    parent = os.open(parent_path or "/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd, _st, restore = _open_dir(parent, name, make_writable=make_writable)
    except OSError as exc:
        if exc.errno in _NOT_A_DIR:
            return None
        raise
    finally:
        os.close(parent)
    return fd, restore


class _Walk:
    """The frame stack shared by the usage walk and the removal."""

    def __init__(self, root_fd: int, *, max_open: int, removing: bool, before_open: BeforeOpen | None) -> None:
        root_st = os.fstat(root_fd)
        self.device = root_st.st_dev
        self.max_open = max(1, max_open)
        self.removing = removing
        self.before_open = before_open
        self.complete = True
        self.stack = [_Frame("", root_fd, root_st)]
        self.restore: dict[tuple[int, int], int] = {}

    def close_all(self) -> None:
        for frame in self.stack[1:]:
            self._close(frame, leaving=True)

    def _close(self, frame: _Frame, *, leaving: bool = False) -> None:
        # A mode is put back only when the walk leaves the directory for good: it may still have to
        # open it again (through `..` or by name) while it is inside.
        if frame.fd is not None:
            restore = self.restore.pop(frame.ident, None) if leaving else None
            if restore is not None:
                with suppress(OSError):
                    os.fchmod(frame.fd, restore)
            os.close(frame.fd)
            frame.fd = None

    def descend(self, name: str) -> bool:
        """Push `name` (a subdirectory of the top frame); False when it is not a directory to enter."""
        parent = self.stack[-1].fd
        assert parent is not None
        if self.before_open is not None:
            self.before_open(parent, name)
        try:
            fd, st, restore = _open_dir(parent, name, make_writable=self.removing)
        except OSError as exc:
            if exc.errno in _NOT_A_DIR:
                return False
            if exc.errno in (errno.EACCES, errno.EPERM) and not self.removing:
                # Someone else's directory (a `run --workdir` tree) that its mode hides even from chmod:
                # a command cannot make one, so nothing it wrote hides there.
                return False
            raise
        if st.st_dev != self.device:
            os.close(fd)  # a mount point: never walk (or delete) another filesystem
            return False
        frame = _Frame(name, fd, st)
        if restore is not None:
            self.restore[frame.ident] = restore
        self.stack.append(frame)
        if len(self.stack) > self.max_open + 1:
            self._close(self.stack[-self.max_open - 1])
        return True

    def ascend(self) -> _Frame:
        """Pop the top frame (closing it) and make sure the new top has a descriptor again."""
        child = self.stack.pop()
        parent = self.stack[-1]
        if parent.fd is None and child.fd is not None:
            try:
                up = os.open("..", _DIR_FLAGS, dir_fd=child.fd)
            except OSError:
                up = -1
            if up >= 0 and _identity(up) == parent.ident:
                parent.fd = up
            elif up >= 0:
                os.close(up)  # the model moved the child: `..` is some other directory
        self._close(child, leaving=True)
        if parent.fd is None:
            self._reopen_from_root()
        return child

    def _reopen_from_root(self) -> None:
        """Open every frame without a descriptor again by its names, checking each one's identity; drop
        the frames from the first that moved (they are walked again on the next pass)."""
        first_closed = next(i for i, f in enumerate(self.stack) if f.fd is None)
        anchor = self.stack[first_closed - 1].fd
        assert anchor is not None
        current = anchor
        for index in range(first_closed, len(self.stack)):
            frame = self.stack[index]
            try:
                opened = os.open(frame.name, _DIR_FLAGS, dir_fd=current)
            except OSError:
                opened = -1
            if opened < 0 or _identity(opened) != frame.ident:
                if opened >= 0:
                    os.close(opened)
                self.complete = False
                self._drop_from(index)
                return
            frame.fd = opened
            current = opened
        for frame in self.stack[1 : -self.max_open]:
            self._close(frame)

    def _drop_from(self, index: int) -> None:
        for frame in self.stack[index:]:
            self._close(frame, leaving=True)
        del self.stack[index:]


def tree_usage(
    root: Path | str,
    *,
    max_open: int = DEFAULT_MAX_OPEN,
    stop: Callable[[], bool] | None = None,
    before_open: BeforeOpen | None = None,
) -> TreeUsage:
    """Blocks (bytes) and inodes below `root`, never following a link or leaving the filesystem.

    `stop` is polled between entries: a walk asked to stop returns what it counted, marked incomplete.
    A missing root holds nothing.
    """
    opened = _open_root(root, make_writable=False)
    if opened is None:
        return TreeUsage()
    root_fd, root_restore = opened
    walk = _Walk(root_fd, max_open=max_open, removing=False, before_open=before_open)
    seen_links: set[tuple[int, int]] = set()
    total = inodes = 0
    try:
        while walk.stack:
            if stop is not None and stop():
                walk.complete = False
                break
            top = walk.stack[-1]
            if not top.pending:
                if len(walk.stack) == 1:
                    break
                walk.ascend()
                continue
            name = top.pending.pop()
            assert top.fd is not None
            try:
                st = os.stat(name, dir_fd=top.fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in seen_links:
                    continue
                seen_links.add(key)
            total += st.st_blocks * 512
            inodes += 1
            if stat.S_ISDIR(st.st_mode):
                walk.descend(name)
    finally:
        walk.close_all()
        if root_restore is not None:
            with suppress(OSError):
                os.fchmod(root_fd, root_restore)
        os.close(root_fd)
    return TreeUsage(bytes=total, inodes=inodes, complete=walk.complete)


def _remove_entry(walk: _Walk, name: str) -> None:
    top = walk.stack[-1]
    assert top.fd is not None
    try:
        st = os.stat(name, dir_fd=top.fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if walk.descend(name):
            return  # emptied first, removed when the walk climbs back out of it
        # Not entered: a mount point (rmdir fails with EBUSY and the pass with it), or it was swapped for
        # a link or a file just now (ENOTDIR: unlink the link itself).
        try:
            os.rmdir(name, dir_fd=top.fd)
            return
        except (FileNotFoundError, NotADirectoryError):
            pass
    with suppress(FileNotFoundError):
        os.unlink(name, dir_fd=top.fd)


def _empty(root_fd: int, max_open: int, before_open: BeforeOpen | None) -> None:
    walk = _Walk(root_fd, max_open=max_open, removing=True, before_open=before_open)
    try:
        while walk.stack:
            top = walk.stack[-1]
            if top.pending:
                _remove_entry(walk, top.pending.pop())
                continue
            if len(walk.stack) == 1:
                return
            depth = len(walk.stack)
            child = walk.ascend()
            if len(walk.stack) == depth - 1:  # the parent is open again: remove the emptied child
                parent = walk.stack[-1]
                assert parent.fd is not None
                try:
                    os.rmdir(child.name, dir_fd=parent.fd)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno != errno.ENOTEMPTY:
                        raise
                    parent.pending.append(child.name)  # something was added meanwhile: again
    finally:
        walk.close_all()


def remove_tree(
    path: Path | str,
    *,
    attempts: int = 3,
    max_open: int = DEFAULT_MAX_OPEN,
    before_open: BeforeOpen | None = None,
) -> bool:
    """Delete `path` and everything below it (a link at `path` is removed, never followed).

    Never raises: each failed pass is logged and the next pass starts over (entries that moved are found
    again). Returns True when `path` is gone. The parent directory is the server's own and is opened by
    path; everything below it is reached by descriptors.
    """
    parent_path, name = os.path.split(os.path.abspath(os.fspath(path)))
    for attempt in range(1, max(1, attempts) + 1):
        try:
            parent = os.open(parent_path or "/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        except OSError as exc:
            _log.warning("cannot open %s to remove %s (pass %d): %s", parent_path, name, attempt, exc)
            continue
        try:
            _remove_below(parent, name, max_open, before_open)
            return True
        except FileNotFoundError:
            return True
        except (OSError, RecursionError, MemoryError) as exc:
            _log.warning("removing %s failed (pass %d of %d): %s", path, attempt, attempts, exc)
        finally:
            os.close(parent)
    return False


def _remove_below(parent: int, name: str, max_open: int, before_open: BeforeOpen | None) -> None:
    try:
        fd, _st, _ = _open_dir(parent, name, make_writable=True)
    except OSError as exc:
        if exc.errno not in _NOT_A_DIR:
            raise
        os.unlink(name, dir_fd=parent)  # a file or a link at the root: removed, never followed
        return
    try:
        _empty(fd, max_open, before_open)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


if __name__ == "__main__":
    counted = tree_usage(sys.argv[1])
    print(counted.bytes, counted.inodes, int(counted.complete))
