"""Which host paths a sandboxed command may read, and whether its uid can reach them at all."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["RW_DEVICES", "SYSTEM_READ_PATHS", "python_paths", "reachable_by"]

#: Read/execute-only system allowlist. Only the parts of /etc programs need, not /etc whole: it holds
#: host secrets (ssh host keys, shadow, credentials of services) that DAC alone may not protect.
SYSTEM_READ_PATHS: tuple[str, ...] = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",  # the sandbox's own procfs (a fresh one in its pid namespace)
    "/dev/random",
    "/dev/urandom",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/pki",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/gai.conf",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/alternatives",
    "/etc/protocols",
    "/etc/services",
    "/etc/mime.types",
    "/etc/os-release",
    "/etc/debian_version",
    "/etc/locale.alias",
    "/etc/inputrc",
    "/etc/terminfo",
    "/etc/magic",
    "/etc/python3",
    "/etc/python3.11",
    "/etc/python3.12",
    "/etc/python3.13",
)

#: Devices every program expects to write to (and read from).
RW_DEVICES: tuple[str, ...] = ("/dev/null", "/dev/zero", "/dev/full", "/dev/tty")


def python_paths() -> tuple[str, ...]:
    """The installation of the Python running the server (a venv and its base), so `run_python` works."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return tuple(sorted(p for p in prefixes if p and p != "/" and not p.startswith("/usr")))


def _may_search(st: os.stat_result, uid: int, gids: Iterable[int]) -> bool:
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in set(gids):
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def reachable_by(path: str | Path, uid: int, gid: int) -> bool:
    """True when every directory from / down to `path` is searchable by uid/gid (DAC only).

    Used to drop PATH entries (pyenv shims under a mode-700 /root, say) that the sandbox uid could not
    use anyway, and to pick an interpreter the sandboxed command can execute.
    """
    current = Path("/")
    parts = Path(os.path.abspath(path)).parts[1:]
    try:
        for part in ("", *parts):
            current = current / part if part else current
            st = os.stat(current)
            if stat.S_ISDIR(st.st_mode) and not _may_search(st, uid, (gid,)):
                return False
    except OSError:
        return False
    return True
