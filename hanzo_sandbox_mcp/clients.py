"""Who a client is: the one rule behind default sessions and fair call slots.

A tool call belongs to the first of these that applies:

1. **Its protocol session**, when the transport has one:
   - stdio: the server process (one client per process; an in-process connection counts the same);
   - streamable HTTP: the `Mcp-Session-Id` of a client that used the initialize handshake (protocol
     2025-11-25 and older);
   - legacy SSE: the SSE connection of such a client.

   The 2026-07-28 revision has no protocol sessions: each of its HTTP requests stands alone.
2. **Else its named token**: the client name of the bearer token the HTTP guard matched, which the guard
   puts in the ASGI scope as `scope["state"]["hanzo_client"]`.
3. **Else one shared client**, `anonymous`: every caller that is neither (2026-07-28 clients on loopback
   without a token).

Only a client with a protocol session has a default session (calls without `session_id` share it, and it
ends with the protocol session); any other call without `session_id` gets a single-call session. Every
client gets its own share of call slots (see `admission.py`).

Keys are minted here, never taken from what a client sent, so a log line or a lane name holds no header.
The SDK is imported only when an HTTP request is identified: the service itself stays free of MCP.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp.server.connection import Connection

__all__ = ["ANONYMOUS", "LOCAL", "SCOPE_CLIENT_NAME", "ClientId", "client_of_request"]

#: Where the HTTP guard leaves the matched token's client name: `scope["state"][SCOPE_CLIENT_NAME]`.
SCOPE_CLIENT_NAME = "hanzo_client"
_STATE_KEY = "hanzo_sandbox_mcp.client"


@dataclass(frozen=True)
class ClientId:
    """One client: a key for bookkeeping, and whether it has a protocol session (and so a default session)."""

    key: str
    protocol_session: bool


#: The single client of a stdio server, and of a library caller that names none.
LOCAL = ClientId("local", protocol_session=True)
#: Every caller with neither a protocol session nor a named token.
ANONYMOUS = ClientId("anonymous", protocol_session=False)

OnSessionEnd = Callable[[ClientId], Awaitable[None]]


def client_of_request(request_context: Any, on_session_end: OnSessionEnd) -> ClientId:
    """The client of one request, given the SDK's request context (`ctx.request_context` in a tool).

    `on_session_end(client)` is called once when a protocol session first seen here ends.
    """
    request = getattr(request_context, "request", None)
    if request is None:
        return LOCAL  # stdio or in memory: the connection is the process's one client
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS

    connection = _connection(request_context)
    if connection is not None and connection.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return _protocol_client(connection, on_session_end)
    name = _token_name(request)
    if name is not None:
        return ClientId(f"token:{name}", protocol_session=False)
    return ANONYMOUS


def _connection(request_context: Any) -> Connection | None:
    # mcp 2.3 offers a tool no public path to the per-connection object; the request's session holds it.
    # Should that change, callers fall back to token or anonymous: no default session is shared by mistake.
    from mcp.server.connection import Connection

    connection = getattr(getattr(request_context, "session", None), "_connection", None)
    return connection if isinstance(connection, Connection) else None


def _protocol_client(connection: Connection, on_session_end: OnSessionEnd) -> ClientId:
    """A handshake connection lives as long as its protocol session: its client is minted once, on it."""
    known = connection.state.get(_STATE_KEY)
    if isinstance(known, ClientId):
        return known
    client = ClientId(f"session:{secrets.token_hex(12)}", protocol_session=True)
    connection.state[_STATE_KEY] = client
    connection.exit_stack.push_async_callback(on_session_end, client)
    return client


def _token_name(request: Any) -> str | None:
    scope = getattr(request, "scope", None)
    state = scope.get("state") if isinstance(scope, Mapping) else None
    name = state.get(SCOPE_CLIENT_NAME) if isinstance(state, Mapping) else None
    return name if isinstance(name, str) and name else None
