"""The unsandboxed and bubblewrap baselines: plain process spawns, timed in a worker thread so that the event
loop (and the service's background tasks running on it) is never blocked while a baseline runs."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

import anyio.to_thread

__all__ = ["SpawnBaseline", "baselines", "timed_spawn"]

#: A spawn that takes longer than this is broken, not slow.
SPAWN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class SpawnBaseline:
    """A command to spawn as a baseline, or why it cannot run here (`argv` empty then)."""

    name: str
    label: str
    argv: tuple[str, ...]
    missing: str | None = None


def _probe(name: str, label: str, tool: str, args: Sequence[str], install: str) -> SpawnBaseline:
    path = shutil.which(tool)
    if path is None:
        return SpawnBaseline(name, label, (), f"{tool} is not installed ({install})")
    argv = (path, *args)
    try:
        done = subprocess.run(argv, capture_output=True, timeout=SPAWN_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return SpawnBaseline(name, label, (), f"{tool} cannot run here: {exc}")
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        return SpawnBaseline(name, label, (), f"{tool} fails here (exit {done.returncode}: {why[-1] if why else ''})")
    return SpawnBaseline(name, label, argv)


def baselines() -> dict[str, SpawnBaseline]:
    """bwrap, unshare and a bare spawn, each probed once (a tool that fails here is reported, not timed)."""
    bare = shutil.which("true") or "/bin/true"
    return {
        "bwrap": _probe(
            "bwrap",
            "bwrap --unshare-all --ro-bind / / --dev /dev --proc /proc true",
            "bwrap",
            ("--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "true"),
            "apt-get install bubblewrap",
        ),
        "unshare": _probe(
            "unshare",
            "unshare --user --map-root-user --net --pid --fork true",
            "unshare",
            ("--user", "--map-root-user", "--net", "--pid", "--fork", "true"),
            "apt-get install util-linux",
        ),
        "bare": SpawnBaseline("bare", 'subprocess.run(["/bin/true"])', (bare,)),
    }


def _run_timed(argv: Sequence[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=SPAWN_TIMEOUT_S, check=False)
    elapsed = (time.perf_counter() - start) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {done.returncode}: {done.stderr.decode(errors='replace')[-300:]}")
    return elapsed


async def timed_spawn(argv: Sequence[str]) -> float:
    """Milliseconds `subprocess.run(argv)` takes, measured inside the worker thread that runs it."""
    return await anyio.to_thread.run_sync(_run_timed, argv)
