"""Who a client is, from the SDK's request context: protocol session, else named token, else anonymous."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from mcp.server.connection import Connection

from hanzo_sandbox_mcp.clients import ANONYMOUS, LOCAL, ClientId, client_of_request

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _http_request(state: dict[str, Any] | None = None) -> SimpleNamespace:
    scope: dict[str, Any] = {"type": "http"}
    if state is not None:
        scope["state"] = state
    return SimpleNamespace(scope=scope)


def _context(request: Any, connection: Connection | None) -> SimpleNamespace:
    return SimpleNamespace(request=request, session=SimpleNamespace(_connection=connection))


def _handshake_connection() -> Connection:
    return Connection.for_loop(object(), session_id="a" * 32, protocol_version_hint="2025-11-25")  # type: ignore[arg-type]


def _modern_connection() -> Connection:
    return Connection.from_envelope("2026-07-28", None, None)


async def _nobody(_client: ClientId) -> None:
    raise AssertionError("no protocol session should end here")


def test_stdio_and_in_memory_calls_are_the_local_client() -> None:
    assert client_of_request(_context(None, _modern_connection()), _nobody) is LOCAL
    assert LOCAL.protocol_session


async def test_a_handshake_connection_is_one_client_with_a_protocol_session_until_it_ends() -> None:
    connection = _handshake_connection()
    request = _http_request({"hanzo_client": "ci"})  # the protocol session wins over the token
    ended: list[ClientId] = []

    async def on_end(client: ClientId) -> None:
        ended.append(client)

    first = client_of_request(_context(request, connection), on_end)
    again = client_of_request(_context(_http_request(), connection), on_end)
    other = client_of_request(_context(request, _handshake_connection()), on_end)
    assert first == again and first.protocol_session and first.key.startswith("session:")
    assert other != first
    assert "a" * 32 not in first.key  # minted, never the client-supplied header
    with anyio.CancelScope(shield=True):
        await connection.exit_stack.aclose()
    assert ended == [first]


def test_a_2026_client_with_a_named_token_is_that_token_without_a_protocol_session() -> None:
    client = client_of_request(_context(_http_request({"hanzo_client": "ci"}), _modern_connection()), _nobody)
    assert client == ClientId("token:ci", protocol_session=False)


@pytest.mark.parametrize("state", [None, {}, {"hanzo_client": ""}, {"hanzo_client": 7}, {"other": "x"}])
def test_a_2026_client_without_a_named_token_is_anonymous(state: dict[str, Any] | None) -> None:
    assert client_of_request(_context(_http_request(state), _modern_connection()), _nobody) is ANONYMOUS


def test_without_the_sdks_connection_object_no_default_session_is_shared() -> None:
    assert client_of_request(_context(_http_request(), None), _nobody) is ANONYMOUS
