"""How the launcher is started and what it reports: shared by the async runner and the sync probe."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LAUNCHER", "LaunchReport", "launcher_argv"]

LAUNCHER = Path(__file__).with_name("launcher.py")


def launcher_argv(plan_fd: int, status_fd: int) -> list[str]:
    """The launcher runs with the server's interpreter in isolated mode, without site (fast start). Byte
    code caching stays on: recompiling the layer modules on every call would cost milliseconds."""
    return [sys.executable, "-I", "-S", str(LAUNCHER), str(plan_fd), str(status_fd)]


@dataclass
class LaunchReport:
    """Everything the launcher said on its status pipe, merged."""

    namespaces: list[str] = field(default_factory=list)
    namespace_error: str | None = None
    rootfs: bool = False
    proc: bool = False
    private_tmp: bool = False
    loopback: bool = False
    uid: int | None = None
    gid: int | None = None
    user_ns: bool = False
    rlimits: bool = False
    no_new_privs: bool = False
    landlock_abi: int | None = None
    seccomp: bool = False
    errors: dict[str, str] = field(default_factory=dict)
    applied: bool = False
    abort: str | None = None
    abort_strict: bool = False
    exec_failed: str | None = None
    exit: dict[str, Any] | None = None

    def feed(self, line: bytes) -> None:
        """Merge one line (a dict literal); garbage is ignored (the pipe is ours, but never crash on it)."""
        try:
            event = ast.literal_eval(line.decode("utf-8", "replace"))
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return
        if not isinstance(event, dict):
            return
        kind = event.pop("event", None)
        errors = event.pop("errors", None)
        if isinstance(errors, dict):
            self.errors.update({str(k): str(v) for k, v in errors.items()})
        if kind == "namespaces":
            self.namespaces = [str(n) for n in event.get("active") or []]
            self.namespace_error = event.get("error")
        elif kind == "setup":
            self.rootfs = bool(event.get("rootfs"))
            self.proc = bool(event.get("proc"))
            self.private_tmp = bool(event.get("private_tmp"))
            self.loopback = bool(event.get("loopback"))
        elif kind == "applied":
            self.applied = True
            for key in ("uid", "gid", "landlock_abi"):
                setattr(self, key, event.get(key))
            for key in ("user_ns", "rlimits", "no_new_privs", "seccomp"):
                setattr(self, key, bool(event.get(key)))
        elif kind == "abort":
            self.abort = str(event.get("message"))
            self.abort_strict = bool(event.get("strict"))
        elif kind == "exec_failed":
            self.exec_failed = str(event.get("message"))
        elif kind == "exit":
            self.exit = event

    def feed_all(self, data: bytes) -> None:
        for line in data.splitlines():
            if line.strip():
                self.feed(line)
