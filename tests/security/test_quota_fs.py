"""The filesystem a root server gives each session: its workdir, /tmp and /dev/shm private to the command
and sharing one exact quota, its image out of reach, its mount nosuid,nodev, its scratch space emptied
without following links, and nothing left (mount, loop device, image) once it is released.

Root only: without root there are no loop devices, and the workdir is counted instead (test_workdir_attacks
and test_resource_exhaustion cover that mode).
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from _quota_support import quota_workdir, run_with_quota
from _security_support import IS_ROOT, expected_command_uid
from support.controls import run_as_command_uid

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="a filesystem per workdir needs loop devices, which need root")

MiB = 1024 * 1024


def _mount_options(path: Path) -> set[str] | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(path):
            return set(fields[5].split(","))
    return None


def _loop_devices_backed_by(image: Path) -> list[str]:
    found = []
    for device in Path("/sys/block").glob("loop*"):
        backing = device / "loop" / "backing_file"
        try:
            text = backing.read_text().strip()
        except OSError:
            continue
        if text.removesuffix(" (deleted)") == str(image):
            found.append(device.name)
    return found


def _owner_and_mode(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_the_session_filesystem_holds_work_tmp_and_shm_private_to_the_command_uid(work_root: Path) -> None:
    uid = expected_command_uid()
    with quota_workdir("filesystem", work_root, quota_mb=16) as quota:
        top = quota.mountpoint
        assert (quota.path, quota.tmp_dir, quota.shm_dir) == (top / "work", top / "tmp", top / "shm")
        assert sorted(os.listdir(top)) == ["lost+found", "shm", "tmp", "work"]
        assert _owner_and_mode(top) == (0, 0, 0o711)  # traversable, never listable or writable by others
        for private in (quota.path, quota.tmp_dir, quota.shm_dir):
            assert _owner_and_mode(private) == (uid, uid, 0o700), private  # never 1777
        assert os.lstat(top / "lost+found").st_uid == 0
        assert os.listdir(quota.path) == []  # lost+found stays out of the workdir
        options = _mount_options(top)
        assert options is not None and {"nosuid", "nodev"} <= options
        vfs = os.statvfs(quota.path)
        assert vfs.f_bavail * vfs.f_frsize == 16 * MiB  # the quota, exactly, for the three together
        assert vfs.f_favail >= quota.limits.inodes - 16


@pytest.mark.parametrize(("quota_mb", "inodes"), [(1, 64), (5, None), (16, 100_000), (3, 30_000), (2048, 1024)])
def test_the_quota_is_exact_with_few_or_many_inodes(work_root: Path, quota_mb: int, inodes: int | None) -> None:
    """Many inodes for a small quota make the inode tables, and ext4's 2% reserve of all blocks, outgrow
    the quota: the image must still hold exactly the quota, neither less nor more."""
    with quota_workdir("filesystem", work_root, quota_mb=quota_mb, inodes=inodes) as quota:
        vfs = os.statvfs(quota.path)
        assert vfs.f_bavail * vfs.f_frsize == quota_mb * MiB
        assert quota.limits.inodes - 16 <= vfs.f_favail <= quota.limits.inodes * 1.1


def test_each_workdir_can_have_its_own_owner(work_root: Path) -> None:
    with quota_workdir("filesystem", work_root, quota_mb=8, owner=(54321, 54322)) as quota:
        for private in (quota.path, quota.tmp_dir, quota.shm_dir):
            assert _owner_and_mode(private) == (54321, 54322, 0o700), private
        assert _owner_and_mode(quota.mountpoint)[:2] == (0, 0)


def _write_as_command_uid(directory: Path, name: str, mib: int) -> subprocess.CompletedProcess[str]:
    """`head -c` as the command uid: root may fill the blocks reserved beyond the quota, commands may not."""
    return run_as_command_uid(["/bin/sh", "-c", f'head -c {mib}M /dev/zero > "$0/{name}"', str(directory)])


def test_files_in_tmp_and_shm_count_against_the_session_quota(work_root: Path) -> None:
    with quota_workdir("filesystem", work_root, quota_mb=8) as quota:
        control = _write_as_command_uid(quota.path, "before", 1)
        assert control.returncode == 0, control  # positive control: the workdir takes a write
        assert quota.full_after_call() is None
        assert _write_as_command_uid(quota.shm_dir, "shm-fill", 3).returncode == 0
        filled = _write_as_command_uid(quota.tmp_dir, "tmp-fill", 20)
        assert filled.returncode != 0 and "No space left on device" in filled.stderr, filled
        assert (quota.tmp_dir / "tmp-fill").stat().st_size <= 5 * MiB  # 8 MiB less the other two files
        after = _write_as_command_uid(quota.path, "after", 1)
        assert after.returncode != 0 and "No space left on device" in after.stderr, after
        why = quota.full_after_call()
        assert why is not None and "/tmp and /dev/shm together) is full" in why, why


def test_clear_scratch_empties_tmp_and_shm_without_following_links(work_root: Path, outside_root: Path) -> None:
    precious = outside_root / "precious"
    precious.write_text("keep me")
    (outside_root / "dir").mkdir()
    (outside_root / "dir" / "inner").write_text("keep me too")
    with quota_workdir("filesystem", work_root, quota_mb=8) as quota:
        tmp, shm = quota.tmp_dir, quota.shm_dir
        (tmp / "a" / "b" / "c").mkdir(parents=True)
        (tmp / "a" / "b" / "c" / "deep").write_text("x")
        (tmp / "link-to-file").symlink_to(precious)
        (tmp / "link-to-dir").symlink_to(outside_root / "dir")
        (tmp / "a" / "nested-link").symlink_to(outside_root)
        (shm / "segment").write_bytes(b"\0" * 4096)
        (quota.path / "kept").write_text("the workdir is not scratch")
        tmp.chmod(0o1777)  # what the command may do to its own /tmp
        assert (tmp / "link-to-dir" / "inner").read_text() == "keep me too"  # control: the links lead out
        assert anyio.run(quota.clear_scratch)
        assert os.listdir(tmp) == [] and os.listdir(shm) == []
        assert _owner_and_mode(tmp)[2] == _owner_and_mode(shm)[2] == 0o700
        assert (quota.path / "kept").read_text() == "the workdir is not scratch"
    assert precious.read_text() == "keep me"
    assert (outside_root / "dir" / "inner").read_text() == "keep me too"
    assert anyio.run(quota.clear_scratch) is False  # released: says so, never raises


def test_the_image_is_root_only_and_out_of_the_commands_reach(sandbox: Any, work_root: Path) -> None:
    with quota_workdir("filesystem", work_root, quota_mb=8) as quota:
        image = quota.image
        assert stat.S_IMODE(os.stat(image).st_mode) == 0o600 and os.stat(image).st_uid == 0
        assert stat.S_IMODE(os.stat(image.parent).st_mode) == 0o700 and os.stat(image.parent).st_uid == 0
        assert quota.path not in image.parents
        result = run_with_quota(
            sandbox, f"cat {image} > /dev/null; echo rc=$?; ls {quota.path} && echo WORKDIR-OK", quota
        )
    assert "rc=0" not in result.stdout, result
    assert "No such file or directory" in result.stderr or "Permission denied" in result.stderr, result
    assert "WORKDIR-OK" in result.stdout, result  # positive control: the sibling workdir is reachable


def test_release_leaves_no_mount_no_loop_device_and_no_image(work_root: Path) -> None:
    with quota_workdir("filesystem", work_root, quota_mb=8) as quota:
        image, path = quota.image, quota.mountpoint
        assert _loop_devices_backed_by(image) != []  # control: the lookup finds the live one
        assert _mount_options(path) is not None
    assert _mount_options(path) is None
    assert not image.exists() and not path.exists()
    assert _loop_devices_backed_by(image) == []


def test_a_busy_mount_is_detached_and_freed_when_its_last_user_goes(work_root: Path) -> None:
    from hanzo_sandbox_mcp.linux import quotafs

    with quota_workdir("filesystem", work_root, quota_mb=8) as quota:
        image, path = quota.image, quota.mountpoint
        held = os.open(quota.tmp_dir / "held", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            assert quotafs.release(path, image)
            assert _mount_options(path) is None
        finally:
            os.close(held)
    anyio.run(_until_gone, image)


async def _until_gone(image: Path) -> None:
    with anyio.fail_after(20):
        while _loop_devices_backed_by(image):
            await anyio.sleep(0.05)


def test_a_session_the_disk_cannot_hold_is_refused(work_root: Path) -> None:
    from hanzo_sandbox_mcp.errors import SessionLimitReached
    from hanzo_sandbox_mcp.quota import QuotaLimits, WorkdirFactory
    from hanzo_sandbox_mcp.treewalk import remove_tree

    uid = expected_command_uid()
    vfs = os.statvfs(work_root)
    free = vfs.f_bavail * vfs.f_frsize
    root = work_root / "overcommit"
    root.mkdir(mode=0o711)
    try:
        # Room for one 64 MiB workdir beside the reserve, not for two.
        factory = WorkdirFactory(root, (uid, uid), QuotaLimits.of(64), disk_reserve_bytes=free - 100 * MiB)
        if anyio.run(factory.mode)[0] != "filesystem":
            pytest.skip(anyio.run(factory.mode)[1])
        first = anyio.run(factory.create)  # positive control: the first fits
        try:
            with pytest.raises(SessionLimitReached, match=r"host disk has .* MiB free.*close a session"):
                anyio.run(factory.create)
        finally:
            assert anyio.run(factory.release, first)
        second = anyio.run(factory.create)  # its promise released, there is room again
        assert anyio.run(factory.release, second)
    finally:
        assert remove_tree(root)


def test_a_workdir_filesystem_that_cannot_be_made_falls_back_to_a_polled_workdir(work_root: Path) -> None:
    """The images directory made immutable (chattr +i): the image cannot be created, the session still
    gets a workdir, counted instead, and says so."""
    import shutil
    import subprocess

    from hanzo_sandbox_mcp.quota import QuotaLimits, WorkdirFactory
    from hanzo_sandbox_mcp.treewalk import remove_tree

    if shutil.which("chattr") is None:
        pytest.skip("chattr (e2fsprogs) is missing")
    uid = expected_command_uid()
    root = work_root / "fallback"
    root.mkdir(mode=0o711)
    factory = WorkdirFactory(root, (uid, uid), QuotaLimits.of(8))
    try:
        if anyio.run(factory.mode)[0] != "filesystem":
            pytest.skip(anyio.run(factory.mode)[1])
        if subprocess.run(["chattr", "+i", str(factory.images)], check=False).returncode != 0:
            pytest.skip(f"the filesystem under {work_root} has no immutable flag")
        quota = anyio.run(factory.create)
        assert quota.mode == "polled" and quota.path.is_dir() and not os.path.ismount(quota.path)
        assert anyio.run(factory.release, quota)
        subprocess.run(["chattr", "-i", str(factory.images)], check=True)
        control = anyio.run(factory.create)  # positive control: with the directory writable again
        assert control.mode == "filesystem", control
        assert anyio.run(factory.release, control)
    finally:
        subprocess.run(["chattr", "-i", str(factory.images)], check=False)
        assert remove_tree(root)
