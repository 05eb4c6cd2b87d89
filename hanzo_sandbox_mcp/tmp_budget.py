"""The server-wide budget for sessions' tmpfs /tmp and /dev/shm, which pin RAM for as long as a session lives.

Without a quota filesystem (polled mode, linux/quotafs.py) a session's sandbox mounts a size-capped tmpfs as
its /tmp and another as its /dev/shm, and both persist across the session's calls. What a command writes
there is RAM (or swap) held for hours, outside the disk quota and invisible in any process's PSS. So every
session reserves the caps of both mounts when it is made (`session_tmpfs_mb`), and a new session is refused
when:

- the reservations of all open sessions plus the new one would exceed `sessions.tmp_budget_mb`: the
  promise the server can keep whatever the sessions write;
- or the new reservation, plus what open sessions may still write, exceeds what `MemAvailable` leaves
  above a floor of `MEMORY_FLOOR_FRACTION` of `MemTotal`. Written tmpfs pages are counted in `Shmem` and
  are not reclaimable without swap, so `MemAvailable` already excludes what live sessions wrote; what they
  may still write is their reservations minus that. The server cannot tell its sessions' share of `Shmem`
  from the host's, so it takes all of `Shmem` as theirs: `reserved - Shmem` is the least they may still
  write, which keeps the check from counting written pages twice (it would refuse sessions on a host that
  has the memory), at the price of trusting host `Shmem` as if it were the sessions'. The budget bounds the
  rest.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import SessionLimitReached

__all__ = ["MEMORY_FLOOR_FRACTION", "TMPFS_MOUNTS", "TmpBudget", "TmpReservation", "session_tmpfs_mb"]

_log = logging.getLogger("hanzo_sandbox_mcp.tmp_budget")

#: A session's tmpfs mounts, each capped at `policy.tmp_size_mb`: /tmp and /dev/shm.
TMPFS_MOUNTS = 2
#: Share of `MemTotal` no new reservation may dip into. Tmpfs pages stay for the session's life, while the
#: commands' own memory (up to `policy.max_memory_mb` each, several calls at once), the server and the page
#: cache every exec reads through come and go: once `MemAvailable` nears zero the next step is the OOM
#: killer, which may pick the server. A quarter keeps room for a few calls' worth of memory on small hosts
#: (1 GiB of a 4 GiB VM) without idling most of a large one; the kernel's own watermarks (about 1%) are far
#: too low to hold a working set.
MEMORY_FLOOR_FRACTION = 0.25
_KIB_PER_MIB = 1024
_MEMINFO_FIELDS = ("MemTotal", "MemAvailable", "Shmem")


def session_tmpfs_mb(tmp_size_mb: int) -> int:
    """What one session reserves: each of its tmpfs mounts at its cap."""
    return TMPFS_MOUNTS * tmp_size_mb


class TmpReservation:
    """One session's share of the budget, held until `release()` (idempotent)."""

    def __init__(self, budget: TmpBudget, size_mb: int) -> None:
        self.size_mb = size_mb
        self._budget: TmpBudget | None = budget

    def release(self) -> None:
        budget, self._budget = self._budget, None
        if budget is not None:
            budget._give_back(self.size_mb)


class TmpBudget:
    """Reservations against `budget_mb` and the host's available memory (see the module docstring).

    Not thread-safe: reserve and release on the event loop. `reserve` reads `meminfo` (procfs, no disk I/O,
    microseconds). Where that file cannot be read (not Linux, which has no tmpfs for the sandbox either),
    only the budget applies.
    """

    def __init__(self, budget_mb: int, *, meminfo: Path = Path("/proc/meminfo")) -> None:
        if budget_mb < 0:
            raise ValueError("budget_mb must not be negative")
        self.budget_mb = budget_mb
        self.meminfo = meminfo
        self.reserved_mb = 0
        self.reservations = 0

    def reserve(self, size_mb: int) -> TmpReservation:
        """Hold `size_mb` for a new session, or raise SessionLimitReached saying why and what to do."""
        if size_mb < 0:
            raise ValueError("size_mb must not be negative")
        if size_mb > self.budget_mb:
            raise SessionLimitReached(
                f"a session's /tmp and /dev/shm need {size_mb} MiB of memory, more than the server's whole budget "
                f"for them ({self.budget_mb} MiB): the operator must raise sessions.tmp_budget_mb or lower "
                "policy.tmp_size_mb; no session can be opened until then"
            )
        if self.reserved_mb + size_mb > self.budget_mb:
            raise SessionLimitReached(
                f"the {self.reservations} open sessions hold {self.reserved_mb} MiB of the server's "
                f"{self.budget_mb} MiB budget for /tmp and /dev/shm, and a new one needs {size_mb} MiB: close a "
                "session you no longer need (close_session), or reuse one by passing its session_id"
            )
        memory = self._memory_mb()
        if memory is not None:
            spare, shmem = memory
            unwritten = max(0, self.reserved_mb - shmem)
            if size_mb + unwritten > spare:
                raise SessionLimitReached(
                    f"the host is short of memory: a new session's /tmp and /dev/shm need {size_mb} MiB, the open "
                    f"sessions may still write {unwritten} MiB into theirs, and only {max(0, spare)} MiB are "
                    f"available above the {MEMORY_FLOOR_FRACTION:.0%} of RAM kept free: close a session you no "
                    "longer need (close_session), or reuse one by passing its session_id"
                )
        self.reserved_mb += size_mb
        self.reservations += 1
        return TmpReservation(self, size_mb)

    def _give_back(self, size_mb: int) -> None:
        self.reserved_mb -= size_mb
        self.reservations -= 1

    def _memory_mb(self) -> tuple[int, int] | None:
        """(MemAvailable minus the floor, Shmem) in MiB; None when meminfo cannot be read or lacks a field."""
        fields: dict[str, int] = {}
        try:
            with open(self.meminfo, encoding="ascii", errors="replace") as handle:
                for line in handle:
                    name, _, rest = line.partition(":")
                    if name in _MEMINFO_FIELDS:
                        fields[name] = int(rest.split()[0])
        except (OSError, ValueError, IndexError) as exc:
            _log.debug("cannot read %s (%s): only the tmp budget applies", self.meminfo, exc)
            return None
        if len(fields) != len(_MEMINFO_FIELDS):
            _log.debug("%s lacks one of %s: only the tmp budget applies", self.meminfo, ", ".join(_MEMINFO_FIELDS))
            return None
        floor_kib = int(fields["MemTotal"] * MEMORY_FLOOR_FRACTION)
        return (fields["MemAvailable"] - floor_kib) // _KIB_PER_MIB, fields["Shmem"] // _KIB_PER_MIB
