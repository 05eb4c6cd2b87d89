"""Many clients on one streamable HTTP server: bursts queue instead of failing, no client's session is taken
by another's, and one client's long calls leave slots for the others.

Clients that use the initialize handshake (`mode="legacy"`, protocol 2025-11-25) have a protocol session
(`Mcp-Session-Id`); 2026-07-28 clients (the SDK's default `mode="auto"` here) have none.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.sse import sse_client

from hanzo_sandbox_mcp.config import Settings

pytestmark = pytest.mark.anyio
Kit = Any

BURST = 150


def _settings(kit: Kit, sessions_parent: Path, **config: Any) -> Settings:
    return Settings.model_validate(kit.merged(kit.BASE_CONFIG, {"sessions": {"root": str(sessions_parent)}}, config))


async def _run(client: Client, **arguments: Any) -> dict[str, Any]:
    with anyio.fail_after(120):
        result = await client.call_tool("run_command", arguments)
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def test_a_2026_client_gets_a_single_call_session_per_call(kit: Kit, sessions_parent: Path) -> None:
    async with (
        kit.http_server(_settings(kit, sessions_parent), "http") as (base, _service),
        Client(f"{base}/mcp") as client,
    ):
        first = await _run(client, command="echo kept > f")
        second = await _run(client, command="cat f")
        listing = await client.call_tool("list_files", {})
    assert first["session_id"] != second["session_id"] and second["exit_code"] != 0
    assert listing.is_error and "pass session_id" in kit.text_of(listing)


async def test_a_burst_without_session_id_all_succeeds_and_spares_another_clients_session(
    kit: Kit, sessions_parent: Path
) -> None:
    settings = _settings(kit, sessions_parent)
    assert settings.sessions.max_sessions < BURST
    async with kit.http_server(settings, "http") as (base, _service):
        url = f"{base}/mcp"
        async with Client(url, mode="legacy") as owner, Client(url) as burster:
            info = await owner.call_tool("create_session", {})
            assert isinstance(info.structured_content, dict)
            mine = info.structured_content["session_id"]
            await _run(owner, command="echo precious > keep.txt", session_id=mine)
            results: list[dict[str, Any]] = []

            async def one(n: int) -> None:
                results.append(await _run(burster, command=f"echo {n}"))

            async with anyio.create_task_group() as group:
                for n in range(BURST):
                    group.start_soon(one, n)
            kept = await _run(owner, command="cat keep.txt", session_id=mine)
        assert sorted(int(r["stdout"]) for r in results) == list(range(BURST))
        assert len({r["session_id"] for r in results}) == BURST  # each call got a single-call session
        assert kept["stdout"] == "precious\n"


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_a_protocol_session_has_a_default_session_that_ends_with_it(
    kit: Kit, sessions_parent: Path, transport: str
) -> None:
    async with kit.http_server(_settings(kit, sessions_parent), transport) as (base, service):
        url = f"{base}/mcp" if transport == "http" else f"{base}/sse"
        target = url if transport == "http" else sse_client(url)
        async with Client(target, mode="legacy") as client:
            first = await _run(client, command="echo kept > f")
            second = await _run(client, command="cat f")
        assert first["session_id"] == second["session_id"] and second["stdout"] == "kept\n"
        sid = first["session_id"]
        await kit.wait_until(lambda: sid not in service.sessions)
        async with Client(url if transport == "http" else sse_client(url)) as later:
            with anyio.fail_after(60):
                gone = await later.call_tool("run_command", {"command": "cat f", "session_id": sid})
        assert gone.is_error and "protocol session ended" in kit.text_of(gone)


async def test_a_client_holding_long_calls_leaves_slots_for_another(
    kit: Kit, sessions_parent: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(kit, sessions_parent)
    slots = settings.exec.max_concurrent_calls
    marker = kit.unique_marker()
    async with kit.http_server(settings, "http") as (base, service):
        per_client = service.admission.per_client
        assert per_client < slots
        url = f"{base}/mcp"
        async with Client(url, mode="legacy") as greedy, Client(url, mode="legacy") as other:
            sessions = []
            for _ in range(slots):
                info = await greedy.call_tool("create_session", {})
                assert isinstance(info.structured_content, dict)
                sessions.append(info.structured_content["session_id"])
            started = time.monotonic()
            await _run(other, command="echo idle")
            idle = time.monotonic() - started
            finished: list[str] = []
            async with anyio.create_task_group() as group:
                # One long call in each of `slots` sessions: as many as the whole server has slots.
                for sid in sessions:

                    async def hold(sid: str = sid) -> None:
                        await greedy.call_tool("run_command", {"command": f"sleep {marker}", "session_id": sid})
                        finished.append(sid)

                    group.start_soon(hold)
                held = (per_client, slots - per_client)  # (running, waiting) of the greedy client's calls
                await kit.wait_until(
                    lambda: (service.admission.running, service.admission.waiting) == held and kit.marker_pids(marker)
                )
                started = time.monotonic()
                quick = await _run(other, command="echo quick")
                delay = time.monotonic() - started
                # The greedy client's calls still run (and queue): the quick call did not wait for them.
                assert quick["stdout"] == "quick\n" and finished == []
                assert (service.admission.running, service.admission.waiting) == held and kit.marker_pids(marker)
                group.cancel_scope.cancel()
        await kit.wait_until(lambda: not kit.marker_pids(marker))
    with capsys.disabled():
        print(
            f"\nfairness: another client's call took {delay * 1000:.1f} ms while {per_client} long calls ran "
            f"({idle * 1000:.1f} ms on the idle server)"
        )
