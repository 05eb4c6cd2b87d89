"""The reaper: a sessions root is removed when, and only when, its server is provably dead."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hanzo_sandbox_mcp.reaper import LOCK_NAME, ROOT_PREFIX, ClaimedRoot, claim_root, mounts_below, reap_dead_roots

IS_ROOT = os.geteuid() == 0


def _wait(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll something the test cannot be notified of (another process's work), bounded."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture
def parent(tmp_path: Path) -> Path:
    path = tmp_path / "parent"
    path.mkdir()
    return path


@pytest.fixture
def claims() -> Iterator[list[ClaimedRoot]]:
    made: list[ClaimedRoot] = []
    yield made
    for claim in made:
        claim.release()


def _dead_root(parent: Path, name: str = "dead") -> Path:
    """What a SIGKILLed server leaves: a root with files and an unlocked lock file."""
    root = parent / f"{ROOT_PREFIX}{name}"
    (root / "w-1" / "deep").mkdir(parents=True)
    (root / "w-1" / "deep" / "data").write_text("left behind")
    (root / LOCK_NAME).write_text("")
    return root


def test_claimed_root_is_private_and_locked(parent: Path, claims: list[ClaimedRoot]) -> None:
    claim = claim_root(str(parent), watchdog=False)
    claims.append(claim)
    root = Path(claim.path)
    assert root.name.startswith(ROOT_PREFIX)
    assert stat.S_IMODE(root.stat().st_mode) == 0o711
    # Another open file description cannot take the lock while the server holds it.
    fd = os.open(root / LOCK_NAME, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
    assert [p.name for p in root.iterdir()] == [LOCK_NAME], "the temporary lock name was left behind"


def test_dead_roots_are_removed_and_live_ones_kept(parent: Path, claims: list[ClaimedRoot]) -> None:
    live = claim_root(str(parent), watchdog=False)
    claims.append(live)
    dead = _dead_root(parent)
    assert reap_dead_roots(str(parent)) == [str(dead)]
    assert not dead.exists()
    assert Path(live.path).is_dir() and (Path(live.path) / LOCK_NAME).exists()


def test_a_released_root_counts_as_dead(parent: Path) -> None:
    # Positive control for the test above: the same root, once its lock is given up, is reaped.
    claim = claim_root(str(parent), watchdog=False)
    (Path(claim.path) / "file").write_text("x")
    assert reap_dead_roots(str(parent)) == []
    claim.release()
    assert reap_dead_roots(str(parent)) == [claim.path]
    assert not Path(claim.path).exists()


def test_roots_without_lock_or_with_other_names_are_left_alone(parent: Path) -> None:
    unlocked = parent / f"{ROOT_PREFIX}being-born"
    unlocked.mkdir()  # a root whose server has not placed its lock yet: not provably dead
    other = parent / "not-a-root"
    other.mkdir()
    (other / LOCK_NAME).write_text("")
    assert reap_dead_roots(str(parent)) == []
    assert unlocked.is_dir() and other.is_dir()


def test_a_symlink_posing_as_a_root_is_never_followed(parent: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / LOCK_NAME).write_text("")
    (victim / "precious").write_text("keep me")
    (parent / f"{ROOT_PREFIX}link").symlink_to(victim)
    assert reap_dead_roots(str(parent)) == []
    assert (victim / "precious").read_text() == "keep me"


def test_a_lock_file_that_is_a_fifo_does_not_hang_or_count(parent: Path) -> None:
    root = parent / f"{ROOT_PREFIX}fifo"
    root.mkdir()
    os.mkfifo(root / LOCK_NAME)
    assert reap_dead_roots(str(parent)) == []
    assert root.is_dir()


@pytest.mark.skipif(not IS_ROOT, reason="needs root to make a root owned by another uid")
def test_roots_of_another_uid_are_left_alone(parent: Path) -> None:
    dead = _dead_root(parent, "other-uid")
    os.chown(dead, 65534, 65534)
    assert reap_dead_roots(str(parent)) == []
    assert dead.is_dir()
    os.chown(dead, 0, 0)  # control: the same root owned by us is reaped
    assert reap_dead_roots(str(parent)) == [str(dead)]


def test_mounts_below_parses_escapes_and_orders_deepest_first(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw - ext4 /dev/vda rw\n"
        "30 22 7:0 / /srv/hanzo-sandbox-x/w-1 rw,nosuid,nodev - ext4 /dev/loop0 rw\n"
        "31 30 0:5 / /srv/hanzo-sandbox-x/w-1/in\\040side rw - tmpfs tmpfs rw\n"
        "32 22 7:1 / /srv/hanzo-sandbox-xy/w-2 rw - ext4 /dev/loop1 rw\n"
        "33 22 7:2 / /srv/hanzo-sandbox-x rw - ext4 /dev/loop2 rw\n"
    )
    assert mounts_below("/srv/hanzo-sandbox-x", str(mountinfo)) == [
        "/srv/hanzo-sandbox-x/w-1/in side",
        "/srv/hanzo-sandbox-x/w-1",
    ]


@pytest.mark.skipif(not IS_ROOT, reason="needs root to mount a filesystem below a dead root")
def test_a_mount_below_a_dead_root_is_detached_then_removed(parent: Path) -> None:
    dead = _dead_root(parent, "mounted")
    point = dead / "w-1" / "deep"
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)], capture_output=True)
    if mounted.returncode != 0:  # root without CAP_SYS_ADMIN, as in a container
        pytest.skip(f"this root cannot mount: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        (point / "on-the-mount").write_text("x")
        assert mounts_below(str(dead)) == [str(point)]
        assert reap_dead_roots(str(parent)) == [str(dead)]
        assert not dead.exists()
        assert mounts_below(str(dead)) == []
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)


def _loop_backs(image: Path) -> bool:
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if backing.read_text().strip().removesuffix(" (deleted)") == str(image):
                return True
        except OSError:
            continue  # a loop device cleared while we looked
    return False


@pytest.mark.skipif(not IS_ROOT, reason="a session filesystem needs loop devices, which need root")
def test_a_dead_servers_session_filesystems_are_unmounted_freed_and_removed(parent: Path) -> None:
    import anyio

    from hanzo_sandbox_mcp.quota import FilesystemQuota, QuotaLimits, WorkdirFactory

    dead = _dead_root(parent, "quotafs")
    factory = WorkdirFactory(dead, (65534, 65534), QuotaLimits.of(8))
    mode, why = anyio.run(factory.mode)
    if mode != "filesystem":
        pytest.skip(why)
    quota = anyio.run(factory.create)
    assert isinstance(quota, FilesystemQuota)
    try:
        (quota.path / "work-file").write_text("x")
        (quota.tmp_dir / "tmp-file").write_text("x")
        assert mounts_below(str(dead)) == [str(quota.mountpoint)]  # control: the server died with it mounted
        assert _loop_backs(quota.image)
        assert reap_dead_roots(str(parent)) == [str(dead)]
        assert mounts_below(str(dead)) == []
        assert not dead.exists()
        _wait(lambda: not _loop_backs(quota.image))  # the loop device clears itself once unmounted
    finally:
        anyio.run(factory.release, quota)


# -- the watchdog ---------------------------------------------------------------------------------------


def _simulate_server_death(claim: ClaimedRoot) -> None:
    """What a SIGKILL of the server does to the claim: its fds close, nothing else runs."""
    os.close(claim._pipe_w)
    claim._pipe_w = -1
    os.close(claim._lock_fd)
    claim._lock_fd = -1


def test_watchdog_removes_the_root_when_its_server_dies(parent: Path, claims: list[ClaimedRoot]) -> None:
    claim = claim_root(str(parent))
    claims.append(claim)
    root = Path(claim.path)
    (root / "w-1").mkdir()
    (root / "w-1" / "notes").write_text("x")
    _simulate_server_death(claim)
    _wait(lambda: not root.exists())


def test_watchdog_holds_the_lock_while_the_server_is_alive(parent: Path, claims: list[ClaimedRoot]) -> None:
    claim = claim_root(str(parent))
    claims.append(claim)
    # The server's own lock fd is gone, but the watchdog shares the lock: nobody may reap the root yet.
    os.close(claim._lock_fd)
    claim._lock_fd = -1
    assert reap_dead_roots(str(parent)) == []
    assert Path(claim.path).is_dir()


def test_watchdog_leaves_a_cleanly_removed_root_alone_and_exits(parent: Path) -> None:
    claim = claim_root(str(parent))
    pid = claim.watchdog_pid
    assert pid is not None
    os.unlink(Path(claim.path) / LOCK_NAME)
    os.rmdir(claim.path)  # what a clean shutdown does before release()
    claim.release()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped by release(): no zombie is left


def test_watchdog_sweeps_dead_siblings_when_a_server_starts(parent: Path, claims: list[ClaimedRoot]) -> None:
    dead = _dead_root(parent)
    claims.append(claim_root(str(parent)))
    _wait(lambda: not dead.exists())
    assert Path(claims[0].path).is_dir()
