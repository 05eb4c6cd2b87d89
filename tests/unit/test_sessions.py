"""Sessions: handle validation, workdir layout and ownership, expiry, eviction, closing, safe path walking."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from hanzo_sandbox_mcp.config import SessionSettings
from hanzo_sandbox_mcp.errors import RequestError, SessionNotFound
from hanzo_sandbox_mcp.sessions import (
    SESSION_ID_PATTERN,
    SessionManager,
    new_session_id,
    open_beneath,
    relative_parts,
    validate_session_id,
)
from hanzo_sandbox_mcp.treewalk import remove_tree
from hanzo_sandbox_mcp.workdir import command_owner

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _manager(tmp_path: Path, clock: FakeClock, **settings: object) -> SessionManager:
    owner = command_owner(65534, 65534)
    return SessionManager(
        SessionSettings(root=tmp_path / "sessions", **settings),  # type: ignore[arg-type]
        max_calls_per_session=2,
        owner=owner,
        clock=clock,
    )


@pytest.fixture
async def manager(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SessionManager]:
    sessions = _manager(tmp_path, clock, idle_ttl_s=60, max_sessions=3)
    sessions.open()
    try:
        yield sessions
    finally:
        await sessions.aclose()


# -- handles ---------------------------------------------------------------------------------------------


def test_new_handles_are_32_urlsafe_characters_and_unique() -> None:
    handles = {new_session_id() for _ in range(1000)}
    assert len(handles) == 1000
    assert all(SESSION_ID_PATTERN.fullmatch(h) for h in handles)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "../../etc/passwd",
        "a" * 31,
        "a" * 33,
        "a" * 32 + "\n",
        "a" * 31 + "/",
        "a" * 31 + "\x00",
        "a" * 31 + "é",
        "/" + "a" * 31,
        None,
        42,
        ["a" * 32],
    ],
)
def test_validate_session_id_rejects_anything_but_an_issued_shape(bad: object) -> None:
    with pytest.raises(SessionNotFound, match="not a session handle"):
        validate_session_id(bad)


def test_validate_session_id_accepts_an_issued_handle() -> None:
    handle = new_session_id()
    assert validate_session_id(handle) == handle


# -- workdirs --------------------------------------------------------------------------------------------


async def test_root_is_0711_and_workdirs_0700_owned_by_the_command_uid(manager: SessionManager) -> None:
    session = await manager.create()
    assert stat.S_IMODE(os.stat(manager.root).st_mode) == 0o711
    st = os.stat(session.workdir)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert (st.st_uid, st.st_gid) == command_owner(65534, 65534)
    # polled: root/w-XXXX; filesystem: root/w-XXXX/work, on the session filesystem mounted at root/w-XXXX
    top = session.workdir if session.quota.mode == "polled" else session.workdir.parent
    assert top.parent == manager.root


async def test_workdir_names_do_not_contain_the_handle(manager: SessionManager) -> None:
    session = await manager.create()
    assert session.id not in str(session.workdir)


async def test_aclose_removes_every_workdir_and_the_root(tmp_path: Path, clock: FakeClock) -> None:
    sessions = _manager(tmp_path, clock)
    root = sessions.open()
    workdirs = [(await sessions.create()).workdir for _ in range(3)]
    (workdirs[0] / "file").write_text("data")
    await sessions.aclose()
    assert not root.exists()
    assert all(not w.exists() for w in workdirs)
    assert (tmp_path / "sessions").is_dir()  # the configured parent stays
    await sessions.aclose()  # idempotent


def test_default_root_is_outside_tmp(clock: FakeClock) -> None:
    # The sandbox mounts a private tmpfs over /tmp: a workdir there would vanish for the command.
    sessions = SessionManager(SessionSettings(), max_calls_per_session=1, owner=command_owner(65534, 65534))
    root = sessions.open()
    try:
        assert not str(root).startswith("/tmp/")
    finally:
        remove_tree(root)


async def test_quota_mode_is_a_filesystem_as_root_else_polled(manager: SessionManager) -> None:
    mode, why = await manager.quota_mode()
    if os.geteuid() == 0 and os.path.exists("/dev/loop-control"):
        assert mode == "filesystem", why
    else:
        assert mode == "polled" and why
    session = await manager.create()
    assert session.quota.mode == mode
    assert os.path.ismount(session.workdir.parent) == (mode == "filesystem")


async def test_quota_mode_polled_when_configured(tmp_path: Path, clock: FakeClock) -> None:
    sessions = _manager(tmp_path, clock, quota_mode="polled")
    sessions.open()
    try:
        assert await sessions.quota_mode() == ("polled", 'configured: sessions.quota_mode = "polled"')
        session = await sessions.create()
        assert session.quota.mode == "polled" and not os.path.ismount(session.workdir)
    finally:
        await sessions.aclose()


@pytest.mark.parametrize(("quota_mb", "inodes", "expected"), [(1024, None, 262_144), (4, None, 1024), (4, 5000, 5000)])
def test_the_inode_limit_defaults_to_256_per_mib(
    tmp_path: Path, clock: FakeClock, quota_mb: int, inodes: int | None, expected: int
) -> None:
    sessions = SessionManager(
        SessionSettings(root=tmp_path, workdir_inodes=inodes),
        max_calls_per_session=1,
        owner=command_owner(65534, 65534),
        workdir_quota_mb=quota_mb,
    )
    assert sessions.limits.inodes == expected
    assert sessions.limits.bytes == quota_mb * 1024 * 1024


async def test_ending_a_session_never_raises_and_its_removal_is_retried(
    manager: SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = await manager.create()
    real = session.quota.release

    async def broken() -> bool:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(session.quota, "release", broken)
    await manager.close(session.id)
    assert session.workdir.exists()
    monkeypatch.setattr(session.quota, "release", real)
    await manager.expire_idle()
    assert not session.workdir.exists()


# -- lookup, expiry, eviction ----------------------------------------------------------------------------


async def test_get_returns_the_live_session(manager: SessionManager) -> None:
    session = await manager.create()
    assert await manager.get(session.id) is session


async def test_unknown_handle_says_it_was_never_issued(manager: SessionManager) -> None:
    with pytest.raises(SessionNotFound, match="unknown session"):
        await manager.get(new_session_id())


async def test_idle_session_expires_after_ttl_and_its_files_go(manager: SessionManager, clock: FakeClock) -> None:
    session = await manager.create()
    (session.workdir / "notes.txt").write_text("x")
    clock.advance(59)
    assert await manager.get(session.id) is session
    clock.advance(61)
    with pytest.raises(SessionNotFound, match="expired after 60 s"):
        await manager.get(session.id)
    assert not session.workdir.exists()


async def test_a_busy_session_never_expires(manager: SessionManager, clock: FakeClock) -> None:
    session = await manager.create()
    async with manager.call(session):
        clock.advance(10_000)
        assert await manager.expire_idle() == []
    # The call's end counts as use: the TTL starts again from there.
    clock.advance(30)
    assert await manager.get(session.id) is session


async def test_sweeper_timing_reports_the_next_expiry(manager: SessionManager, clock: FakeClock) -> None:
    assert manager.seconds_until_next_expiry() is None
    await manager.create()
    clock.advance(20)
    assert manager.seconds_until_next_expiry() == pytest.approx(40)


async def test_each_client_has_its_own_default_session_until_it_ends(manager: SessionManager) -> None:
    mine, theirs = await manager.default("a"), await manager.default("b")
    assert mine is not theirs and await manager.default("a") is mine
    await manager.end_default("a", "its client's protocol session ended")
    with pytest.raises(SessionNotFound, match="protocol session ended"):
        await manager.get(mine.id)
    assert await manager.default("b") is theirs


async def test_default_session_is_reused_then_replaced_after_expiry(manager: SessionManager, clock: FakeClock) -> None:
    first = await manager.default()
    assert await manager.default() is first
    clock.advance(61)
    second = await manager.default()
    assert second is not first
    assert not first.workdir.exists()


# -- closing ---------------------------------------------------------------------------------------------


async def test_close_deletes_the_workdir_and_the_handle_stops_working(manager: SessionManager) -> None:
    session = await manager.create()
    (session.workdir / "sub").mkdir()
    await manager.close(session.id)
    assert not session.workdir.exists()
    with pytest.raises(SessionNotFound, match="closed by close_session"):
        await manager.get(session.id)


async def test_close_cancels_running_calls_first(manager: SessionManager) -> None:
    session = await manager.create()
    entered = anyio.Event()
    outcome: list[BaseException] = []

    async def long_call() -> None:
        try:
            async with manager.call(session):
                entered.set()
                await anyio.sleep_forever()
        except SessionNotFound as exc:
            outcome.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(long_call)
            await entered.wait()
            await manager.close(session.id)
    assert len(outcome) == 1 and "closed while this call ran" in str(outcome[0])
    assert not session.workdir.exists()


async def test_calls_queue_on_the_per_session_limit(manager: SessionManager) -> None:
    session = await manager.create()
    running = 0
    peak = 0
    release = anyio.Event()
    started = anyio.Event()

    async def one() -> None:
        nonlocal running, peak
        async with manager.call(session):
            running += 1
            peak = max(peak, running)
            if running == 2:
                started.set()
            await release.wait()
            running -= 1

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(one)
            await started.wait()
            assert session.active == 5  # two running, three queued
            release.set()
    assert peak == 2
    assert session.active == 0


# -- paths inside the workdir ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "parts"),
    [(None, ()), ("", ()), (".", ()), ("a/b", ("a", "b")), ("./a//b/", ("a", "b")), ("a/./b", ("a", "b"))],
)
def test_relative_parts_splits_paths_inside(path: str | None, parts: tuple[str, ...]) -> None:
    assert relative_parts(path, Path("/w")) == parts


def test_relative_parts_accepts_an_absolute_path_under_the_workdir() -> None:
    assert relative_parts("/w/x/y", Path("/w")) == ("x", "y")


@pytest.mark.parametrize("path", ["..", "../..", "a/../../etc", "x/..", "/etc", "/", "/w2/x", "a\x00b"])
def test_relative_parts_refuses_escapes(path: str) -> None:
    with pytest.raises(RequestError):
        relative_parts(path, Path("/w"))


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "w"
    directory.mkdir()
    (directory / "real.txt").write_text("inside")
    (directory / "sub").mkdir()
    (directory / "sub" / "deep.txt").write_text("deep")
    yield directory


def _read(workdir: Path, path: str) -> bytes:
    fd = open_beneath(workdir, relative_parts(path, workdir))
    try:
        return os.read(fd, 100)
    finally:
        os.close(fd)


def test_open_beneath_reads_files_inside(workdir: Path) -> None:
    assert _read(workdir, "real.txt") == b"inside"
    assert _read(workdir, "sub/deep.txt") == b"deep"


def test_open_beneath_blocks_a_symlink_to_etc_passwd(workdir: Path) -> None:
    (workdir / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(RequestError, match="symbolic link"):
        _read(workdir, "passwd")


def test_open_beneath_blocks_a_symlinked_directory_to_root(workdir: Path) -> None:
    (workdir / "root").symlink_to("/")
    with pytest.raises(RequestError):
        _read(workdir, "root/etc/passwd")


def test_open_beneath_blocks_a_relative_symlink_climbing_out(workdir: Path) -> None:
    (workdir.parent / "secret.txt").write_text("outside")
    (workdir / "up").symlink_to("../secret.txt")
    with pytest.raises(RequestError, match="symbolic link"):
        _read(workdir, "up")


def test_open_beneath_blocks_a_symlink_to_a_file_inside_too(workdir: Path) -> None:
    # Links are never followed, even harmless ones: the rule cannot be raced.
    (workdir / "alias").symlink_to("real.txt")
    with pytest.raises(RequestError):
        _read(workdir, "alias")


def test_open_beneath_refuses_a_workdir_that_is_itself_a_link(tmp_path: Path, workdir: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(workdir)
    with pytest.raises(RequestError):
        open_beneath(link, ("real.txt",))


def test_open_beneath_does_not_hang_on_a_fifo(workdir: Path) -> None:
    os.mkfifo(workdir / "pipe")
    fd = open_beneath(workdir, ("pipe",))  # O_NONBLOCK: returns at once with no writer
    try:
        assert stat.S_ISFIFO(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def test_open_beneath_names_a_missing_file(workdir: Path) -> None:
    with pytest.raises(RequestError, match="does not exist"):
        _read(workdir, "nope.txt")
