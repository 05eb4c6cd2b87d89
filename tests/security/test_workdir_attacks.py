"""Attacks on the server through the workdir it must measure and delete (issue 8, items 2-6).

The root server walked a tree the command controls, so the command controlled what the server did:
a deep tree crashed the service, data below PATH_MAX went uncounted, an inode flood cost no quota, a
directory swapped for a symbolic link led the walker to `/`, and a setuid file on the host-side workdir
elevated any host user. Each attack runs for real through the sandbox, in both quota modes where it
applies ("filesystem" skips where this machine cannot make one), next to a positive control.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from _quota_support import MODES, quota_workdir, run_with_quota
from _security_support import IS_ROOT, SANDBOX_PYTHON, expected_command_uid, json_lines, make_workdir, py

MiB = 1024 * 1024

#: A chain of `levels` directories named `name`, each made with openat relative to the one before (no
#: path is ever long), then `size` bytes written at the bottom. Prints how far it got.
DEEP = """
import json, os, sys
levels, name, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
made, written, err = 0, 0, 0
try:
    for _ in range(levels):
        os.mkdir(name, dir_fd=fd)
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
        made += 1
    out = os.open("data", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd)
    chunk = b"x" * 65536
    while written < size:
        written += os.write(out, chunk[: size - written])
    os.fsync(out)
except OSError as exc:
    err = exc.errno
print(json.dumps({"made": made, "written": written, "errno": err}), flush=True)
"""

#: Empty files until creation fails: prints how many were made and the errno of the failure.
FLOOD = """
import json, os, sys
count, err = 0, 0
try:
    for count in range(int(sys.argv[1])):
        os.close(os.open(f"f{count}", os.O_WRONLY | os.O_CREAT, 0o600))
    count += 1
except OSError as exc:
    err = exc.errno
print(json.dumps({"made": count, "errno": err}), flush=True)
"""


def _settings(root: Path, mode: str, **sessions: Any) -> Any:
    from hanzo_sandbox_mcp.config import ExecSettings, SessionSettings, Settings

    return Settings(
        exec=ExecSettings(python=SANDBOX_PYTHON),
        sessions=SessionSettings(root=root, quota_mode="polled" if mode == "polled" else "auto", **sessions),
    )


@pytest.fixture
def sessions_root(work_root: Path) -> Path:
    path = Path(tempfile.mkdtemp(prefix="sessions-", dir=work_root))
    path.chmod(0o711)
    return path


@asynccontextmanager
async def _service(root: Path, mode: str, **sessions: Any) -> AsyncIterator[Any]:
    from hanzo_sandbox_mcp.service import SandboxService

    async with SandboxService(_settings(root, mode, **sessions)) as service:
        got, why = await service.sessions.quota_mode()
        if got != mode:
            pytest.skip(f"no {mode} quota here: {why}")
        yield service


# --- a deep tree ends no service (item 2) --------------------------------------------------------------


def test_a_10000_level_tree_defeats_shutil_rmtree_positive_control(tmp_path: Path) -> None:
    """What the deep-tree attack did to the old removal: RecursionError, which is not an OSError."""
    from hanzo_sandbox_mcp.treewalk import remove_tree

    root = tmp_path / "w"
    root.mkdir()
    subprocess.run([SANDBOX_PYTHON, "-I", "-S", "-c", DEEP, "1500", "d", "0"], cwd=root, check=True, timeout=60)
    try:
        with pytest.raises(RecursionError):
            shutil.rmtree(root)
    finally:
        assert remove_tree(root)


@pytest.mark.anyio
@pytest.mark.parametrize("ending", ["close_session", "expiry"])
@pytest.mark.parametrize("mode", MODES)
async def test_a_10000_level_tree_ends_no_service(sessions_root: Path, mode: str, ending: str) -> None:
    ttl = 1.0 if ending == "expiry" else 3600.0
    async with _service(sessions_root, mode, idle_ttl_s=ttl) as service:
        with anyio.fail_after(240):
            deep = await service.run_command(py(DEEP, "10000", "d", "1000"), timeout_s=120)
            assert json_lines(deep.stdout) == [{"made": 10000, "written": 1000, "errno": 0}], deep
            workdir = (await service.sessions.get(deep.session_id)).workdir
            if ending == "close_session":
                await service.close_session(deep.session_id)
            while deep.session_id in service.sessions or workdir.exists():  # the expiry sweep's removal
                await anyio.sleep(0.1)
            after = await service.run_command("echo STILL-SERVING")
            assert after.stdout == "STILL-SERVING\n", after


@pytest.mark.anyio
async def test_an_exception_in_the_expiry_sweep_does_not_end_the_service(
    sessions_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hanzo_sandbox_mcp.service import SandboxService

    async with SandboxService(_settings(sessions_root, "polled", idle_ttl_s=0.2)) as service:
        manager = service.sessions
        real = manager.expire_idle
        calls = 0

        async def exploding() -> list[str]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RecursionError("maximum recursion depth exceeded (a tree the model built)")
            return await real()

        first = await service.run_command("true")
        monkeypatch.setattr(manager, "expire_idle", exploding)  # the sweep's next call raises
        with anyio.fail_after(30):
            while first.session_id in manager:  # the sweep went on after the exception, and expired it
                await anyio.sleep(0.05)
        assert calls >= 2
        assert (await service.run_command("echo ALIVE")).stdout == "ALIVE\n"


# --- data below PATH_MAX is counted (item 3) -----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_data_below_a_path_longer_than_path_max_counts_toward_the_quota(sandbox, work_root, mode) -> None:
    """20 levels of 255-byte names (5,120 bytes of path), then 8 MiB, under a 5 MiB quota."""
    cmd = py(DEEP, "20", "n" * 255, str(8 * MiB))
    with quota_workdir(mode, work_root, quota_mb=5) as quota:
        result = run_with_quota(sandbox, cmd + "; sleep 2; echo FINISHED", quota)
    assert result.quota_exceeded, result
    if mode == "filesystem":
        assert json_lines(result.stdout)[0]["errno"] == 28, result  # ENOSPC, and the command went on
        assert json_lines(result.stdout)[0]["written"] <= 5 * MiB, result
        assert "FINISHED" in result.stdout, result
    else:
        assert "FINISHED" not in result.stdout and result.signal == 9, result


@pytest.mark.parametrize("mode", MODES)
def test_long_path_write_under_a_larger_quota_works_positive_control(sandbox, work_root, mode) -> None:
    cmd = py(DEEP, "20", "n" * 255, str(8 * MiB))
    with quota_workdir(mode, work_root, quota_mb=20) as quota:
        result = run_with_quota(sandbox, cmd, quota)
    assert json_lines(result.stdout) == [{"made": 20, "written": 8 * MiB, "errno": 0}], result
    assert not result.quota_exceeded, result


# --- an inode flood is stopped by the inode limit (item 4) ---------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_an_inode_flood_is_stopped_by_the_inode_limit(sandbox, work_root, mode) -> None:
    """250,000 empty files cost almost no bytes; a 4 MiB quota allows 1,024 inodes."""
    from hanzo_sandbox_mcp.treewalk import tree_usage

    with quota_workdir(mode, work_root, quota_mb=4) as quota:
        assert quota.limits.inodes == 1024
        result = run_with_quota(sandbox, py(FLOOD, "250000") + "; echo FINISHED", quota, timeout_s=120)
        held = tree_usage(quota.path).inodes
    assert result.quota_exceeded, result
    if mode == "filesystem":
        assert json_lines(result.stdout)[0]["errno"] == 28, result
        assert held <= 1024, held
    else:
        assert "FINISHED" not in result.stdout and result.signal == 9, result
        assert held < 250_000, held
    assert result.error is not None and "1024" in result.error, result


@pytest.mark.parametrize("mode", MODES)
def test_many_files_under_the_inode_limit_positive_control(sandbox, work_root, mode) -> None:
    with quota_workdir(mode, work_root, quota_mb=4, inodes=10_000) as quota:
        result = run_with_quota(sandbox, py(FLOOD, "5000"), quota)
    assert json_lines(result.stdout) == [{"made": 5000, "errno": 0}], result
    assert not result.quota_exceeded, result


# --- a directory swapped for a link never leads the count out (item 5) ---------------------------------

#: The attacker's half of the handshake: wait for the walker to reach `sub`, swap it with the link
#: `lnk` (renameat2 RENAME_EXCHANGE), say so.
SWAPPER = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
with open("go", "rb") as fifo:
    fifo.read(1)
rc = libc.renameat2(-100, b"sub", -100, b"lnk", 2)
with open("done", "wb") as fifo:
    fifo.write(b"1" if rc == 0 else b"0")
"""


def _handshake(workdir: Path, deadline: float) -> bool:
    """Tell the sandboxed swapper to swap now and wait until it has: True when it swapped."""
    while True:
        try:
            go = os.open(workdir / "go", os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:  # ENXIO: the reader has not opened its end yet
            if time.monotonic() > deadline:
                raise TimeoutError("the swapper never opened its FIFO") from None
            time.sleep(0.01)
    os.write(go, b"1")
    os.close(go)
    done = os.open(workdir / "done", os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            ready, _, _ = select.select([done], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("the swapper never answered")
            data = os.read(done, 1)
            if data:
                return data == b"1"
    finally:
        os.close(done)


def _swap_during(sandbox: Any, workdir: Path, walk: Any) -> tuple[Any, Any]:
    """Run the swapper in the sandbox while `walk(hook)` walks the workdir in a thread; (walk's result,
    the command's result)."""
    from hanzo_sandbox_mcp.policy import SandboxPolicy
    from hanzo_sandbox_mcp.runner import run_sandboxed

    for fifo in ("go", "done"):
        os.mkfifo(workdir / fifo, 0o666)
        os.chmod(workdir / fifo, 0o666)
    swapped: list[bool] = []

    def hook(_parent: int, name: str) -> None:
        if name == "sub" and not swapped:
            swapped.append(_handshake(workdir, time.monotonic() + 60))

    async def go() -> tuple[Any, Any]:
        policy = SandboxPolicy().with_workdir(workdir)
        outcome: dict[str, Any] = {}

        async def command() -> None:
            outcome["result"] = await run_sandboxed(
                sandbox, policy, [SANDBOX_PYTHON, "-I", "-S", "-c", SWAPPER], timeout_s=60
            )

        with anyio.fail_after(120):
            async with anyio.create_task_group() as group:
                group.start_soon(command)
                walked = await anyio.to_thread.run_sync(walk, hook)
        return walked, outcome["result"]

    walked, result = anyio.run(go)
    assert swapped == [True], (swapped, result)
    return walked, result


@pytest.fixture
def swap_setup(work_root: Path, outside_root: Path) -> Path:
    """A workdir with `sub` (a directory holding a byte) and `lnk` (a link to 8 MiB of host data)."""
    big = Path(tempfile.mkdtemp(prefix="big-", dir=outside_root))
    big.chmod(0o755)
    (big / "data").write_bytes(os.urandom(8 * MiB))
    workdir = make_workdir(work_root)
    (workdir / "sub").mkdir()
    (workdir / "sub" / "byte").write_bytes(b"x")
    (workdir / "lnk").symlink_to(big)
    if IS_ROOT:
        uid = expected_command_uid()
        for path in (workdir / "sub", workdir / "sub" / "byte"):
            os.chown(path, uid, uid)
        os.lchown(workdir / "lnk", uid, uid)
    return workdir


def test_a_directory_swapped_for_a_link_never_leads_the_count_out(sandbox, swap_setup: Path) -> None:
    from hanzo_sandbox_mcp.treewalk import tree_usage

    usage, result = _swap_during(sandbox, swap_setup, lambda hook: tree_usage(swap_setup, before_open=hook))
    assert result.exit_code == 0, result
    assert (swap_setup / "sub").is_symlink()  # the attack happened: `sub` is now the link
    assert usage.bytes < MiB, f"the count left the workdir: {usage}"


def test_the_same_swap_leads_a_path_walk_out_positive_control(sandbox, swap_setup: Path) -> None:
    """The walk this replaced: lstat says directory, then scandir(path) follows what the name is now."""

    def path_walk(hook: Any) -> int:
        import stat as stat_module

        total = 0
        for entry in os.scandir(swap_setup):
            if stat_module.S_ISDIR(entry.stat(follow_symlinks=False).st_mode):
                hook(-1, entry.name)
                total += sum(e.stat(follow_symlinks=False).st_blocks * 512 for e in os.scandir(entry.path))
        return total

    total, result = _swap_during(sandbox, swap_setup, path_walk)
    assert result.exit_code == 0, result
    assert total >= 8 * MiB, total


# --- no setuid file on the host-side mount (item 6) ----------------------------------------------------

#: Run as another host uid: the effective uid the copied `id` ends up with.
_HOST_UID = 4242
NEEDS_ROOT = "running the file as another host uid, and a filesystem workdir, need a root server"


def _plant_setuid_copy(sandbox: Any, workdir: Path, quota: Any | None) -> Any:
    """The command copies `id` and makes it setuid (to its own uid), with the seccomp layer taken out of
    the plan so that the chmod itself is not what is tested."""
    from hanzo_sandbox_mcp.linux.sandbox import LinuxSandbox
    from hanzo_sandbox_mcp.policy import SandboxPolicy
    from hanzo_sandbox_mcp.runner import run_sandboxed

    class WithoutSeccomp(LinuxSandbox):
        def harden(self, *args: Any, **kwargs: Any) -> Any:
            return super().harden(*args, **kwargs).replace(seccomp_bpf=None)

    cmd = "cp /usr/bin/id ./id && chmod 4755 ./id && chmod 755 . && stat -c %a ./id"
    policy = SandboxPolicy().with_workdir(workdir)
    result = anyio.run(
        lambda: run_sandboxed(WithoutSeccomp(), policy, ["/bin/sh", "-c", cmd], timeout_s=30, quota=quota)
    )
    assert result.stdout.strip() == "4755", result  # the bit is set on the file either way
    return result


def _euid_as_host_user(program: Path) -> str:
    proc = subprocess.run(
        [str(program), "-u"],
        user=_HOST_UID,
        group=_HOST_UID,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return proc.stdout.strip()


@pytest.mark.skipif(not IS_ROOT, reason=NEEDS_ROOT)
def test_a_setuid_file_left_in_a_filesystem_workdir_does_not_elevate(sandbox, work_root) -> None:
    with quota_workdir("filesystem", work_root, quota_mb=8) as quota:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        options = next(line.split()[5] for line in mounts if line.split()[4] == str(quota.mountpoint))
        assert {"nosuid", "nodev"} <= set(options.split(",")), options
        _plant_setuid_copy(sandbox, quota.path, quota)
        assert _euid_as_host_user(quota.path / "id") == str(_HOST_UID)


@pytest.mark.skipif(not IS_ROOT, reason=NEEDS_ROOT)
def test_the_same_setuid_file_in_a_plain_directory_elevates_positive_control(sandbox, work_root) -> None:
    workdir = make_workdir(work_root)
    try:
        _plant_setuid_copy(sandbox, workdir, None)
        assert _euid_as_host_user(workdir / "id") == str(expected_command_uid())
    finally:
        (workdir / "id").unlink(missing_ok=True)


def test_mountinfo_parsing_helper_sees_the_root_mount() -> None:
    """Self-check of the mountinfo lookup above (a lookup that finds nothing would pass vacuously)."""
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    assert any(line.split()[4] == "/" for line in mounts), json.dumps(mounts[:3])
