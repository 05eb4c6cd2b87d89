"""HTTP limits over the real transports: request bodies (the advertised limits fit, one byte over gets a JSON-RPC
error), named tokens (the client's name in the ASGI scope), the Host header, and protocol sessions (legacy SSE
and `Mcp-Session-Id`) capped, expired and ended promptly at shutdown."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context

from hanzo_sandbox_mcp.clients import SCOPE_CLIENT_NAME
from hanzo_sandbox_mcp.config import Settings
from hanzo_sandbox_mcp.server import build_server
from hanzo_sandbox_mcp.server.http import HttpServer
from hanzo_sandbox_mcp.server.http_body import MAX_REQUEST_BODY_BYTES
from hanzo_sandbox_mcp.service import MAX_CODE_BYTES, MAX_STDIN_BYTES, SandboxService

pytestmark = pytest.mark.anyio
Kit = Any

JSON_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
CI_TOKEN = "the-token-of-ci-" + "c" * 16
LAPTOP_TOKEN = "the-token-of-laptop-" + "l" * 16
PLAIN_TOKEN = "the-unnamed-token-" + "p" * 16


def _settings(kit: Kit, sessions_parent: Path, **config: Any) -> Settings:
    return Settings.model_validate(kit.merged(kit.BASE_CONFIG, {"sessions": {"root": str(sessions_parent)}}, config))


@asynccontextmanager
async def _serving(kit: Kit, settings: Settings, transport: str) -> AsyncIterator[tuple[str, HttpServer]]:
    """The server of `serve()` plus a `whoami` tool that reports the client name the guard put in the scope."""
    service = SandboxService(settings, implicit_session="protocol_session")
    server = build_server(service)

    @server.tool()
    async def whoami(ctx: Context) -> str:
        request = ctx.request_context.request
        return str(getattr(request.state, SCOPE_CLIENT_NAME, "<unidentified>"))

    http = HttpServer(server, settings, "http" if transport == "http" else "sse", "127.0.0.1", 0)
    async with service, kit.serving(http) as base:
        yield base, http


def _client(base: str, transport: str, headers: dict[str, str] | None = None) -> Client:
    if transport == "http":
        http = httpx2.AsyncClient(headers=headers or {}, timeout=120)
        return Client(streamable_http_client(f"{base}/mcp", http_client=http))
    return Client(sse_client(f"{base}/sse", headers=headers or {}, timeout=120, sse_read_timeout=120))


# -- deadlines -------------------------------------------------------------------------------------------


async def _closed_by_server(stream: anyio.abc.SocketStream, drip: bytes) -> bytes:
    """Send `drip` a byte at a time, slowly, until the server closes the connection; what it answered.

    Bounded: 300 bytes at most (the deadlines under test are one second; the loop would run for a minute).
    """
    answer = b""
    for byte in drip[:300]:
        try:
            await stream.send(bytes([byte]))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            break
        with anyio.move_on_after(0.2):
            try:
                answer += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return answer
    with anyio.fail_after(30):
        try:
            while True:
                answer += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return answer


@pytest.mark.parametrize("phase", ["headers", "body"])
async def test_a_request_dripped_a_byte_at_a_time_is_cut_at_its_deadline(
    kit: Kit, sessions_parent: Path, phase: str
) -> None:
    settings = _settings(kit, sessions_parent, http={"header_timeout_s": 1.0, "body_timeout_s": 1.0})
    async with _serving(kit, settings, "http") as (base, _http):
        port = int(base.rsplit(":", 1)[1])
        head = f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        head += "accept: application/json, text/event-stream\r\ncontent-length: 400\r\n"
        filler = "x-filler: " + "y" * 400 + "\r\n"
        stream = await anyio.connect_tcp("127.0.0.1", port)
        async with stream:
            if phase == "headers":
                answer = await _closed_by_server(stream, (head + filler).encode())
            else:
                await stream.send((head + "\r\n").encode())
                answer = await _closed_by_server(stream, b"{" + b" " * 399)
    # Each byte came well within the keep-alive time, which a byte resets: only an absolute deadline ends it.
    assert answer.startswith(b"HTTP/1.1 408") if phase == "headers" else answer == b""


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_calls_and_streams_outlast_the_request_deadlines(kit: Kit, sessions_parent: Path, transport: str) -> None:
    settings = _settings(kit, sessions_parent, http={"header_timeout_s": 0.5, "body_timeout_s": 0.5})
    async with _serving(kit, settings, transport) as (base, _http), _client(base, transport) as client:
        with anyio.fail_after(60):
            result = await client.call_tool("run_command", {"command": "sleep 2; echo done"})
            again = await client.call_tool("run_command", {"command": "echo again"})  # the stream still stands
    assert not result.is_error, kit.text_of(result)
    assert result.structured_content is not None and result.structured_content["stdout"] == "done\n"
    assert again.structured_content is not None and again.structured_content["stdout"] == "again\n"


# -- request bodies --------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_the_largest_legal_call_with_worst_case_escaping_goes_through(
    kit: Kit, sessions_parent: Path, transport: str
) -> None:
    # Control characters are escaped as \\u00XX, six bytes each: the body is about six times the payload.
    program = "import sys; print(len(sys.stdin.buffer.read()))\n#"
    code = program + "\x01" * (MAX_CODE_BYTES - len(program))
    stdin = "\x00" * MAX_STDIN_BYTES
    assert len(json.dumps({"code": code, "stdin": stdin})) > 5 * (MAX_CODE_BYTES + MAX_STDIN_BYTES)
    async with (
        _serving(kit, _settings(kit, sessions_parent), transport) as (base, _http),
        _client(base, transport) as client,
    ):
        with anyio.fail_after(120):
            caps = await client.call_tool("capabilities", {})
            result = await client.call_tool("run_python", {"code": code, "stdin": stdin})
    assert caps.structured_content is not None
    assert caps.structured_content["limits"]["max_stdin_bytes"] == MAX_STDIN_BYTES
    assert caps.structured_content["limits"]["max_code_bytes"] == MAX_CODE_BYTES
    assert not result.is_error, kit.text_of(result)
    assert result.structured_content is not None and result.structured_content["stdout"] == f"{MAX_STDIN_BYTES}\n"


def _oversized_call(request_id: int) -> bytes:
    """A tools/call body exactly one byte over the limit, its id first as the SDKs write it."""
    head = f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call","params":{{"name":"run_command",'
    head += '"arguments":{"command":"true","stdin":"'
    tail = '"}}}'
    return (head + "x" * (MAX_REQUEST_BODY_BYTES + 1 - len(head) - len(tail)) + tail).encode()


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 1 << 20):
        yield body[start : start + (1 << 20)]


@pytest.mark.parametrize("transport", ["http", "sse"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_one_byte_over_the_body_limit_gets_a_json_rpc_error(
    kit: Kit, sessions_parent: Path, transport: str, framing: str
) -> None:
    body = _oversized_call(41)
    assert len(body) == MAX_REQUEST_BODY_BYTES + 1
    async with _serving(kit, _settings(kit, sessions_parent), transport) as (base, _http):
        url = f"{base}/mcp" if transport == "http" else f"{base}/messages/?session_id={'0' * 32}"
        content: bytes | AsyncIterator[bytes] = body if framing == "content-length" else _chunks(body)
        async with httpx2.AsyncClient(timeout=60) as http:
            with anyio.fail_after(60):
                response = await http.post(url, headers=JSON_HEADERS, content=content)
    assert response.status_code == 413
    error = response.json()
    assert error["jsonrpc"] == "2.0" and error["id"] == 41
    assert error["error"]["code"] == -32600 and str(MAX_REQUEST_BODY_BYTES) in error["error"]["message"]


async def test_bodies_beyond_the_shared_budget_are_told_to_retry(kit: Kit, sessions_parent: Path) -> None:
    budget = 32 * 1024 * 1024
    settings = _settings(kit, sessions_parent, http={"max_body_bytes_in_flight": budget})
    declared = budget // 2 + 1  # two such bodies cannot be held at once
    async with _serving(kit, settings, "http") as (base, _http):
        port = int(base.rsplit(":", 1)[1])
        head = (
            f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
            f"accept: application/json, text/event-stream\r\ncontent-length: {declared}\r\n\r\n"
        ).encode()
        with anyio.fail_after(60):
            first = await anyio.connect_tcp("127.0.0.1", port)
            second = await anyio.connect_tcp("127.0.0.1", port)
            async with first, second:
                await first.send(head + b"{")
                await second.send(head + b"{")
                # Whichever came second found the budget taken and was answered at once; the other waits
                # for its body. Read the one that answered.
                answered: list[bytes] = []
                async with anyio.create_task_group() as group:

                    async def read(stream: anyio.abc.SocketStream) -> None:
                        answered.append(await stream.receive(65536))
                        group.cancel_scope.cancel()

                    group.start_soon(read, first)
                    group.start_soon(read, second)
    assert len(answered) == 1 and answered[0].startswith(b"HTTP/1.1 503"), answered
    assert b'"code": -32000' in answered[0] and b"retry" in answered[0]


# -- tokens ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_a_named_token_puts_its_client_name_in_the_scope(kit: Kit, sessions_parent: Path, transport: str) -> None:
    tokens = [{"name": "ci", "token": CI_TOKEN}, {"name": "laptop", "token": LAPTOP_TOKEN}]
    settings = _settings(kit, sessions_parent, http={"token": PLAIN_TOKEN, "tokens": tokens})
    names = []
    async with _serving(kit, settings, transport) as (base, _http):
        for token in (CI_TOKEN, LAPTOP_TOKEN, PLAIN_TOKEN):
            async with _client(base, transport, {"authorization": f"Bearer {token}"}) as client:
                with anyio.fail_after(60):
                    result = await client.call_tool("whoami", {})
            names.append(kit.text_of(result))
        async with httpx2.AsyncClient(timeout=30) as http:
            with anyio.fail_after(60):
                # A client's own header of that name is no identity: without a token it is turned away.
                refused = await http.post(
                    f"{base}/mcp", headers={**JSON_HEADERS, SCOPE_CLIENT_NAME: "ci"}, content="{}"
                )
    assert names == ["ci", "laptop", "<unidentified>"]
    assert refused.status_code == 401


async def test_the_client_side_of_a_token_is_compared_without_surrounding_space(
    kit: Kit, sessions_parent: Path
) -> None:
    settings = _settings(kit, sessions_parent, http={"tokens": [{"name": "ci", "token": CI_TOKEN}]})
    async with _serving(kit, settings, "http") as (base, _http), httpx2.AsyncClient(timeout=30) as http:
        with anyio.fail_after(60):
            spaced = await http.post(
                f"{base}/mcp", headers={**JSON_HEADERS, "authorization": f"Bearer   {CI_TOKEN}"}, content="{x"
            )
            near = await http.post(
                f"{base}/mcp", headers={**JSON_HEADERS, "authorization": f"Bearer {CI_TOKEN[:-1]}"}, content="{x"
            )
    assert spaced.status_code == 400 and spaced.json()["error"]["code"] == -32700  # past the guard: a parse error
    assert near.status_code == 401


# -- the Host header -------------------------------------------------------------------------------------


async def test_the_host_header_is_parsed_not_prefix_matched(kit: Kit, sessions_parent: Path) -> None:
    async with _serving(kit, _settings(kit, sessions_parent), "http") as (base, _http):
        port = int(base.rsplit(":", 1)[1])
        other = port + 1 if port < 65535 else port - 1
        statuses = {}
        async with httpx2.AsyncClient(timeout=30) as http:
            with anyio.fail_after(60):
                for host in (
                    f"LOCALHOST:{port}",
                    f"localhost:{port}",
                    "localhost",
                    f"127.0.0.1:{port}",
                    f"[::1]:{port}",
                    "localhost:evil.example",
                    f"localhost:{other}",
                    f"localhost.evil.example:{port}",
                    f"[::1]evil:{port}",
                    f"evil.example:{port}",
                ):
                    response = await http.post(f"{base}/mcp", headers={**JSON_HEADERS, "host": host}, content="{x")
                    statuses[host] = response.status_code
    assert statuses == {
        f"LOCALHOST:{port}": 400,  # let through: the body's parse error comes from the SDK
        f"localhost:{port}": 400,
        "localhost": 400,
        f"127.0.0.1:{port}": 400,
        f"[::1]:{port}": 400,
        "localhost:evil.example": 421,
        f"localhost:{other}": 421,
        f"localhost.evil.example:{port}": 421,
        f"[::1]evil:{port}": 421,
        f"evil.example:{port}": 421,
    }


# -- protocol sessions -----------------------------------------------------------------------------------


@asynccontextmanager
async def _sse_stream(base: str) -> AsyncIterator[AsyncIterator[str]]:
    """A raw `GET /sse` stream: its lines."""
    async with httpx2.AsyncClient(timeout=60) as http, http.stream("GET", f"{base}/sse") as response:
        yield response.aiter_lines()


async def _first_event(lines: AsyncIterator[str]) -> str:
    with anyio.fail_after(30):
        async for line in lines:
            if line.startswith("data:"):
                return line
    raise AssertionError("the SSE stream ended before its endpoint event")


async def test_legacy_sse_sessions_are_capped(kit: Kit, sessions_parent: Path) -> None:
    settings = _settings(kit, sessions_parent, http={"max_protocol_sessions": 2})
    async with _serving(kit, settings, "sse") as (base, http), _sse_stream(base) as one, _sse_stream(base) as two:
        assert "session_id=" in await _first_event(one) and "session_id=" in await _first_event(two)
        async with httpx2.AsyncClient(timeout=30) as client:
            with anyio.fail_after(30):
                third = await client.get(f"{base}/sse")
        assert http.streams.open_sse_sessions == 2
    assert third.status_code == 503 and third.json()["error"]["code"] == -32000


async def test_an_idle_legacy_sse_session_is_ended_by_the_server(kit: Kit, sessions_parent: Path) -> None:
    timeouts = {"default_timeout_s": 0.2, "max_timeout_s": 0.4}  # the idle limit must exceed the longest call
    http = {"max_protocol_sessions": 1, "protocol_session_idle_s": 0.5}
    settings = _settings(kit, sessions_parent, http=http, exec=timeouts)
    async with _serving(kit, settings, "sse") as (base, http):
        async with _sse_stream(base) as idle:
            await _first_event(idle)
            with anyio.fail_after(30):
                async for _line in idle:  # ends cleanly when the server ends the session
                    pass
        assert http.streams.open_sse_sessions == 0
        async with _client(base, "sse") as client:  # its place is free again
            with anyio.fail_after(60):
                assert kit.text_of(await client.call_tool("whoami", {})) == "<unidentified>"


async def test_streamable_http_protocol_sessions_are_capped(kit: Kit, sessions_parent: Path) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    settings = _settings(kit, sessions_parent, http={"max_protocol_sessions": 1})
    async with _serving(kit, settings, "http") as (base, _http), httpx2.AsyncClient(timeout=30) as http:
        with anyio.fail_after(60):
            first = await http.post(f"{base}/mcp", headers=JSON_HEADERS, json=initialize)
            second = await http.post(f"{base}/mcp", headers=JSON_HEADERS, json=initialize)
    assert first.status_code == 200 and first.headers.get("mcp-session-id")
    assert second.status_code == 503


async def test_shutdown_ends_every_open_sse_stream_at_once(kit: Kit, sessions_parent: Path) -> None:
    settings = _settings(kit, sessions_parent, http={"max_protocol_sessions": 8})
    ended_cleanly = 0
    async with _serving(kit, settings, "sse") as (base, http), anyio.create_task_group() as group:
        opened = anyio.Event()
        ready = 0

        async def hold() -> None:
            nonlocal ready, ended_cleanly
            async with _sse_stream(base) as stream:
                await _first_event(stream)
                ready += 1
                if ready == 8:
                    opened.set()
                with anyio.fail_after(60):
                    async for _line in stream:
                        pass
                ended_cleanly += 1  # a complete chunked response: ended by the server, not cut off

        for _ in range(8):
            group.start_soon(hold)
        with anyio.fail_after(60):
            await opened.wait()
        http.stop()
    assert ended_cleanly == 8
