"""The command process reads its own state right before exec (stdlib only: runs inside the launcher).

The report is built from these readings, never from the plan: a layer that was skipped or broken shows
up as missing even when the code that should have applied it believes it succeeded. Inside a user
namespace `getuid()` answers in that namespace's ids (an unmapped host root reads as the overflow uid
65534), so ids are mapped back through `/proc/self/uid_map` and `gid_map` to the ids of the namespace the
launcher was started in (the server's); an id the map does not cover is None, never a guess.

Also imported on macOS (`_run_unconfined`): everything here degrades to None where Linux interfaces are
missing.
"""

from __future__ import annotations

import os
import resource

from .rlimits import RLIMIT_NAMES

__all__ = ["CAPABILITY_SETS", "StatusReader", "ids", "read_rlimits"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

#: /proc/self/status capability lines -> the keys the report uses.
CAPABILITY_SETS = {"CapInh": "inh", "CapPrm": "prm", "CapEff": "eff", "CapBnd": "bnd", "CapAmb": "amb"}
_DECIMAL = ("NoNewPrivs", "Seccomp", "Seccomp_filters")


class StatusReader:
    """/proc/self/status through an fd opened before Landlock (which may not grant /proc): every pread at
    offset 0 makes the kernel generate the file anew, so each `read()` is the state at that moment."""

    def __init__(self) -> None:
        try:
            self.fd = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.fd = -1  # no /proc (macOS, or a Linux without it): every field reads as None

    def read(self) -> dict[str, int]:
        if self.fd < 0:
            return {}
        fields: dict[str, int] = {}
        for line in os.pread(self.fd, 1 << 16, 0).decode("ascii", "replace").splitlines():
            key, _, value = line.partition(":")
            try:
                if key in _DECIMAL:
                    fields[key] = int(value)
                elif key in CAPABILITY_SETS:
                    fields[key] = int(value, 16)
            except ValueError:
                pass  # an unreadable value stays missing (None in the report), never a default
        return fields

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _ranges(path: str) -> list[tuple[int, int, int]]:
    out = []
    try:
        # Bytes through os.open, not open(): a text file may look up a codec, which would be an import
        # after the pivot, where the server's Python may be out of reach.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 1 << 16)
        finally:
            os.close(fd)
        for line in data.splitlines():
            inside, outside, count = (int(field) for field in line.split())
            out.append((inside, outside, count))
    except (OSError, ValueError):
        pass  # no map readable: every id is unmapped (None)
    return out


def _mapped(value: int, ranges: list[tuple[int, int, int]]) -> int | None:
    for inside, outside, count in ranges:
        if inside <= value < inside + count:
            return outside + value - inside
    return None


def ids(mapped: bool) -> dict[str, list[int | None]]:
    """Real, effective and saved uid and gid and the supplementary groups; `mapped`: translate them through
    this process's uid_map/gid_map (when it runs in a user namespace the launcher created)."""
    if hasattr(os, "getresuid"):
        uids: Iterable[int | None] = os.getresuid()
        gids: Iterable[int | None] = os.getresgid()
    else:  # macOS has no getresuid: the saved ids are not known
        uids, gids = (os.getuid(), os.geteuid(), None), (os.getgid(), os.getegid(), None)
    groups: Iterable[int | None] = os.getgroups()
    if mapped:
        uid_ranges, gid_ranges = _ranges("/proc/self/uid_map"), _ranges("/proc/self/gid_map")
        uids = [None if u is None else _mapped(u, uid_ranges) for u in uids]
        gids = [None if g is None else _mapped(g, gid_ranges) for g in gids]
        groups = [_mapped(g, gid_ranges) for g in groups]  # type: ignore[arg-type]
    return {"uids": list(uids), "gids": list(gids), "groups": list(groups)}


def read_rlimits(names: Iterable[str]) -> dict[str, list[int]]:
    """(soft, hard) of each named limit as the kernel holds it now (-1 is unlimited)."""
    return {name: list(resource.getrlimit(RLIMIT_NAMES[name])) for name in names if name in RLIMIT_NAMES}
