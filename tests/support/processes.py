"""Finding the processes a test started, by a marker in their command line, with bounded waits."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid

__all__ = ["kill_marker", "marker_pids", "unique_sleep", "wait_marker_gone"]


def unique_sleep(base: int = 300) -> str:
    """A `sleep` duration that doubles as a unique marker in /proc/<pid>/cmdline (e.g. `300.4711093`)."""
    return f"{base}.{uuid.uuid4().int % 10**7:07d}"


def marker_pids(marker: str) -> list[int]:
    """Host pids whose command line contains `marker` (excluding this test process; zombies have an empty
    command line, so a match is a live leftover)."""
    found = []
    me = os.getpid()
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if needle in handle.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def wait_marker_gone(marker: str, timeout: float = 10.0) -> list[int]:
    """Poll (bounded) until no process carries `marker`; return the survivors (empty = none left)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = marker_pids(marker)
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


def kill_marker(*markers: str) -> None:
    """Cleanup: SIGKILL whatever still carries one of `markers` (only processes this test started)."""
    for marker in markers:
        for pid in marker_pids(marker):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
