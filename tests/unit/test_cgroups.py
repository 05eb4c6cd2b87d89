"""cgroup v2 discovery and per-call cgroups, against a temporary directory laid out like cgroupfs.

`discover` takes the filesystem root and the texts of /proc/self/cgroup and /proc/self/mountinfo as
parameters, so each reason it can give is reached here without a delegated cgroup. One test runs on the
real kernel and skips with the reason `discover()` gives where no usable cgroup v2 subtree exists.
"""

from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hanzo_sandbox_mcp.linux import cgroups
from hanzo_sandbox_mcp.linux.cgroups import REQUIRED_CONTROLLERS, CallCgroup, CgroupV2, discover

IS_ROOT = os.geteuid() == 0
OWN = "/user.slice/hanzo.service"
PROC_SELF_CGROUP = f"0::{OWN}\n"
MOUNTINFO_V2 = (
    "22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw\n"
    "31 23 0:28 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
)
MOUNTINFO_V1_ONLY = (
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
)


def _layout(root: Path, *, controllers: str = "cpuset cpu io memory hugetlb pids rdma misc", enabled: str = "") -> Path:
    """fs_root/sys/fs/cgroup<OWN> with the interface files a delegated cgroup has."""
    base = root / "sys/fs/cgroup" / OWN.lstrip("/")
    base.mkdir(parents=True)
    (base / "cgroup.controllers").write_text(controllers + "\n")
    (base / "cgroup.subtree_control").write_text(enabled + "\n")
    (base / "cgroup.procs").write_text("101\n202\n")
    return base


# --- discover: each reason -----------------------------------------------------------------------------


def test_no_cgroup2_mount(tmp_path: Path) -> None:
    _layout(tmp_path)
    manager, reason = discover(tmp_path, PROC_SELF_CGROUP, MOUNTINFO_V1_ONLY)
    assert manager is None
    assert reason == "no cgroup v2 hierarchy is mounted (the machine uses cgroup v1)"


def test_no_unified_line_in_proc_self_cgroup(tmp_path: Path) -> None:
    _layout(tmp_path)
    manager, reason = discover(tmp_path, "4:memory:/x\n1:name=systemd:/\n", MOUNTINFO_V2)
    assert manager is None
    assert "no cgroup v2 hierarchy" in reason


def test_missing_controllers_are_named(tmp_path: Path) -> None:
    """This machine's layout: cgroup2 is mounted but memory, pids and cpu are bound to cgroup v1."""
    _layout(tmp_path, controllers="hugetlb")
    manager, reason = discover(tmp_path, PROC_SELF_CGROUP, MOUNTINFO_V2)
    assert manager is None
    assert f"the cgroup v2 subtree {OWN} lacks the memory, pids, cpu controller(s)" in reason
    assert "Delegate=yes" in reason


def test_one_missing_controller_is_named_alone(tmp_path: Path) -> None:
    _layout(tmp_path, controllers="cpu memory io")
    manager, reason = discover(tmp_path, PROC_SELF_CGROUP, MOUNTINFO_V2)
    assert manager is None
    assert "lacks the pids controller(s)" in reason


def test_unreadable_controllers_file(tmp_path: Path) -> None:
    base = _layout(tmp_path)
    (base / "cgroup.controllers").unlink()
    manager, reason = discover(tmp_path, PROC_SELF_CGROUP, MOUNTINFO_V2)
    assert manager is None
    assert reason.startswith(f"cannot read {base}/cgroup.controllers")


def _discover_as_nobody(root: Path) -> tuple[bool, str]:
    """Run discover in a forked child that dropped to uid 65534 (root passes every access check)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            manager, reason = discover(root, PROC_SELF_CGROUP, MOUNTINFO_V2)
            os.write(write_fd, repr((manager is not None, reason)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    found, reason = ast.literal_eval(data.decode())
    return bool(found), str(reason)


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A fake fs root every uid can reach (pytest's tmp_path lives under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="hanzo-cgfs-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    for sub in path.rglob("*"):
        if sub.is_dir():
            sub.chmod(0o755)
    shutil.rmtree(path)


def test_a_cgroup_not_writable_by_this_user(open_root: Path) -> None:
    base = _layout(open_root)
    base.chmod(0o555)
    (base / "cgroup.subtree_control").chmod(0o444)
    if IS_ROOT:
        found, reason = _discover_as_nobody(open_root)
    else:
        manager, reason = discover(open_root, PROC_SELF_CGROUP, MOUNTINFO_V2)
        found = manager is not None
    assert not found
    assert reason == f"the cgroup {OWN} is not writable by this user (not delegated)"
    assert not (base / "server").exists()


def test_a_cgroup_with_a_read_only_subtree_control_is_not_writable(open_root: Path) -> None:
    base = _layout(open_root)
    (base / "cgroup.subtree_control").chmod(0o444)
    if IS_ROOT:
        os.chown(base, 65534, 65534)
        found, reason = _discover_as_nobody(open_root)
    else:
        manager, reason = discover(open_root, PROC_SELF_CGROUP, MOUNTINFO_V2)
        found = manager is not None
    assert not found
    assert reason == f"the cgroup {OWN} is not writable by this user (not delegated)"


def test_a_usable_subtree_enables_the_controllers_after_moving_its_processes_to_a_leaf(tmp_path: Path) -> None:
    base = _layout(tmp_path)
    manager, reason = discover(tmp_path, PROC_SELF_CGROUP, MOUNTINFO_V2)
    assert manager == CgroupV2(base)
    assert reason == f"delegated cgroup v2 subtree {OWN}"
    assert (base / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    # Each pid is written to the leaf's cgroup.procs, one write per pid (a plain file keeps the last one).
    assert (base / "server").is_dir()
    assert (base / "server" / "cgroup.procs").read_text() == "202"


def test_controllers_already_enabled_are_left_alone(tmp_path: Path) -> None:
    base = _layout(tmp_path, enabled="cpu memory pids io")
    manager, _ = discover(tmp_path, PROC_SELF_CGROUP, MOUNTINFO_V2)
    assert manager == CgroupV2(base)
    assert (base / "cgroup.subtree_control").read_text() == "cpu memory pids io\n"
    assert not (base / "server").exists()


def test_the_mount_point_comes_from_mountinfo(tmp_path: Path) -> None:
    base = tmp_path / "custom/mnt" / OWN.lstrip("/")
    base.mkdir(parents=True)
    (base / "cgroup.controllers").write_text("memory pids cpu")
    (base / "cgroup.subtree_control").write_text("memory pids cpu")
    mountinfo = "40 1 0:50 / /custom/mnt rw,relatime - cgroup2 none rw\n"
    manager, _ = discover(tmp_path, PROC_SELF_CGROUP, mountinfo)
    assert manager == CgroupV2(base)


# --- a per-call cgroup ---------------------------------------------------------------------------------


def test_create_writes_the_limits_before_anyone_joins(tmp_path: Path) -> None:
    call = CgroupV2(tmp_path).create(512 * 1024 * 1024, 64)
    assert call.path.parent == tmp_path
    assert call.path.name.startswith("call-")
    assert (call.path / "memory.max").read_text() == str(512 * 1024 * 1024)
    assert (call.path / "pids.max").read_text() == "64"
    assert (call.path / "cpu.max").read_text() == "100000 100000"
    assert not (call.path / "cgroup.procs").exists()
    assert not (call.path / "memory.swap.max").exists()  # written only where the kernel offers it


def test_create_scales_the_cpu_quota(tmp_path: Path) -> None:
    call = CgroupV2(tmp_path).create(1 << 20, 8, cpu_cores=0.5)
    assert (call.path / "cpu.max").read_text() == "50000 100000"


def test_each_call_gets_its_own_cgroup(tmp_path: Path) -> None:
    manager = CgroupV2(tmp_path)
    assert manager.create(1 << 20, 8).path != manager.create(1 << 20, 8).path


def test_create_removes_the_cgroup_when_a_limit_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed: no half-configured cgroup is left behind for a process to join."""

    def refuse(path: Path, value: str) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cgroups, "_write", refuse)
    with pytest.raises(PermissionError):
        CgroupV2(tmp_path).create(1 << 20, 8)
    assert list(tmp_path.iterdir()) == []


def test_join_writes_the_pid(tmp_path: Path) -> None:
    call = CallCgroup(tmp_path)
    call.join(4242)
    assert (tmp_path / "cgroup.procs").read_text() == "4242"


def test_kill_writes_cgroup_kill(tmp_path: Path) -> None:
    CallCgroup(tmp_path).kill()
    assert (tmp_path / "cgroup.kill").read_text() == "1"


def test_kill_falls_back_to_signalling_every_member(tmp_path: Path) -> None:
    """Before Linux 5.14 there is no cgroup.kill: every pid in cgroup.procs gets SIGKILL."""
    (tmp_path / "cgroup.kill").mkdir()  # opening it for writing fails like a missing interface file
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        (tmp_path / "cgroup.procs").write_text(f"{child.pid}\n")
        CallCgroup(tmp_path).kill()
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait(timeout=30)


def test_memory_peak(tmp_path: Path) -> None:
    call = CallCgroup(tmp_path)
    assert call.memory_peak_bytes() is None
    (tmp_path / "memory.peak").write_text("123456789\n")
    assert call.memory_peak_bytes() == 123456789
    (tmp_path / "memory.peak").write_text("max\n")
    assert call.memory_peak_bytes() is None


def test_release_removes_the_cgroup_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "call-x"
    path.mkdir()
    call = CallCgroup(path)
    call.release()
    assert not path.exists()
    call.release()  # a second release is a no-op


# --- the real kernel -----------------------------------------------------------------------------------


def test_real_cgroup_v2_limits() -> None:
    manager, reason = discover()
    if manager is None:
        pytest.skip(f"no usable cgroup v2 subtree here: {reason}")
    assert all(c in (manager.root / "cgroup.subtree_control").read_text().split() for c in REQUIRED_CONTROLLERS)
    call = manager.create(64 * 1024 * 1024, 16)
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        call.join(child.pid)
        assert str(child.pid) in (call.path / "cgroup.procs").read_text().split()
        assert (call.path / "memory.max").read_text().strip() == str(64 * 1024 * 1024)
        assert (call.path / "pids.max").read_text().strip() == "16"
        call.kill()
        assert child.wait(timeout=30) == -signal.SIGKILL
        peak = call.memory_peak_bytes()
        assert peak is None or peak > 0
    finally:
        child.kill()
        child.wait(timeout=30)
        call.release()
    assert not call.path.exists(), reason
