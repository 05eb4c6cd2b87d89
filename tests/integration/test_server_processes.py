"""Background processes through real MCP clients, over stdio and streamable HTTP, with real programs:
a server reached from its own session only, a REPL, signals, a flood, the caps, and the end of a session
or of the server leaving nothing behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from support.http_process import http_server_process
from support.processes import kill_marker, marker_pids, unique_sleep, wait_marker_gone

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(os.uname().sysname != "Linux", reason="Linux sandbox"),
    pytest.mark.parametrize("transport", ["stdio", "http"]),
]
Connect = Any
Kit = Any

_PROCESS_TOOLS = {"start_process", "read_process", "write_process", "stop_process", "list_processes"}


def _fetch(port: int) -> str:
    return (
        f'for i in $(seq 100); do {"/usr/bin/python3"} -c "import urllib.request as u; '
        f"print(u.urlopen('http://127.0.0.1:{port}/', timeout=2).status)\" 2>/dev/null && exit 0; "
        "sleep 0.1; done; exit 1"
    )


async def _wait_exit(kit: Kit, conn: Any, process_id: str, timeout: float = 30.0) -> dict[str, Any]:
    with anyio.fail_after(timeout):
        while True:
            out = await kit.ok(conn, "read_process", process_id=process_id, wait_s=10)
            if out["process"]["state"] == "exited":
                return out


async def _read_until(kit: Kit, conn: Any, process_id: str, needle: str) -> str:
    seen = ""
    with anyio.fail_after(30):
        while needle not in seen:
            out = await kit.ok(conn, "read_process", process_id=process_id, wait_s=5)
            seen += out["stdout"]["text"]
    return seen


async def test_process_tools_are_listed_with_their_annotations(connect: Connect) -> None:
    async with connect() as conn:
        with anyio.fail_after(30):
            tools = {tool.name: tool for tool in (await conn.client.list_tools()).tools}
    assert set(tools) >= _PROCESS_TOOLS
    for name, read_only in [("start_process", False), ("read_process", True), ("list_processes", True)]:
        annotations = tools[name].annotations
        assert annotations is not None and annotations.read_only_hint is read_only, name
    assert tools["stop_process"].annotations is not None and tools["stop_process"].annotations.destructive_hint


async def test_background_server_is_reached_by_its_session_only_and_killed_by_pid(connect: Connect, kit: Kit) -> None:
    port = 9000 + os.getpid() % 500
    async with connect() as conn:
        one = (await kit.ok(conn, "create_session"))["session_id"]
        two = (await kit.ok(conn, "create_session"))["session_id"]
        started = await kit.ok(
            conn, "start_process", command=f"exec /usr/bin/python3 -m http.server {port}", session_id=one
        )
        process = started["process"]
        assert process["state"] == "running" and process["session_id"] == one
        mine = await kit.ok(conn, "run_command", command=_fetch(port), session_id=one)
        assert mine["exit_code"] == 0 and mine["stdout"].startswith("200"), mine  # control: its session reaches it
        assert [p["process_id"] for p in mine["processes"]] == [process["process_id"]]
        other = await kit.ok(
            conn,
            "run_command",
            command=f"/usr/bin/python3 -c \"import urllib.request as u; u.urlopen('http://127.0.0.1:{port}/')\"",
            session_id=two,
        )
        assert other["exit_code"] != 0 and "refused" in other["stderr"], other
        assert other["processes"] == []
        assert (await kit.ok(conn, "list_processes", session_id=two))["processes"] == []
        killed = await kit.ok(conn, "run_command", command=f"kill {process['pid']}", session_id=one)
        assert killed["exit_code"] == 0, killed
        ended = await _wait_exit(kit, conn, process["process_id"])
        assert ended["process"]["signal"] == signal.SIGTERM


async def test_python_repl_through_write_process(connect: Connect, kit: Kit) -> None:
    async with connect() as conn:
        started = await kit.ok(conn, "start_process", command="/usr/bin/python3 -i -q -u")
        pid = started["process"]["process_id"]
        await kit.ok(conn, "write_process", process_id=pid, text="x = 6 * 7\nprint(x)\n")
        assert "42" in await _read_until(kit, conn, pid, "42")
        await kit.ok(conn, "write_process", process_id=pid, text="print(x + 1)\n", close_stdin=True)
        assert "43" in await _read_until(kit, conn, pid, "43")
        assert (await _wait_exit(kit, conn, pid))["process"]["exit_code"] == 0


async def test_a_process_ignoring_sigterm_is_stopped(connect: Connect, kit: Kit) -> None:
    marker = unique_sleep()
    try:
        async with connect(processes={"stop_grace_s": 1.0}) as conn:
            started = await kit.ok(conn, "start_process", command=f"trap '' TERM; echo ready; sleep {marker}")
            pid = started["process"]["process_id"]
            await _read_until(kit, conn, pid, "ready")
            stopped = await kit.ok(conn, "stop_process", process_id=pid)
            assert stopped["process"]["state"] == "exited" and stopped["process"]["signal"] == signal.SIGKILL
            assert wait_marker_gone(marker) == []
            message = await kit.error(conn, "read_process", process_id=pid)
            assert "no background process" in message and "read to the end" in message
    finally:
        kill_marker(marker)


async def test_caps_are_tool_errors_naming_them(connect: Connect, kit: Kit) -> None:
    async with connect(processes={"max_per_session": 1, "max_total": 2}) as conn:
        one = (await kit.ok(conn, "create_session"))["session_id"]
        two = (await kit.ok(conn, "create_session"))["session_id"]
        three = (await kit.ok(conn, "create_session"))["session_id"]
        await kit.ok(conn, "start_process", command="sleep 300", session_id=one)
        assert "processes.max_per_session" in await kit.error(
            conn, "start_process", command="sleep 300", session_id=one
        )
        await kit.ok(conn, "start_process", command="sleep 300", session_id=two)
        assert "processes.max_total" in await kit.error(conn, "start_process", command="sleep 300", session_id=three)
        caps = await kit.ok(conn, "capabilities")
        assert caps["limits"]["max_processes_per_session"] == 1 and caps["limits"]["max_processes"] == 2


def _server_pid(conn: Any, transport: str, tmp_path: Path) -> int:
    if transport == "http":
        return os.getpid()  # the HTTP server runs in this process
    # The stdio server is this test's own child; anything else naming the config is not it.
    (pid,) = [pid for pid in marker_pids(str(tmp_path / "config.toml")) if _parent(pid) == os.getpid()]
    return pid


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_yes_flood_keeps_memory_bounded_and_other_calls_answering(
    connect: Connect, kit: Kit, transport: str, tmp_path: Path
) -> None:
    async with connect() as conn:
        await kit.alive(conn)
        server = _server_pid(conn, transport, tmp_path)
        before = _rss_kb(server)
        # Named sessions: on HTTP each call without one may be a new single-call session.
        flood = (await kit.ok(conn, "create_session"))["session_id"]
        other = (await kit.ok(conn, "create_session"))["session_id"]
        started = await kit.ok(conn, "start_process", command="yes", session_id=flood)
        pid = started["process"]["process_id"]
        answered = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            echo = await kit.ok(conn, "run_command", command="echo alive", session_id=other)
            assert echo["stdout"] == "alive\n"
            answered += 1
            await anyio.sleep(0.2)
        growth_mb = (_rss_kb(server) - before) / 1024
        out = await kit.ok(conn, "read_process", process_id=pid)
        assert out["stdout"]["dropped_bytes"] > 0 and out["stdout"]["text"].startswith("y\n")
        await kit.ok(conn, "stop_process", process_id=pid)
    assert answered >= 10
    assert growth_mb < 20, f"server RSS grew {growth_mb:.1f} MB during the flood"


async def test_close_session_leaves_no_process_on_the_host(connect: Connect, kit: Kit) -> None:
    marker = unique_sleep()
    try:
        async with connect() as conn:
            session = (await kit.ok(conn, "create_session"))["session_id"]
            await kit.ok(conn, "start_process", command=f"setsid sleep {marker} & sleep {marker}", session_id=session)
            await kit.wait_until(lambda: len(marker_pids(marker)) >= 2)  # control: both sleeps run
            await kit.ok(conn, "close_session", session_id=session)
            assert wait_marker_gone(marker) == []
    finally:
        kill_marker(marker)


async def test_server_sigterm_leaves_no_process_on_the_host(
    connect: Connect, kit: Kit, transport: str, tmp_path: Path, sessions_parent: Path
) -> None:
    marker = unique_sleep()
    try:
        if transport == "stdio":
            await _sigterm_stdio_server(connect, kit, tmp_path, marker)
        else:
            await _sigterm_http_server(kit, tmp_path, sessions_parent, marker)
        assert wait_marker_gone(marker) == []
    finally:
        kill_marker(marker)


async def _sigterm_stdio_server(connect: Connect, kit: Kit, tmp_path: Path, marker: str) -> None:
    reached = []
    with pytest.raises(BaseException):  # noqa: B017 (the client loses its server: any error of the SDK)
        async with connect() as conn:
            await kit.ok(conn, "start_process", command=f"sleep {marker}")
            await kit.wait_until(lambda: bool(marker_pids(marker)))  # control: it runs
            server = _server_pid(conn, "stdio", tmp_path)
            os.kill(server, signal.SIGTERM)
            await kit.wait_until(lambda: not os.path.exists(f"/proc/{server}/cmdline") or _zombie(server), 60)
            reached.append(server)
            await kit.alive(conn)  # the server is gone: this fails
    assert reached, "the stdio server did not exit on SIGTERM"


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


async def _sigterm_http_server(kit: Kit, tmp_path: Path, sessions_parent: Path, marker: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(kit.to_toml(kit.merged(kit.BASE_CONFIG, {"sessions": {"root": str(sessions_parent)}})))
    with http_server_process(config, env=kit.child_env(tmp_path), cwd=kit.REPO_ROOT) as server:
        await server.wait_until_serving()
        with anyio.fail_after(60):
            async with (
                httpx2.AsyncClient(timeout=60) as http,
                Client(streamable_http_client(server.url, http_client=http)) as client,
            ):
                result = await client.call_tool("start_process", {"command": f"sleep {marker}"})
                assert not result.is_error, result
        await kit.wait_until(lambda: bool(marker_pids(marker)))  # control: it outlived the client
        server.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(60):
            while server.process.poll() is None:
                await anyio.sleep(0.05)
