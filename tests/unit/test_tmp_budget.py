"""The server-wide budget for sessions' tmpfs /tmp and /dev/shm: refused past the budget or past the host's
available memory (less a floor, and less what open sessions may still write), room again on release."""

from __future__ import annotations

from pathlib import Path

import pytest

from hanzo_sandbox_mcp.config import SessionSettings
from hanzo_sandbox_mcp.errors import SessionLimitReached
from hanzo_sandbox_mcp.policy import SandboxPolicy
from hanzo_sandbox_mcp.tmp_budget import MEMORY_FLOOR_FRACTION, TmpBudget, session_tmpfs_mb

REAL_MEMINFO = Path("/proc/meminfo")


def _meminfo(path: Path, *, total_mb: int, available_mb: int, shmem_mb: int = 0) -> Path:
    """A meminfo in the kernel's format (kB), with a few unrelated fields around the ones that matter."""
    path.write_text(
        f"MemTotal:       {total_mb * 1024} kB\n"
        f"MemFree:        {available_mb * 1024 // 2} kB\n"
        f"MemAvailable:   {available_mb * 1024} kB\n"
        "Buffers:           53768 kB\n"
        f"Shmem:          {shmem_mb * 1024} kB\n"
        "ShmemHugePages:        0 kB\n",
        encoding="ascii",
    )
    return path


@pytest.fixture
def plenty(tmp_path: Path) -> Path:
    return _meminfo(tmp_path / "meminfo", total_mb=65536, available_mb=60000)


def test_a_session_reserves_its_tmp_and_its_shm() -> None:
    assert session_tmpfs_mb(64) == 128


def test_the_defaults_are_a_small_tmpfs_and_a_10_gib_budget() -> None:
    assert SandboxPolicy().tmp_size_mb == 64
    settings = SessionSettings()
    assert settings.tmp_budget_mb == 10240
    # The session cap binds before the budget: idle single-call sessions are reclaimed, never refused.
    assert (settings.max_sessions + settings.pool_size) * 2 * SandboxPolicy().tmp_size_mb <= settings.tmp_budget_mb


def test_reservations_past_the_budget_are_refused_until_one_is_released(plenty: Path) -> None:
    budget = TmpBudget(256, meminfo=plenty)
    first = budget.reserve(128)
    budget.reserve(128)  # positive control: the budget holds exactly two
    full = r"2 open sessions hold 256 MiB of the server's 256 MiB budget .*close_session"
    with pytest.raises(SessionLimitReached, match=full):
        budget.reserve(1)
    first.release()
    first.release()  # idempotent: a second release frees nothing more
    assert budget.reserved_mb == 128 and budget.reservations == 1
    budget.reserve(128)
    with pytest.raises(SessionLimitReached):
        budget.reserve(1)


def test_a_session_larger_than_the_whole_budget_tells_the_operator_what_to_change(plenty: Path) -> None:
    with pytest.raises(SessionLimitReached, match=r"sessions\.tmp_budget_mb.*policy\.tmp_size_mb"):
        TmpBudget(100, meminfo=plenty).reserve(128)


def test_a_reservation_the_available_memory_cannot_hold_is_refused(tmp_path: Path) -> None:
    # 4 GiB of RAM, a floor of 1 GiB, 1.1 GiB available: 100 MiB to spare.
    meminfo = _meminfo(tmp_path / "meminfo", total_mb=4096, available_mb=1124)
    budget = TmpBudget(1 << 20, meminfo=meminfo)
    with pytest.raises(SessionLimitReached, match=r"short of memory.*need 128 MiB.*only 100 MiB.*25% of RAM"):
        budget.reserve(128)
    assert budget.reserved_mb == 0
    budget.reserve(64)  # positive control: what the spare memory holds


def test_what_open_sessions_may_still_write_is_held_back_but_what_they_wrote_is_not_counted_twice(
    tmp_path: Path,
) -> None:
    meminfo = tmp_path / "meminfo"
    _meminfo(meminfo, total_mb=4096, available_mb=2048)  # 1,024 MiB to spare
    budget = TmpBudget(1 << 20, meminfo=meminfo)
    budget.reserve(800)
    with pytest.raises(SessionLimitReached, match=r"may still write 800 MiB"):
        budget.reserve(300)  # 300 + the 800 MiB not written yet > 1,024
    # The open session wrote its 800 MiB: MemAvailable fell by that much and Shmem shows it.
    _meminfo(meminfo, total_mb=4096, available_mb=1248, shmem_mb=800)
    budget.reserve(200)  # 224 MiB to spare, nothing unwritten: fits (800 + 200 > 224 would have refused)
    with pytest.raises(SessionLimitReached, match=r"may still write 200 MiB"):
        budget.reserve(30)


def test_without_a_readable_meminfo_only_the_budget_applies(tmp_path: Path) -> None:
    (tmp_path / "no-fields").write_text("Cached: 12 kB\n")
    for meminfo in (tmp_path / "missing", tmp_path / "no-fields"):
        budget = TmpBudget(128, meminfo=meminfo)
        budget.reserve(128)
        with pytest.raises(SessionLimitReached, match="open sessions hold"):
            budget.reserve(1)


def test_the_real_meminfo_refuses_more_than_the_host_has() -> None:
    if not REAL_MEMINFO.exists():
        pytest.skip("no /proc/meminfo on this platform")
    fields = {line.split(":")[0]: int(line.split()[1]) for line in REAL_MEMINFO.read_text().splitlines()}
    total_mb = fields["MemTotal"] // 1024
    spare_mb = (fields["MemAvailable"] - int(fields["MemTotal"] * MEMORY_FLOOR_FRACTION)) // 1024
    if spare_mb < 64:
        pytest.skip(f"this host has only {spare_mb} MiB available above the floor: no room for the control")
    budget = TmpBudget(1 << 30)
    budget.reserve(16).release()  # positive control: a small reservation fits on this host
    with pytest.raises(SessionLimitReached, match="short of memory"):
        budget.reserve(total_mb)
    assert budget.reserved_mb == 0 and budget.reservations == 0


def test_negative_sizes_are_a_programming_error(plenty: Path) -> None:
    with pytest.raises(ValueError):
        TmpBudget(-1)
    with pytest.raises(ValueError):
        TmpBudget(10, meminfo=plenty).reserve(-1)
