"""A server's sessions root outlives no server: claimed under a lock, reaped when its server dies.

Each server keeps its workdirs in a sessions root of its own (`hanzo-sandbox-XXXXXXXX` under the configured
parent). Two ways a root could outlive its server, and what this module does about each:

- **The server is killed** (SIGKILL, OOM, a crash): nothing in the server runs any more. So every server
  starts a small *watchdog* process when it claims its root. The watchdog holds the read end of a pipe whose
  write end only the server has; end of file means the server is gone. If the root still exists then (a
  clean shutdown removes it first), the watchdog unmounts whatever is mounted below it (per-session quota
  filesystems) and removes it. The watchdog is in a session of its own, so a Ctrl-C or a signal to the
  server's process group does not take it down with the server.
- **The watchdog died too** (the machine rebooted, everything was SIGKILLed): the next server that starts
  with the same parent removes the leftovers. Several servers may share a parent (one stdio server per
  client is common), so a root is removed only when it is *provably* dead: its lock file exists and can be
  locked. A live server holds an exclusive `flock` on it for its whole life, and the watchdog inherits the
  same open file description, so the lock is held until both are gone. The lock file is created and
  locked under a temporary name and only then renamed into place: a root is never seen with an unlocked
  lock file while its server lives. A root without a lock file, or owned by another uid, is left alone.

The watchdog runs as `python -I -S reaper.py watch ROOT` and imports only the standard library and the
package's stdlib-only modules (no pydantic, no anyio), so it costs a few MiB while it waits.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import subprocess
import sys
import tempfile

if __name__ == "__main__":  # run as a file under -I -S: make the package importable without site
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hanzo_sandbox_mcp.treewalk import remove_tree

__all__ = ["LOCK_NAME", "ROOT_PREFIX", "ClaimedRoot", "claim_root", "mounts_below", "reap_dead_roots"]

ROOT_PREFIX = "hanzo-sandbox-"
LOCK_NAME = ".server.lock"
_ROOT_MODE = 0o711
_MNT_DETACH = 2
_REMOVE_ROUNDS = 5


def _log(message: str) -> None:
    """One line on stderr (the server's log). The watchdog may outlive that pipe: never fail on it."""
    try:
        os.write(2, f"hanzo-sandbox-mcp: reaper: {message}\n".encode("utf-8", "backslashreplace"))
    except OSError:
        pass


# -- mounts ------------------------------------------------------------------------------------------


def _unescape(field: str) -> str:
    r"""mountinfo writes space, tab, newline and backslash in paths as octal escapes (\040 ...)."""
    out: list[str] = []
    index = 0
    while index < len(field):
        code = field[index + 1 : index + 4]
        if field[index] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            index += 4
        else:
            out.append(field[index])
            index += 1
    return "".join(out)


def mounts_below(root: str, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points strictly below `root` in this mount namespace, deepest first (the order to unmount)."""
    prefix = root.rstrip("/") + "/"
    points: list[str] = []
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as handle:
            for line in handle:
                fields = line.split(" ")
                if len(fields) > 4:
                    point = _unescape(fields[4])
                    if point.startswith(prefix):
                        points.append(point)
    except OSError:
        return []
    return sorted(set(points), key=lambda p: (p.count("/"), p), reverse=True)


def _unmount_below(root: str) -> None:
    """Detach every mount below `root` (lazily: a process still inside cannot keep the tree alive).
    Only a root server mounts anything; for anyone else the list is empty."""
    points = mounts_below(root)
    if not points:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for point in points:
        if libc.umount2(os.fsencode(point), _MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more): nothing to do
                _log(f"cannot unmount {point}: {os.strerror(err)}")


def _remove_root(root: str) -> bool:
    """Unmount, then remove, retrying a few rounds (a dying sandbox may still be writing). True when gone."""
    for _ in range(_REMOVE_ROUNDS):
        _unmount_below(root)  # the walker never crosses into a mount: detach the workdir filesystems first
        if remove_tree(root) and not os.path.lexists(root):
            return True
    _log(f"could not remove {root} completely")
    return False


# -- claiming a root ----------------------------------------------------------------------------------


class ClaimedRoot:
    """A live server's sessions root: its lock and its watchdog. `release()` after removing the root."""

    def __init__(self, path: str, lock_fd: int, watchdog: subprocess.Popen[bytes] | None, pipe_w: int) -> None:
        self.path = path
        self._lock_fd = lock_fd
        self._watchdog = watchdog
        self._pipe_w = pipe_w

    @property
    def watchdog_pid(self) -> int | None:
        return None if self._watchdog is None else self._watchdog.pid

    def release(self, wait_s: float = 5.0) -> None:
        """Give up the lock and stop the watchdog (it sees end of file and exits: the root is already
        gone, or it removes what is left). Blocks up to `wait_s` to reap it. Idempotent."""
        for name in ("_pipe_w", "_lock_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
        if self._watchdog is not None:
            try:
                self._watchdog.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                _log(f"watchdog {self._watchdog.pid} still running after {wait_s:g} s; leaving it to finish")
            self._watchdog = None


def _locked_lock_file(directory: str) -> int:
    """Create the lock file under a temporary name, lock it, then rename it into place."""
    fd, temp = tempfile.mkstemp(prefix=".lock-", dir=directory)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(temp, os.path.join(directory, LOCK_NAME))
    except BaseException:
        os.close(fd)
        raise
    return fd


def claim_root(parent: str, *, watchdog: bool = True) -> ClaimedRoot:
    """Create a fresh sessions root (mode 0711) under `parent`, lock it, and start its watchdog, which
    first removes the roots of dead servers beside it. Raises OSError."""
    root = tempfile.mkdtemp(prefix=ROOT_PREFIX, dir=parent)
    os.chmod(root, _ROOT_MODE)
    lock_fd = _locked_lock_file(root)
    if not watchdog:
        return ClaimedRoot(root, lock_fd, None, -1)
    pipe_r, pipe_w = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__), "watch", root],
            stdin=pipe_r,
            stdout=subprocess.DEVNULL,
            pass_fds=(lock_fd,),
            start_new_session=True,
            env={},
        )
    except BaseException:
        os.close(pipe_w)
        os.close(lock_fd)
        raise
    finally:
        os.close(pipe_r)
    os.set_inheritable(pipe_w, False)
    return ClaimedRoot(root, lock_fd, proc, pipe_w)


# -- leftovers of dead servers ------------------------------------------------------------------------


def _dead_lock(root_fd: int) -> int | None:
    """The lock file of a root, opened and locked by us when its server is dead; None while it lives."""
    try:
        fd = os.open(LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=root_fd)
    except OSError:
        return None  # no lock file: a root being born, or not ours to judge
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BlockingIOError
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def reap_dead_roots(parent: str, *, keep: str | None = None) -> list[str]:
    """Remove every sessions root under `parent` whose server is provably dead; return their paths.

    Only directories named `hanzo-sandbox-*`, owned by our uid, whose lock file we can lock. The lock is
    held while removing, so two servers starting at once never remove the same root twice.
    """
    removed: list[str] = []
    uid = os.geteuid()
    try:
        names = sorted(name for name in os.listdir(parent) if name.startswith(ROOT_PREFIX))
    except OSError:
        return removed
    for name in names:
        path = os.path.join(parent, name)
        if path == keep:
            continue
        try:
            root_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if os.fstat(root_fd).st_uid != uid:
                continue
            lock = _dead_lock(root_fd)
        finally:
            os.close(root_fd)
        if lock is None:
            continue
        try:
            _log(f"removing {path}, left behind by a server that is no longer running")
            if _remove_root(path):
                removed.append(path)
        finally:
            os.close(lock)
    return removed


# -- the watchdog process -----------------------------------------------------------------------------


def _watch(root: str) -> int:
    parent = os.path.dirname(root)
    reap_dead_roots(parent, keep=root)
    while True:  # until the server's end of the pipe closes: it exited or died
        try:
            if not os.read(0, 4096):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    if os.path.lexists(root):
        _log(f"the server died without cleaning up; removing its sessions root {root}")
        _remove_root(root)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] != "watch":
        _log("usage: reaper.py watch ROOT (internal to hanzo-sandbox-mcp)")
        return 2
    # Keep the inherited lock fd open for the whole watch: it holds the server's lock while we clean up.
    return _watch(argv[2])


if __name__ == "__main__":
    os._exit(main(sys.argv))
