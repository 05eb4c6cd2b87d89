"""Optional cgroup v2 limits: one cgroup per call with memory.max, pids.max and cpu.max.

Used only when the server sits in a writable, delegated cgroup v2 subtree whose `cgroup.controllers` offers
memory, pids and cpu (systemd `Delegate=yes`, `systemd-run --user -p Delegate=yes`, a container with its
own cgroup namespace). The server's own process is moved into a `server` leaf first, because cgroup v2
forbids enabling controllers for children of a cgroup that still holds processes.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CallCgroup", "CgroupV2", "discover"]

REQUIRED_CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000


def _read(path: Path) -> str:
    return path.read_text().strip()


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _own_cgroup(proc_self_cgroup: str) -> str | None:
    for line in proc_self_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def _cgroup2_mount(mountinfo: str) -> str | None:
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            return left.split()[4]
    return None


@dataclass
class CallCgroup:
    """The cgroup of one call."""

    path: Path

    def join(self, pid: int) -> None:
        _write(self.path / "cgroup.procs", str(pid))

    def kill(self) -> None:
        """Kill every process in the cgroup at once (cgroup.kill, Linux 5.14+)."""
        try:
            _write(self.path / "cgroup.kill", "1")
        except OSError:
            for pid in _read(self.path / "cgroup.procs").split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass

    def memory_peak_bytes(self) -> int | None:
        try:
            return int(_read(self.path / "memory.peak"))
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        """Remove the cgroup, killing stragglers first; a bounded wait for the kernel to empty it."""
        if not self.path.exists():
            return
        deadline = time.monotonic() + 2.0
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    return
                self.kill()
                time.sleep(0.01)


@dataclass
class CgroupV2:
    """A delegated cgroup v2 directory in which per-call cgroups are created."""

    root: Path

    def create(self, memory_bytes: int, pids: int, cpu_cores: float = 1.0) -> CallCgroup:
        """A fresh cgroup with the policy's limits written before any process joins."""
        path = self.root / f"call-{secrets.token_hex(8)}"
        path.mkdir(mode=0o755)
        try:
            _write(path / "memory.max", str(memory_bytes))
            if (path / "memory.swap.max").exists():
                _write(path / "memory.swap.max", "0")
            _write(path / "pids.max", str(pids))
            _write(path / "cpu.max", f"{int(CPU_PERIOD_US * cpu_cores)} {CPU_PERIOD_US}")
        except OSError:
            path.rmdir()
            raise
        return CallCgroup(path)


def discover(
    fs_root: Path = Path("/"), proc_self_cgroup: str | None = None, mountinfo: str | None = None
) -> tuple[CgroupV2 | None, str]:
    """Find a usable delegated subtree. Returns (manager or None, reason). `fs_root` and the /proc texts
    are parameters so tests can point this at a directory laid out like cgroupfs."""
    try:
        if proc_self_cgroup is None:
            proc_self_cgroup = Path("/proc/self/cgroup").read_text()
        if mountinfo is None:
            mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError as exc:
        return None, f"cannot read /proc cgroup information: {exc}"
    mount = _cgroup2_mount(mountinfo)
    own = _own_cgroup(proc_self_cgroup)
    if mount is None or own is None:
        return None, "no cgroup v2 hierarchy is mounted (the machine uses cgroup v1)"
    base = fs_root / mount.lstrip("/") / own.lstrip("/")
    try:
        controllers = _read(base / "cgroup.controllers").split()
    except OSError as exc:
        return None, f"cannot read {base}/cgroup.controllers: {exc.strerror}"
    missing = [c for c in REQUIRED_CONTROLLERS if c not in controllers]
    if missing:
        return None, (
            f"the cgroup v2 subtree {own} lacks the {', '.join(missing)} controller(s) (bound to cgroup v1 "
            "or not delegated); run the server under systemd with Delegate=yes to enable cgroup limits"
        )
    if not os.access(base, os.W_OK) or not os.access(base / "cgroup.subtree_control", os.W_OK):
        return None, f"the cgroup {own} is not writable by this user (not delegated)"
    try:
        _enable_controllers(base)
    except OSError as exc:
        return None, f"cannot enable controllers in {own}: {exc}"
    return CgroupV2(base), f"delegated cgroup v2 subtree {own}"


def _enable_controllers(base: Path) -> None:
    enabled = _read(base / "cgroup.subtree_control").split()
    if all(c in enabled for c in REQUIRED_CONTROLLERS):
        return
    # "No internal processes": move our own processes to a leaf before enabling controllers for children.
    leaf = base / "server"
    leaf.mkdir(exist_ok=True)
    for pid in _read(base / "cgroup.procs").split():
        try:
            _write(leaf / "cgroup.procs", pid)
        except OSError:
            pass
    _write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in REQUIRED_CONTROLLERS))
