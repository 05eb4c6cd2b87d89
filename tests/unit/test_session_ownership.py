"""Sessions one client cannot take from another: which sessions are reclaimed to make room, and when
creation waits for room and then fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from hanzo_sandbox_mcp.config import SessionSettings
from hanzo_sandbox_mcp.errors import SessionLimitReached, SessionNotFound
from hanzo_sandbox_mcp.sessions import Session, SessionManager
from hanzo_sandbox_mcp.workdir import command_owner

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _manager(tmp_path: Path, *, max_sessions: int, create_wait_s: float) -> SessionManager:
    return SessionManager(
        SessionSettings(root=tmp_path / "sessions", max_sessions=max_sessions),
        max_calls_per_session=2,
        owner=command_owner(65534, 65534),
        create_wait_s=create_wait_s,
    )


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[SessionManager]:
    sessions = _manager(tmp_path, max_sessions=4, create_wait_s=0.01)
    sessions.open()
    try:
        yield sessions
    finally:
        await sessions.aclose()


async def _finished_single_call(manager: SessionManager) -> Session:
    async with manager.single_call() as session:
        (session.workdir / "out.txt").write_text("result")
    return session


async def test_only_single_call_sessions_nobody_reused_are_reclaimed_oldest_first(manager: SessionManager) -> None:
    explicit = await manager.create()
    (explicit.workdir / "keep.txt").write_text("mine")
    default = await manager.default("client-b")
    older = await _finished_single_call(manager)
    newer = await _finished_single_call(manager)
    await manager.get(explicit.id)  # the explicit session is now the most recently used: no help to it
    third = await _finished_single_call(manager)
    with pytest.raises(SessionNotFound, match="reclaimed: a single-call session nobody reused"):
        await manager.get(older.id)
    fourth = await _finished_single_call(manager)
    with pytest.raises(SessionNotFound, match="reclaimed"):
        await manager.get(newer.id)
    for kept in (explicit, default, third, fourth):
        assert kept.id in manager
    assert (explicit.workdir / "keep.txt").read_text() == "mine"


async def test_a_single_call_session_used_again_is_never_reclaimed(manager: SessionManager) -> None:
    reused = await _finished_single_call(manager)
    await manager.get(reused.id)  # the client passed the session_id back
    others = [await _finished_single_call(manager) for _ in range(3)]
    await _finished_single_call(manager)
    assert reused.id in manager and (reused.workdir / "out.txt").exists()
    assert others[0].id not in manager


async def test_creation_at_the_cap_waits_then_fails_when_nothing_can_be_reclaimed(manager: SessionManager) -> None:
    explicit = [await manager.create(owner="client-b") for _ in range(3)]
    default = await manager.default("client-a")
    with pytest.raises(SessionLimitReached, match="all 4 sessions are in use") as refused:
        await manager.create()
    assert "close_session" in str(refused.value)
    with pytest.raises(SessionLimitReached):
        async with manager.single_call():
            pass
    assert all(s.id in manager for s in (*explicit, default)) and len(manager) == 4


async def test_creation_at_the_cap_takes_the_room_that_appears_while_it_waits(tmp_path: Path) -> None:
    manager = _manager(tmp_path, max_sessions=2, create_wait_s=60)
    manager.open()
    try:
        first, second = await manager.create(owner="other"), await manager.create(owner="other")
        created: list[Session] = []
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:

                async def create() -> None:
                    created.append(await manager.create())

                group.start_soon(create)
                await wait_all_tasks_blocked()
                assert created == []  # waiting for room, not failing
                await manager.close(first.id)
        assert len(created) == 1 and second.id in manager and created[0].id in manager
    finally:
        await manager.aclose()


async def test_a_busy_single_call_session_is_reclaimed_only_once_its_call_ends(tmp_path: Path) -> None:
    manager = _manager(tmp_path, max_sessions=1, create_wait_s=60)
    manager.open()
    try:
        created: list[Session] = []
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                call_done = anyio.Event()

                async def busy_call() -> None:
                    async with manager.single_call() as session:
                        created.append(session)
                        await call_done.wait()

                async def create() -> None:
                    created.append(await manager.create())

                group.start_soon(busy_call)
                await wait_all_tasks_blocked()
                group.start_soon(create)
                await wait_all_tasks_blocked()
                assert len(created) == 1 and created[0].id in manager  # its call runs on
                call_done.set()
        busy, new = created
        assert busy.id not in manager and new.id in manager
    finally:
        await manager.aclose()


async def test_default_sessions_are_per_client_and_never_reclaimed(manager: SessionManager) -> None:
    defaults = {name: await manager.default(name) for name in ("a", "b", "c")}
    await _finished_single_call(manager)
    await _finished_single_call(manager)  # reclaims the first single-call session, not a default one
    assert all(s.id in manager for s in defaults.values())
    assert await manager.default("a") is defaults["a"]


async def test_a_client_makes_room_from_its_own_least_recently_used_sessions_never_another_clients(
    manager: SessionManager,
) -> None:
    theirs = await manager.create(owner="b")
    mine_default = await manager.default("a")
    mine_old, mine_recent = await manager.create(owner="a"), await manager.create(owner="a")
    await manager.get(mine_old.id)  # now mine_recent is the least recently used of a's
    newest = await manager.create(owner="a")
    with pytest.raises(SessionNotFound, match="evicted: its own client needed room"):
        await manager.get(mine_recent.id)
    for kept in (theirs, mine_default, mine_old, newest):
        assert kept.id in manager
    with pytest.raises(SessionLimitReached):
        await manager.create(owner="c")  # c has nothing of its own to give up
    await manager.create(owner="b")  # b gives up its own session, not one of a's
    assert theirs.id not in manager and all(s.id in manager for s in (mine_default, mine_old, newest))
