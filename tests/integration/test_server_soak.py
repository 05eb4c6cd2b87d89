"""Soak: many concurrent calls that finish, time out, get cancelled or lose their session mid-run. Afterwards no
process of theirs is left, and once the server stops no workdir is left either."""

from __future__ import annotations

import random
from typing import Any

import anyio
import pytest

pytestmark = pytest.mark.anyio
Kit = Any

ROUNDS = 12
PER_ROUND = 8


@pytest.mark.parametrize("transport", ["memory", "stdio"])
async def test_timeouts_cancels_and_closes_leave_nothing_behind(connect: Any, kit: Kit) -> None:
    rng = random.Random(7)
    marker = kit.unique_marker()  # every sleeping process carries it
    outcomes: dict[str, int] = {"ok": 0, "timeout": 0, "cancelled": 0, "closed": 0}
    async with connect(exec={"max_concurrent_calls": 16, "max_concurrent_calls_per_session": 4}) as conn:
        parent = conn.sessions_parent

        async def finishes() -> None:
            await kit.ok(conn, "run_command", command=f"sleep {marker} & echo done; kill %1")
            outcomes["ok"] += 1

        async def times_out() -> None:
            result = await kit.call(
                conn, "run_command", {"command": f"sleep {marker} & sleep {marker}", "timeout_s": 0.3}
            )
            assert result.is_error and result.structured_content["timed_out"]
            outcomes["timeout"] += 1

        async def cancelled() -> None:
            started = anyio.Event()

            async def progress(_done: float, _total: float | None, _message: str | None) -> None:
                started.set()

            async with anyio.create_task_group() as group:

                async def run() -> None:
                    await conn.client.call_tool(
                        "run_command", {"command": f"echo go; sleep {marker}"}, progress_callback=progress
                    )

                group.start_soon(run)
                await started.wait()
                group.cancel_scope.cancel()
            outcomes["cancelled"] += 1

        async def session_closed() -> None:
            info = await kit.ok(conn, "create_session")
            started = anyio.Event()
            results: list[Any] = []

            async def progress(_done: float, _total: float | None, _message: str | None) -> None:
                started.set()

            async def run() -> None:
                arguments = {"command": f"echo go; sleep {marker}", "session_id": info["session_id"]}
                results.append(await conn.client.call_tool("run_command", arguments, progress_callback=progress))

            async with anyio.create_task_group() as group:
                group.start_soon(run)
                await started.wait()
                await kit.ok(conn, "close_session", session_id=info["session_id"])
            assert results[0].is_error and "closed" in kit.text_of(results[0])
            outcomes["closed"] += 1

        kinds = [finishes, times_out, cancelled, session_closed]
        with anyio.fail_after(300):
            for _ in range(ROUNDS):
                async with anyio.create_task_group() as group:
                    for _ in range(PER_ROUND):
                        group.start_soon(rng.choice(kinds))
            await kit.wait_until(lambda: kit.marker_pids(marker) == [])
            await kit.alive(conn)
    assert sum(outcomes.values()) == ROUNDS * PER_ROUND and all(outcomes.values()), outcomes
    await kit.wait_until(lambda: kit.leftover_workdirs(parent) == [])
