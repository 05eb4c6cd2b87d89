"""Per-session uids: the range check (real files, maps and NSS) and the allocator (real lock files, real flock).

The cross-process cases (another server holding ids, one killed by SIGKILL) are in
tests/integration/test_uid_locks.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from hanzo_sandbox_mcp.config import SessionSettings
from hanzo_sandbox_mcp.errors import ConfigError, SandboxSetupError, SessionLimitReached
from hanzo_sandbox_mcp.linux.uids import (
    DEFAULT_LOCK_DIR,
    MAX_ID,
    UidAllocator,
    UidLockDirError,
    UidRangeError,
    UidsExhausted,
    check_range,
)

START = 2_000_000_000
FULL_MAP = "         0          0 4294967295\n"


@pytest.fixture
def host(tmp_path: Path) -> dict[str, Path]:
    """passwd, group and id maps of a made-up host: a few accounts, every id mapped."""
    files = {
        "passwd": tmp_path / "passwd",
        "group": tmp_path / "group",
        "uid_map": tmp_path / "uid_map",
        "gid_map": tmp_path / "gid_map",
    }
    files["passwd"].write_text(
        "root:x:0:0:root:/root:/bin/bash\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        "# a comment line\n"
        "+@netgroup::::::\n"
    )
    files["group"].write_text("root:x:0:\nnogroup:x:65534:\n")
    files["uid_map"].write_text(FULL_MAP)
    files["gid_map"].write_text(FULL_MAP)
    return files


def _append(path: Path, line: str) -> None:
    with path.open("a") as handle:
        handle.write(line + "\n")


def _refusal(start: int, count: int, host: dict[str, Path]) -> str:
    with pytest.raises(UidRangeError) as caught:
        check_range(start, count, **host)
    return str(caught.value)


# --- check_range ----------------------------------------------------------------------------------------


def test_check_range_accepts_a_range_no_account_uses(host: dict[str, Path]) -> None:
    check_range(START, 4096, **host)


def test_check_range_names_the_account_whose_uid_collides(host: dict[str, Path]) -> None:
    _append(host["passwd"], f"builder:x:{START + 5}:100::/home/builder:/bin/sh")
    message = _refusal(START, 4096, host)
    assert f"uid {START + 5} is the account 'builder'" in message
    assert str(host["passwd"]) in message
    check_range(START + 6, 4096, **host)  # the same files pass once the range moves past the account


def test_check_range_refuses_an_account_whose_primary_gid_is_in_the_range(host: dict[str, Path]) -> None:
    _append(host["passwd"], f"svc:x:1500:{START + 9}::/:/bin/false")
    assert f"gid {START + 9} is the primary group of the account 'svc'" in _refusal(START, 16, host)


def test_check_range_names_the_group_that_collides(host: dict[str, Path]) -> None:
    _append(host["group"], f"builders:x:{START + 4095}:alice,bob")
    message = _refusal(START, 4096, host)
    assert f"gid {START + 4095} is the group 'builders'" in message
    assert str(host["group"]) in message


def test_check_range_counts_the_collisions_it_does_not_name(host: dict[str, Path]) -> None:
    for index in range(8):
        _append(host["passwd"], f"user{index}:x:{START + index}:1::/:/bin/false")
    message = _refusal(START, 100, host)
    assert "'user4'" in message and "'user5'" not in message
    assert "and 3 more" in message


@pytest.mark.parametrize(
    ("start", "count", "reason"),
    [
        (0, 10, "includes 0 (root)"),
        (65_000, 1000, "includes 65534"),
        (MAX_ID - 9, 11, f"ends above {MAX_ID}"),
    ],
)
def test_check_range_refuses_reserved_ids(host: dict[str, Path], start: int, count: int, reason: str) -> None:
    assert reason in _refusal(start, count, host)


def test_check_range_accepts_the_last_usable_id(host: dict[str, Path]) -> None:
    check_range(MAX_ID - 9, 10, **host)


def test_check_range_refuses_an_empty_range(host: dict[str, Path]) -> None:
    assert "at least one id" in _refusal(START, 0, host)


def test_check_range_refuses_ids_outside_the_uid_map(host: dict[str, Path]) -> None:
    host["uid_map"].write_text("         0     100000      65536\n")  # a rootless container's map
    message = _refusal(START, 4096, host)
    assert f"uids {START}-{START + 4095} are not mapped" in message
    assert str(host["uid_map"]) in message
    check_range(1000, 1000, **host)  # inside the map


def test_check_range_refuses_ids_outside_the_gid_map(host: dict[str, Path]) -> None:
    host["gid_map"].write_text("0 100000 65536\n")
    message = _refusal(START, 4096, host)
    assert "gids" in message and "uids" not in message


def test_check_range_joins_adjacent_map_lines_and_names_the_gap(host: dict[str, Path]) -> None:
    host["uid_map"].write_text("0 100000 1000\n1000 300000 1000\n3000 500000 1000\n")
    check_range(500, 1500, **host)  # spans the first two lines
    message = _refusal(500, 3000, host)
    assert "uids 2000-2999 are not mapped" in message


def test_check_range_names_a_single_unmapped_id(host: dict[str, Path]) -> None:
    host["uid_map"].write_text("0 100000 1000\n1001 300000 1000\n")
    assert "uid 1000 is not mapped" in _refusal(900, 200, host)


def test_check_range_refuses_when_the_map_cannot_be_read(host: dict[str, Path]) -> None:
    host["uid_map"].unlink()
    assert "cannot be read" in _refusal(START, 4096, host)


def test_check_range_treats_a_missing_group_file_as_no_groups(host: dict[str, Path]) -> None:
    host["group"].unlink()
    check_range(START, 4096, **host)


def test_the_default_range_passes_on_this_machine() -> None:
    """The real /proc/self/uid_map and gid_map, /etc/passwd, /etc/group and NSS."""
    check_range(START, 4096)


def test_check_range_with_the_real_files_names_root_once() -> None:
    # /etc/passwd and NSS both list root: one collision, named once, not once per source.
    with pytest.raises(UidRangeError) as caught:
        check_range(0, 1)
    assert str(caught.value).count("uid 0 is the account 'root'") == 1


def test_range_errors_are_config_errors() -> None:
    assert issubclass(UidRangeError, ConfigError) and issubclass(UidRangeError, ValueError)
    assert issubclass(UidLockDirError, ConfigError)
    assert issubclass(UidsExhausted, SessionLimitReached)


# --- the allocator --------------------------------------------------------------------------------------


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    return tmp_path / "locks" / "uids"


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_acquire_hands_out_distinct_ids_of_the_range(lock_dir: Path) -> None:
    allocator = UidAllocator(START, 8, lock_dir)
    leases = [allocator.acquire() for _ in range(8)]
    uids = {lease.uid for lease in leases}
    assert uids == set(range(START, START + 8))
    assert all(lease.gid == lease.uid for lease in leases)
    for lease in leases:
        lease.release()


def test_exhaustion_says_how_many_ids_are_taken_and_what_to_do(lock_dir: Path) -> None:
    allocator = UidAllocator(START, 3, lock_dir)
    leases = [allocator.acquire() for _ in range(3)]
    with pytest.raises(UidsExhausted) as caught:
        allocator.acquire()
    message = str(caught.value)
    assert "all 3 session uids" in message and f"{START}-{START + 2}" in message
    assert "close_session" in message
    for lease in leases:
        lease.release()


def test_release_frees_the_id_and_leaves_the_lock_file(lock_dir: Path) -> None:
    allocator = UidAllocator(START, 1, lock_dir)
    lease = allocator.acquire()
    with pytest.raises(UidsExhausted):
        allocator.acquire()
    lease.release()
    again = allocator.acquire()
    assert again.uid == START
    # Never deleted: unlinking a file that another process holds locked would break mutual exclusion.
    assert (lock_dir / f"{START}.lock").is_file()
    again.release()


def test_release_twice_does_not_free_the_next_holder(lock_dir: Path) -> None:
    allocator = UidAllocator(START, 1, lock_dir)
    first = allocator.acquire()
    first.release()
    second = allocator.acquire()  # likely reuses the fd number `first` had
    first.release()
    with pytest.raises(UidsExhausted):
        allocator.acquire()
    second.release()


def test_a_dropped_lease_gives_its_id_back(lock_dir: Path) -> None:
    allocator = UidAllocator(START, 1, lock_dir)
    assert allocator.acquire().uid == START  # the lease is dropped at once
    allocator.acquire().release()


def test_two_allocators_in_one_process_exclude_each_other(lock_dir: Path) -> None:
    # flock belongs to the open file description, so the kernel keeps even two allocators of one server apart.
    first, second = UidAllocator(START, 2, lock_dir), UidAllocator(START, 2, lock_dir)
    leases = [first.acquire(), second.acquire()]
    assert len({lease.uid for lease in leases}) == 2
    with pytest.raises(UidsExhausted):
        second.acquire()
    for lease in leases:
        lease.release()


def test_acquire_and_exhaustion_leak_no_descriptor(lock_dir: Path) -> None:
    allocator = UidAllocator(START, 4, lock_dir)
    before = _open_fds()
    for _ in range(3):
        leases = [allocator.acquire() for _ in range(4)]
        with pytest.raises(UidsExhausted):
            allocator.acquire()
        for lease in leases:
            lease.release()
    assert _open_fds() == before


def test_a_child_process_inherits_no_lock_descriptor(lock_dir: Path) -> None:
    lease = UidAllocator(START, 1, lock_dir).acquire()
    listing = (
        "import os\n"
        "for fd in os.listdir('/proc/self/fd'):\n"
        "    try: print(os.readlink('/proc/self/fd/' + fd))\n"
        "    except OSError: pass\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", listing], close_fds=False, capture_output=True, text=True, timeout=30, check=True
    ).stdout
    # Positive control: the listing sees the descriptors a child does inherit (its stdout pipe at least).
    assert "pipe:" in shown
    assert ".lock" not in shown
    lease.release()


def test_the_lock_dir_and_its_parents_are_made_0700_whatever_the_umask(tmp_path: Path) -> None:
    for umask in (0o000, 0o777):
        top = tmp_path / f"umask-{umask:o}"
        old = os.umask(umask)
        try:
            UidAllocator(START, 1, top / "a" / "uids")
        finally:
            os.umask(old)
        for directory in (top, top / "a", top / "a" / "uids"):
            assert (directory.stat().st_mode & 0o777) == 0o700, directory


def test_a_symlinked_lock_dir_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    UidAllocator(START, 1, real)  # positive control: the target itself is accepted
    with pytest.raises(UidLockDirError, match="symbolic link"):
        UidAllocator(START, 1, link)


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777, 0o702])
def test_a_lock_dir_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(UidLockDirError, match=r"writable by group or others .*chmod 700"):
        UidAllocator(START, 1, directory)
    directory.chmod(0o700)
    UidAllocator(START, 1, directory)  # positive control


@pytest.fixture
def foreign_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory owned by another uid, mode 0755."""
    if os.geteuid() == 0:
        directory = tmp_path / "foreign"
        directory.mkdir(mode=0o755)
        os.chown(directory, 65534, 65534)
        yield directory
    else:
        yield Path("/usr")  # root's, and this process is not root


def test_a_lock_dir_of_another_user_is_refused(foreign_dir: Path) -> None:
    with pytest.raises(UidLockDirError, match=f"belongs to uid {foreign_dir.stat().st_uid}"):
        UidAllocator(START, 1, foreign_dir)


def test_a_lock_dir_that_cannot_be_made_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UidLockDirError, match="cannot"):
        UidAllocator(START, 1, blocker / "uids")


def test_a_lock_dir_replaced_after_start_is_checked_again(lock_dir: Path) -> None:
    allocator = UidAllocator(START, 1, lock_dir)
    lock_dir.chmod(0o777)
    with pytest.raises(UidLockDirError, match="writable"):
        allocator.acquire()


def test_a_lock_file_that_is_a_symlink_is_never_followed(lock_dir: Path, tmp_path: Path) -> None:
    allocator = UidAllocator(START, 2, lock_dir)
    target = tmp_path / "victim"
    target.write_text("keep me")
    (lock_dir / f"{START}.lock").symlink_to(target)
    (lock_dir / f"{START + 1}.lock").symlink_to(target)
    with pytest.raises(SandboxSetupError, match="cannot open the lock file"):
        allocator.acquire()
    assert target.read_text() == "keep me"


def test_a_lock_file_that_is_not_a_regular_file_is_refused(lock_dir: Path) -> None:
    allocator = UidAllocator(START, 1, lock_dir)
    os.mkfifo(lock_dir / f"{START}.lock")
    with pytest.raises(SandboxSetupError, match="not a regular file"):
        allocator.acquire()


def test_the_default_lock_dir_is_root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("only root may make /run/hanzo-sandbox-mcp (the default lock dir)")
    allocator = UidAllocator(START, 4096)
    lease = allocator.acquire()
    info = allocator.lock_dir.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (0, 0o700)
    lease.release()


# --- the settings ---------------------------------------------------------------------------------------


def test_the_settings_default_to_the_checked_range() -> None:
    settings = SessionSettings()
    assert (settings.uid_range_start, settings.uid_range_size) == (START, 4096)
    assert settings.uid_lock_dir == DEFAULT_LOCK_DIR
    assert SessionSettings(uid_range_size=0).uid_range_size == 0  # one uid for every session


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"uid_range_start": 999}, "greater than or equal to 1000"),
        ({"uid_range_size": -1}, "greater than or equal to 0"),
        ({"uid_range_start": MAX_ID - 100, "uid_range_size": 101}, "must not exceed 4294967294"),
        ({"uid_lock_dir": "run/uids"}, "absolute path"),
    ],
)
def test_the_settings_refuse_an_unusable_range(values: dict[str, object], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        SessionSettings.model_validate(values)
    defaults = SessionSettings()
    SessionSettings.model_validate({key: getattr(defaults, key) for key in values})  # control: same keys, valid
