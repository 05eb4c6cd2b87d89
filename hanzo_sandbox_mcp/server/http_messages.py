"""Streamable HTTP: a POSTed message that deserves an error gets it, with its id, before the SDK sees it.

The SDK's streamable HTTP transport parses a body into the union of message shapes, so a request with a
float, object or null id, or with a bad field, validates as a notification: it answers 202 and never
sends a response, and the client waits. `jsonrpc.parse_message` (the stdio transport's rules) decides
instead: error replies go back at once as HTTP 400 with the JSON-RPC error body (an array for a batch);
a message it accepts, or one it drops (a notification or response), reaches the SDK unchanged.

The transport's own checks come first: the SDK's (`TransportSecurityMiddleware`, its public class:
Content-Type, and Host and Origin when it is told to check them) here, so a request they refuse goes on to
the SDK untouched and gets its 421, 403 or 400 from there, and whatever the caller put in front (the HTTP
guard's Host, Origin, token and body limits) before this. A body longer than `max_body_bytes` is not
read here: the SDK refuses it (413).
"""

from __future__ import annotations

import anyio.to_thread
from mcp.server.transport_security import (
    DEFAULT_MAX_REQUEST_BODY_SIZE,
    TransportSecurityMiddleware,
    TransportSecuritySettings,
)
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .jsonrpc import encode, parse_message

__all__ = ["JsonRpcBodyCheck"]

#: Bodies above this are parsed in a worker thread, off the event loop.
_INLINE_PARSE_BYTES = 64 * 1024


class JsonRpcBodyCheck:
    """ASGI middleware in front of the streamable HTTP app at `path` (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        path: str,
        security: TransportSecuritySettings,
        max_body_bytes: int = DEFAULT_MAX_REQUEST_BODY_SIZE,
    ) -> None:
        """`security` and `max_body_bytes`: the same the streamable HTTP app was given."""
        self.app = app
        self.path = path
        self.security = TransportSecurityMiddleware(security)
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != self.path.rstrip("/"):
            await self.app(scope, receive, send)
            return
        if await self.security.validate_request(Request(scope), is_post=True) is not None:
            await self.app(scope, receive, send)  # refused by the SDK's own checks, in the SDK's words
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: nothing to answer
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await self.app(scope, _replay(bytes(body), receive, more=message.get("more_body", False)), send)
                return
            if not message.get("more_body", False):
                break
        data = bytes(body)
        if len(data) > _INLINE_PARSE_BYTES:
            outcome = await anyio.to_thread.run_sync(parse_message, data)
        else:
            outcome = parse_message(data)
        if isinstance(outcome, list) and outcome:
            await _reply(send, outcome, batch=data.lstrip().startswith(b"["))
            return
        await self.app(scope, _replay(data, receive, more=False), send)


def _replay(data: bytes, receive: Receive, *, more: bool) -> Receive:
    """A receive that gives the body read so far, then whatever the client still sends."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": data, "more_body": more}
        return await receive()

    return replayed


async def _reply(send: Send, replies: list[dict[str, object]], *, batch: bool) -> None:
    if batch:
        body = ("[" + ",".join(encode(reply).decode().rstrip("\n") for reply in replies) + "]").encode()
    else:
        body = encode(replies[0])
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
