"""Fair admission: the per-client cap, clients and then sessions taking turns, and cancellable queued calls.

Every test drives the scheduler with events only: a call holds its slot until the test releases it, and
the order in which calls were admitted is recorded and compared whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest
from anyio import wait_all_tasks_blocked

from hanzo_sandbox_mcp.admission import FairAdmission
from hanzo_sandbox_mcp.config import ExecSettings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Calls:
    """Calls that each take a slot, record their admission, and hold the slot until released by name."""

    def __init__(self, admission: FairAdmission, group: anyio.abc.TaskGroup) -> None:
        self.admission = admission
        self.group = group
        self.admitted: list[str] = []
        self._release: dict[str, anyio.Event] = {}

    async def start(self, name: str, client: str, lane: Hashable | None = None) -> None:
        """Start a call and return once it holds a slot or waits in the queue."""
        self._release[name] = anyio.Event()

        async def call() -> None:
            async with self.admission.slot(client, lane if lane is not None else name):
                self.admitted.append(name)
                await self._release[name].wait()

        self.group.start_soon(call)
        await wait_all_tasks_blocked()

    async def finish(self, name: str) -> None:
        """End a running call and let the scheduler hand its slot on."""
        assert name in self.admitted, f"{name} is not running"
        self._release[name].set()
        await wait_all_tasks_blocked()


@asynccontextmanager
async def scheduler(total: int, per_client: int) -> AsyncIterator[Calls]:
    """Calls on a fresh FairAdmission; whatever still holds or awaits a slot is cancelled at the end."""
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            yield Calls(FairAdmission(total=total, per_client=per_client), group)
            group.cancel_scope.cancel()


async def test_one_client_never_holds_more_than_its_cap() -> None:
    async with scheduler(total=8, per_client=4) as calls:
        admission = calls.admission
        for n in range(8):
            await calls.start(f"a{n}", "A", lane=f"session{n}")
        assert calls.admitted == ["a0", "a1", "a2", "a3"]
        assert (admission.running, admission.waiting_for("A")) == (4, 4)
        await calls.start("b0", "B")  # the free half of the slots is there for another client
        assert calls.admitted[-1] == "b0" and admission.running == 5


async def test_waiting_clients_take_turns_served_longest_ago_first() -> None:
    async with scheduler(total=2, per_client=2) as calls:
        for name in ("a1", "a2", "a3", "a4"):
            await calls.start(name, "A")
        await calls.start("b1", "B")
        await calls.start("c1", "C")
        assert calls.admitted == ["a1", "a2"]
        # A queued a3 before B and C queued, but A was just served: the freed slots go to B, then C.
        await calls.finish("a1")
        await calls.finish("a2")
        assert calls.admitted == ["a1", "a2", "b1", "c1"]
        await calls.finish("b1")
        await calls.finish("c1")
        assert calls.admitted == ["a1", "a2", "b1", "c1", "a3", "a4"]


async def test_sessions_of_one_client_take_turns() -> None:
    async with scheduler(total=1, per_client=1) as calls:
        for name in ("s1-1", "s1-2", "s1-3"):
            await calls.start(name, "A", lane="s1")
        await calls.start("s2-1", "A", lane="s2")
        for name in ("s1-1", "s1-2", "s2-1"):
            await calls.finish(name)
        # s1's queue (longer, and earlier) does not keep s2 waiting: after s1-2, s2's turn.
        assert calls.admitted == ["s1-1", "s1-2", "s2-1", "s1-3"]


async def test_a_cancelled_queued_call_never_runs_and_leaves_the_queue() -> None:
    admission = FairAdmission(total=1, per_client=1)
    ran: list[str] = []
    queued_scope = anyio.CancelScope()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            calls = Calls(admission, group)
            await calls.start("holder", "A")

            async def queued() -> None:
                with queued_scope:
                    async with admission.slot("B", "b"):
                        ran.append("b")

            group.start_soon(queued)
            await wait_all_tasks_blocked()
            assert admission.waiting_for("B") == 1
            queued_scope.cancel()  # what a client's cancel does to the waiting tool call
            await wait_all_tasks_blocked()
            assert admission.waiting == 0
            await calls.finish("holder")
    assert ran == [] and admission.running == 0


async def test_a_slot_granted_to_a_call_cancelled_in_the_same_instant_is_handed_on() -> None:
    admission = FairAdmission(total=1, per_client=1)
    admitted: list[str] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            release = anyio.Event()
            doomed_scope = anyio.CancelScope()

            async def holder() -> None:
                async with admission.slot("A", "a"):
                    admitted.append("holder")
                    await release.wait()
                # The slot was just granted to `doomed`; cancel it before it can run.
                doomed_scope.cancel()

            async def waiter(name: str, client: str, scope: anyio.CancelScope | None = None) -> None:
                with scope if scope is not None else anyio.CancelScope():
                    async with admission.slot(client, name):
                        admitted.append(name)

            group.start_soon(holder)
            await wait_all_tasks_blocked()
            group.start_soon(waiter, "doomed", "B", doomed_scope)
            await wait_all_tasks_blocked()
            group.start_soon(waiter, "next", "C")
            await wait_all_tasks_blocked()
            assert admission.waiting == 2
            release.set()
    assert admitted == ["holder", "next"]
    assert admission.running == 0 and admission.waiting == 0


async def test_queued_calls_of_one_session_keep_their_order() -> None:
    async with scheduler(total=1, per_client=1) as calls:
        names = [f"call{n}" for n in range(5)]
        for name in names:
            await calls.start(name, "A", lane="s")
        for name in names:
            await calls.finish(name)
        assert calls.admitted == names


def test_the_cap_is_at_least_one_and_at_most_the_total() -> None:
    assert FairAdmission(total=2, per_client=9).per_client == 2
    with pytest.raises(ValueError):
        FairAdmission(total=2, per_client=0)


@pytest.mark.parametrize(
    ("configured", "total", "shared", "expected"),
    [
        (None, 8, True, 4),
        (None, 8, False, 8),
        (None, 1, True, 1),
        (None, 3, True, 1),
        (3, 8, True, 3),
        (20, 8, False, 8),
    ],
)
def test_the_default_cap_is_half_the_slots_where_clients_share_the_server(
    configured: int | None, total: int, shared: bool, expected: int
) -> None:
    limits = ExecSettings(max_concurrent_calls=total, max_concurrent_calls_per_client=configured)
    assert limits.client_slots(shared=shared) == expected
