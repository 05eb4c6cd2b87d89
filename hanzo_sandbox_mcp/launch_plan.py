"""The launch plan: everything the launcher needs to confine and exec one command.

Standard library only: the launcher imports this module under `python -I -S` and must start fast. The plan
crosses a process boundary as JSON through an inherited file descriptor (never argv, which other processes
can read in /proc).
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["NAMESPACE_NAMES", "LandlockSpec", "LaunchPlan"]

#: The namespaces the launcher knows how to create, in `unshare` flag order.
NAMESPACE_NAMES = ("user", "pid", "mount", "net", "ipc", "uts")


@dataclass(frozen=True)
class LandlockSpec:
    """Filesystem and network allowlist handed to Landlock."""

    read_exec: tuple[str, ...] = ()
    read_write: tuple[str, ...] = ()
    deny_tcp: bool = False
    scope: bool = True


@dataclass(frozen=True)
class LaunchPlan:
    """One command, the layers to apply to it, and how strictly."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    namespaces: tuple[str, ...] = ()
    uid: int | None = None
    gid: int | None = None
    loopback: bool = False
    tmp_size_mb: int | None = None
    rlimits: dict[str, int] = field(default_factory=dict)
    no_new_privs: bool = False
    landlock: LandlockSpec | None = None
    seccomp_bpf: bytes | None = None
    strict: bool = False
    wrapper: tuple[str, ...] = ()
    """Argv prepended to `argv` before exec (macOS `sandbox-exec -p ...`)."""

    def to_json(self) -> bytes:
        data: dict[str, Any] = asdict(self)
        data["seccomp_bpf"] = None if self.seccomp_bpf is None else base64.b64encode(self.seccomp_bpf).decode()
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> LaunchPlan:
        data = json.loads(raw)
        landlock = data.pop("landlock")
        bpf = data.pop("seccomp_bpf")
        return cls(
            argv=tuple(data.pop("argv")),
            namespaces=tuple(data.pop("namespaces")),
            wrapper=tuple(data.pop("wrapper")),
            landlock=None
            if landlock is None
            else LandlockSpec(
                read_exec=tuple(landlock["read_exec"]),
                read_write=tuple(landlock["read_write"]),
                deny_tcp=landlock["deny_tcp"],
                scope=landlock["scope"],
            ),
            seccomp_bpf=None if bpf is None else base64.b64decode(bpf),
            **data,
        )
