"""Safe handling of a session workdir, a directory the model controls (it may plant symlinks).

Measuring and deleting the tree is treewalk.py's job, bounding it quota.py's.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import RequestError

__all__ = ["command_owner", "create_workdir", "resolve_inside"]


def resolve_inside(workdir: Path, relative: Path | str | None) -> Path:
    """`relative` resolved against the workdir, refused when it (or a symlink in it) leads outside."""
    root = workdir.resolve()
    if relative is None or str(relative) in ("", "."):
        return root
    text = str(relative)
    if "\x00" in text:
        raise RequestError("cwd contains a NUL byte; give a directory path relative to the session workdir")
    if os.path.isabs(text):
        raise RequestError(f"cwd {text!r} is absolute; give a path relative to the session workdir")
    target = (root / text).resolve()
    if target != root and root not in target.parents:
        raise RequestError(f"cwd {text!r} leads outside the session workdir; stay inside it")
    if not target.is_dir():
        raise RequestError(f"cwd {text!r} is not a directory in the session workdir; create it first")
    return target


def command_owner(policy_uid: int, policy_gid: int) -> tuple[int, int]:
    """Who should own a workdir the server creates: the policy's unprivileged uid when the server runs as
    root (commands never run as root), else the server's own user."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return policy_uid, policy_gid
    return os.getuid(), os.getgid()


def create_workdir(parent: Path, prefix: str, owner: tuple[int, int]) -> Path:
    """A fresh private (0700) directory under `parent`, owned by the uid commands will run as."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    if hasattr(os, "geteuid") and os.geteuid() == 0 and owner != (0, 0):
        os.chown(path, *owner)
    return path
