"""Bounds below the ASGI app: the open-file limit, connection caps, and deadlines for request headers and bodies.

Everything here happens before a request is complete, where ASGI middleware cannot reach: uvicorn runs the
app only once the headers are parsed, and its keep-alive timer is reset by every byte. A client that opens
connections and sends a header line now and then would otherwise hold them forever, and with them the
server's file descriptors (then every new client and every sandboxed call fail with EMFILE).

So each connection, in `GuardedH11Protocol`:

1. is admitted by the `ConnectionTable` or closed at once with a 503: connections are capped in total and per
   peer address. When tokens are configured, `reserved` of the total are kept for clients that present a
   valid token: a connection beyond the ordinary caps is let in "on probation" and must show a token in its
   first request, else it gets a 503. When the probation places are full, the oldest of them (still
   waiting for headers) is closed to make room, so stalled connections cannot hold the reserve either.
2. has an absolute deadline for the headers of each request (from the connection, or from the first byte
   of a later request on it) and then for the body. Once the request is in, the deadline is disarmed:
   responses (tool calls, SSE streams) take as long as they take. A connection that misses its deadline
   is closed (a 408 when nothing was answered yet).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter, OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import h11
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from ..config import HttpSettings
from ..errors import ConfigError
from .http_errors import json_rpc_error_response, raw_json_rpc_error
from .http_tokens import TokenBook

__all__ = ["ConnectionLimits", "ConnectionTable", "GuardedH11Protocol", "guarded_protocol", "raise_fd_limit"]

_log = logging.getLogger("hanzo_sandbox_mcp.http")

#: Connections get at most half of the fds: the rest is for sandboxed calls (pipes, pidfds), sessions,
#: logs and the event loop, so that a full house of connections never makes a call fail with EMFILE.
_FD_SHARE = 2
_MAX_DEFAULT_CONNECTIONS = 4096
_MIN_CONNECTIONS = 16
_MIN_PER_PEER = 128

_BUSY = "the server has too many open connections; retry in a moment"
_BUSY_RESERVED = "the server's free connections are kept for clients with a token; retry in a moment"
_TIMEOUT_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def raise_fd_limit() -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to its hard limit (logged); the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        _log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return soft
    _log.info("raised the open-file limit (RLIMIT_NOFILE) from %d to its hard limit %d", soft, hard)
    return hard


@dataclass(frozen=True)
class ConnectionLimits:
    """The caps and deadlines in force (configured values, else derived from the open-file limit)."""

    max_connections: int
    per_peer: int
    reserved: int
    header_timeout_s: float
    body_timeout_s: float

    @classmethod
    def from_settings(cls, http: HttpSettings, fd_limit: int) -> ConnectionLimits:
        """`http`'s limits; unset ones derived from `fd_limit`. ConfigError when they cannot all hold."""
        total = http.max_connections or max(_MIN_CONNECTIONS, min(fd_limit // _FD_SHARE, _MAX_DEFAULT_CONNECTIONS))
        eighth = max(4, total // 8)
        # At least 128 per peer: one busy client (an HTTP pool of 100 connections, each holding a running
        # call's response stream) must not be refused, and on loopback every local client is one peer.
        per_peer = http.max_connections_per_peer or min(total, max(_MIN_PER_PEER, eighth))
        reserved = 0
        if http.has_tokens():  # without tokens nobody could claim a reserved place
            reserved = eighth if http.reserved_connections is None else http.reserved_connections
        if reserved >= total:
            raise ConfigError(
                f"http.reserved_connections ({reserved}) must be less than http.max_connections ({total})"
            )
        if total > fd_limit - 64:
            _log.warning(
                "http.max_connections is %d but only %d file descriptors are allowed: a full house of "
                "connections would leave sandboxed calls none (raise the hard limit, ulimit -Hn)",
                total,
                fd_limit,
            )
        return cls(total, per_peer, reserved, http.header_timeout_s, http.body_timeout_s)


class Place(Enum):
    GUEST = "guest"
    """An ordinary connection (counted against the total minus the reserve, and per peer)."""
    PROBATION = "probation"
    """Let in from the reserve: must show a valid token in its first request."""
    MEMBER = "member"
    """Has shown a valid token: counted in the total only."""


class ConnectionTable:
    """Who holds which connection place; shared by all the connections of one server (event loop only)."""

    def __init__(self, limits: ConnectionLimits, tokens: TokenBook) -> None:
        self.limits = limits
        self.tokens = tokens
        self._open = 0
        self._guests = 0
        self._guests_by_peer: Counter[str] = Counter()
        self._probation: OrderedDict[int, GuardedH11Protocol] = OrderedDict()

    def admit(self, conn: GuardedH11Protocol, peer: str) -> Place | None:
        """The place `conn` from `peer` gets, or None: refuse it (the caller answers 503 and closes)."""
        limits = self.limits
        if self._guests < limits.max_connections - limits.reserved and self._guests_by_peer[peer] < limits.per_peer:
            if self._open >= limits.max_connections and not self._evict_one():
                return None
            self._guests += 1
            self._guests_by_peer[peer] += 1
            self._open += 1
            return Place.GUEST
        if limits.reserved == 0:
            return None
        full = len(self._probation) >= limits.reserved or self._open >= limits.max_connections
        if full and not self._evict_one():
            return None
        self._probation[id(conn)] = conn
        self._open += 1
        return Place.PROBATION

    def promote(self, conn: GuardedH11Protocol, peer: str, place: Place) -> None:
        """`conn` showed a valid token: it no longer counts against the guests' caps or the reserve."""
        self._leave(conn, peer, place)
        self._open += 1

    def release(self, conn: GuardedH11Protocol, peer: str, place: Place) -> None:
        """`conn` closed."""
        self._leave(conn, peer, place)

    def _leave(self, conn: GuardedH11Protocol, peer: str, place: Place) -> None:
        self._open -= 1
        if place is Place.GUEST:
            self._guests -= 1
            self._guests_by_peer[peer] -= 1
            if not self._guests_by_peer[peer]:
                del self._guests_by_peer[peer]
        elif place is Place.PROBATION:
            self._probation.pop(id(conn), None)

    def _evict_one(self) -> bool:
        """Close the oldest probation connection (still waiting for its headers) to make room."""
        if not self._probation:
            return False
        _key, oldest = self._probation.popitem(last=False)
        self._open -= 1  # counted free now, though its fd closes on the loop's next turn
        oldest.evict(_BUSY_RESERVED)
        return True


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with connection admission and request deadlines (see the module docstring).

    `guarded_protocol()` makes the subclass that carries one server's `ConnectionTable`.
    """

    table: ClassVar[ConnectionTable]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._inner_app = self.app
        self.app = self._admit_request  # uvicorn calls it like any ASGI app
        self._place: Place | None = None
        self._peer = ""
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_for: str | None = None  # "headers", "body" or None (request in, or none started)

    # -- admission ---------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._peer = self.client[0] if self.client else ""
        place = self.table.admit(self, self._peer)
        if place is None:
            _log.debug("refused a connection from %s: connection caps reached", self._peer)
            self._write_and_close(raw_json_rpc_error(503, _BUSY, retry_after=True))
            return
        self._place = place
        self._arm("headers")

    def evict(self, message: str) -> None:
        """The table took back this connection's place: answer 503 (nothing was sent on it yet) and close it."""
        self._place = None
        self._disarm()
        self._write_and_close(raw_json_rpc_error(503, message, retry_after=True))

    async def _admit_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._place is not Place.MEMBER and self.table.tokens.match(Headers(scope=scope).get("authorization")):
            if self._place is not None:
                self.table.promote(self, self._peer, self._place)
            self._place = Place.MEMBER
        if self._place is Place.PROBATION:
            response = json_rpc_error_response(503, _BUSY_RESERVED, retry_after=True, close=True)
            await response(scope, receive, send)
            return
        await self._inner_app(scope, receive, send)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._place is not None:
            self.table.release(self, self._peer, self._place)
            self._place = None
        super().connection_lost(exc)

    # -- deadlines -----------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._place is None:  # refused: closing already
            return
        if self._waiting_for is None and self.conn.their_state is h11.IDLE:
            self._arm("headers")  # the first byte of a later request on a kept-alive connection
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        # Where the request stands after parsing what arrived: follow it with the matching deadline.
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._waiting_for != "body":
                self._arm("body")
        elif state is not h11.IDLE:
            self._disarm()  # the request is in (or the connection is ending): no deadline for the response

    def _arm(self, phase: str) -> None:
        self._disarm()
        timeout = self.table.limits.header_timeout_s if phase == "headers" else self.table.limits.body_timeout_s
        self._waiting_for = phase
        self._deadline = self.loop.call_later(timeout, self._missed_deadline, phase)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._waiting_for = None

    def _missed_deadline(self, phase: str) -> None:
        self._deadline = None
        _log.debug("closing a connection from %s: its request %s did not arrive in time", self._peer, phase)
        if phase == "headers":
            self._write_and_close(_TIMEOUT_408)  # no request of it is being answered: say why
        else:
            # The app sees a disconnect while it waits for the body; or it has answered already (a 413)
            # and uvicorn was dropping the rest of the body, which never came.
            self.transport.close()

    def _write_and_close(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)
            self.transport.close()


def guarded_protocol(table: ConnectionTable) -> type[GuardedH11Protocol]:
    """A `GuardedH11Protocol` subclass bound to `table` (uvicorn makes one instance per connection)."""
    return type("BoundGuardedH11Protocol", (GuardedH11Protocol,), {"table": table})
