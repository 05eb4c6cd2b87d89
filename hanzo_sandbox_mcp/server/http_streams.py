"""Long-lived GET streams: legacy SSE sessions capped and expired, and every stream ended at once on shutdown.

A legacy SSE session is one `GET /sse` stream: the SDK keeps it as long as the client holds the connection,
with no cap and no idle limit, so 10,000 of them took the server from 70 MB to 444 MB and made a SIGTERM
wait for each. Here:

- at most `max_sessions` SSE streams are open at once; one more gets 503 (retry later);
- a session with no traffic either way (a message POSTed for it, or a message sent on its stream; the
  SDK's keep-alive pings do not count) for `idle_s` is ended by the server;
- `close_all()` (shutdown) ends every open stream at once, SSE sessions and the GET streams of streamable
  HTTP alike, instead of waiting out uvicorn's graceful period for streams that never end on their own.

Streamable HTTP protocol sessions (`Mcp-Session-Id`) are capped and expired by the SDK itself, with the
same two settings (see `HttpServer`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .http_errors import json_rpc_error_response

__all__ = ["LongStreams"]

_log = logging.getLogger("hanzo_sandbox_mcp.http")

#: The SDK's first SSE event names the session: `data: /messages/?session_id=<32 hex digits>`.
_SESSION_IN_ENDPOINT = re.compile(rb"session_id=([0-9a-f]{32})")


@dataclass(eq=False)
class _Stream:
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    last_active: float = field(default_factory=anyio.current_time)
    session: str | None = None

    def touch(self) -> None:
        self.last_active = anyio.current_time()


class LongStreams:
    """ASGI middleware in front of both transports (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, sse_path: str, message_path: str, max_sessions: int, idle_s: float) -> None:
        self.app = app
        self.sse_path = sse_path
        self.message_path = message_path
        self.max_sessions = max_sessions
        self.idle_s = idle_s
        self._streams: set[_Stream] = set()
        self._sse: set[_Stream] = set()
        self._sessions: dict[str, _Stream] = {}

    @property
    def open_sse_sessions(self) -> int:
        return len(self._sse)

    def close_all(self) -> None:
        """End every open GET stream now (shutdown)."""
        for stream in list(self._streams):
            stream.scope.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST" and scope["path"].startswith(self.message_path):
            self._touch_session(scope)
            await self.app(scope, receive, send)
        elif scope["method"] == "GET":
            await self._stream(scope, receive, send, sse=scope["path"] == self.sse_path)
        else:
            await self.app(scope, receive, send)

    def _touch_session(self, scope: Scope) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        for session in query.get("session_id", []):
            if (stream := self._sessions.get(session)) is not None:
                stream.touch()

    async def _stream(self, scope: Scope, receive: Receive, send: Send, *, sse: bool) -> None:
        if sse and len(self._sse) >= self.max_sessions:
            message = f"the server has {self.max_sessions} SSE sessions open, its limit; retry later"
            await json_rpc_error_response(503, message, retry_after=True)(scope, receive, send)
            return
        stream = _Stream()
        started = completed = False

        async def watched_send(message: Message) -> None:
            nonlocal started, completed
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                completed = not message.get("more_body", False)
                if sse and stream.session is None and (found := _SESSION_IN_ENDPOINT.search(body)):
                    stream.session = found.group(1).decode()
                    self._sessions[stream.session] = stream
                if body and not body.startswith(b":"):  # SSE comments (keep-alive pings) are not traffic
                    stream.touch()
            await send(message)

        self._streams.add(stream)
        if sse:
            self._sse.add(stream)
        try:
            async with anyio.create_task_group() as group:
                if sse:
                    group.start_soon(self._expire_when_idle, stream)
                with stream.scope:
                    await self.app(scope, receive, watched_send)
                group.cancel_scope.cancel()
        finally:
            self._streams.discard(stream)
            self._sse.discard(stream)
            if stream.session is not None:
                self._sessions.pop(stream.session, None)
        if stream.scope.cancel_called and started and not completed:
            # Ended by the server: finish the chunked response properly (the client sees the stream end).
            with anyio.CancelScope(shield=True):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _expire_when_idle(self, stream: _Stream) -> None:
        while True:
            idle_until = stream.last_active + self.idle_s
            if anyio.current_time() >= idle_until:
                _log.info("ending SSE session %s: idle for %g s", stream.session, self.idle_s)
                stream.scope.cancel()
                return
            await anyio.sleep(idle_until - anyio.current_time())
