"""The command process reads its own state right before exec (stdlib only: runs inside the launcher).

The report is built from these readings, never from the plan: a layer that was skipped or broken shows
up as missing even when the code that should have applied it believes it succeeded. Inside a user
namespace `getuid()` answers in that namespace's ids (an unmapped host root reads as the overflow uid
65534), so ids are mapped back through `/proc/self/uid_map` and `gid_map` to the ids of the namespace the
launcher was started in (the server's); an id the map does not cover is None, never a guess.

The readings are judged here too (`judge`), by the same rules in both places that need them: the
launcher, which under `strict` refuses to exec when a layer the plan asked for does not read back as in
force, and the server's `LaunchReport`, which reports it missing with the reading.

Also imported on macOS (`_run_unconfined`): everything here degrades to None where Linux interfaces are
missing.
"""

from __future__ import annotations

import os
import resource

from .rlimits import RLIMIT_NAMES

__all__ = ["CAPABILITY_SETS", "StatusReader", "ids", "judge", "one_id", "read_rlimits"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from ..launch_plan import LaunchPlan

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


def one_id(values: list[int | None]) -> int | None:
    """The id when real, effective and saved agree (the saved one may be unknown); None otherwise."""
    known = {value for value in values if value is not None}
    return known.pop() if len(known) == 1 and values[0] is not None and values[1] is not None else None


def _rlimits_wrong(read_back: dict[str, list[int]], wanted: dict[str, int]) -> list[str]:
    """In force: soft == hard, finite, no looser than planned (the launcher may clamp to a lower inherited
    hard limit, which is stricter)."""
    return [
        f"{name} reads {read_back.get(name)}, planned {value}"
        for name, value in wanted.items()
        if (limits := read_back.get(name)) is None or limits[0] != limits[1] or not 0 <= limits[0] <= value
    ]


def judge(plan: LaunchPlan | None, readings: dict[str, Any]) -> tuple[dict[str, bool], dict[str, str]]:
    """(whether each layer is in force, and why not for each one `plan` asked for that the readings do
    not show). Without a plan no rlimit can be judged (False) and nothing was asked for."""
    filters = readings["seccomp_filters"]
    wrong = _rlimits_wrong(readings["rlimits"], plan.rlimits) if plan is not None and plan.rlimits else None
    in_force = {
        "no_new_privs": readings["no_new_privs"] == 1,
        # Mode 2 alone could be a container's filter around the server: ours must have added one.
        "seccomp": readings["seccomp_mode"] == 2 and (filters is None or filters >= 1),
        "rlimits": wrong == [],
    }
    if plan is None:
        return in_force, {}
    uid, gid = one_id(readings["uids"]), one_id(readings["gids"])
    planned_gid = plan.gid if plan.gid is not None else plan.uid
    checks = (
        (
            "no_new_privs",
            plan.no_new_privs or plan.landlock is not None or plan.seccomp_bpf is not None,
            f"NoNewPrivs reads {readings['no_new_privs']}",
        ),
        ("seccomp", plan.seccomp_bpf is not None, f"Seccomp reads {readings['seccomp_mode']}, filters added {filters}"),
        ("rlimits", bool(plan.rlimits), "; ".join(wrong or ())),
    )
    reasons = {
        layer: f"requested, but the read-back shows it is not in force ({reading})"
        for layer, wanted, reading in checks
        if wanted and not in_force[layer]
    }
    if plan.uid is not None and (uid, gid) != (plan.uid, planned_gid):
        reasons["uid_drop"] = (
            f"requested, but the read-back shows it is not in force (the command runs as host uid {uid} gid "
            f"{gid}, the plan asked for {plan.uid}/{planned_gid})"
        )
    return in_force, reasons
