"""Request bodies: a size limit that fits every legal call, and a budget for all bodies held at once.

The limit follows from what `capabilities` advertises. The largest legal request is a `run_python` call with
`MAX_CODE_BYTES` of code and `MAX_STDIN_BYTES` of stdin; JSON may escape each byte of either as `\\u00XX`
(6 bytes for 1: control characters, and NUL in stdin), so its body can be 6 times their sum, plus the
envelope (method, ids, `cwd`, ...). The limit is that worst case, so whatever the advertised limits allow
can be sent over HTTP; the alternative, advertising a sixth of the limits, would cut ordinary text input
for the sake of binary-ish input.

A limit that high is 31 MiB per connection, so bodies are also drawn from a budget shared by all connections
(`http.max_body_bytes_in_flight`), held while the request is being handled. A body that does not fit the
limit gets 413, one that does not fit the budget right now 503 (retry); both carry a JSON-RPC error, with
the request's id when it can be read from the first bytes. Both are answered as soon as they are known and
the connection is kept: uvicorn then reads and drops the rest of the body (within the body deadline), so
the client, which sends its whole body before it reads, gets the answer instead of a reset.
"""

from __future__ import annotations

import json
from collections import deque

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..service import MAX_CODE_BYTES, MAX_STDIN_BYTES
from .http_errors import INVALID_REQUEST, RequestId, json_rpc_error_response

__all__ = ["MAX_REQUEST_BODY_BYTES", "BodyBudget", "BodyLimit", "recover_request_id"]

_JSON_ESCAPE_FACTOR = 6
_ENVELOPE_BYTES = 1024 * 1024
MAX_REQUEST_BODY_BYTES = _JSON_ESCAPE_FACTOR * (MAX_CODE_BYTES + MAX_STDIN_BYTES) + _ENVELOPE_BYTES
#: How much of a body's start is searched for its id.
_ID_PREFIX_BYTES = 4096


def recover_request_id(prefix: bytes) -> RequestId:
    """The top-level `"id"` of a JSON-RPC request from the first bytes of its body, if it comes before the
    large values (the SDKs write `jsonrpc`, `id`, `method`, then `params`); else None.

    Walks the top-level members in order and stops at the first value that is not whole in `prefix`.
    """
    text = prefix[:_ID_PREFIX_BYTES].decode("utf-8", "ignore")
    decoder = json.JSONDecoder()
    at = _skip_space(text, 0)
    if not text.startswith("{", at):
        return None
    at += 1
    while True:
        try:
            key, at = decoder.raw_decode(text, _skip_space(text, at))
            at = _skip_space(text, at)
            if not isinstance(key, str) or not text.startswith(":", at):
                return None
            value, at = decoder.raw_decode(text, _skip_space(text, at + 1))
        except ValueError:
            return None
        if key == "id":
            return value if isinstance(value, str | int) and not isinstance(value, bool) else None
        at = _skip_space(text, at)
        if not text.startswith(",", at):
            return None
        at += 1


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


class BodyBudget:
    """Bytes of request bodies that may be held at once, over all connections (event loop only)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.capacity:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


class BodyLimit:
    """ASGI middleware: read a request's whole body within the limit and the budget, then hand it on."""

    def __init__(self, app: ASGIApp, *, max_body: int, budget: BodyBudget) -> None:
        self.app = app
        self.max_body = max_body
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        declared = _content_length(Headers(scope=scope))
        held = 0
        try:
            if declared is not None and declared > self.max_body:
                first = await receive()
                await _too_large(self.max_body, first.get("body", b""), scope, receive, send)
                return
            if declared is not None:
                if not self.budget.take(declared):
                    await _busy(scope, receive, send)
                    return
                held = declared
            body = bytearray()
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away (or missed the body deadline): a partial body is no request
                chunk = message.get("body", b"")
                if len(body) + len(chunk) > self.max_body:
                    await _too_large(self.max_body, bytes(body[:_ID_PREFIX_BYTES]) or chunk, scope, receive, send)
                    return
                if len(body) + len(chunk) > held:  # no or a false Content-Length: draw as it comes
                    extra = len(body) + len(chunk) - held
                    if not self.budget.take(extra):
                        await _busy(scope, receive, send)
                        return
                    held += extra
                body.extend(chunk)
                if not message.get("more_body", False):
                    break
            replay: deque[Message] = deque([{"type": "http.request", "body": bytes(body), "more_body": False}])
            del body

            async def replayed() -> Message:
                return replay.popleft() if replay else await receive()

            await self.app(scope, replayed, send)
        finally:
            self.budget.give_back(held)


def _content_length(headers: Headers) -> int | None:
    raw = headers.get("content-length")
    return int(raw) if raw is not None and raw.isascii() and raw.isdigit() else None


async def _too_large(limit: int, prefix: bytes, scope: Scope, receive: Receive, send: Send) -> None:
    message = (
        f"the request body is larger than the server's {limit}-byte limit, which fits the largest legal call "
        "(see capabilities); send less per call, e.g. write data to a file in the workdir in parts"
    )
    response = json_rpc_error_response(413, message, code=INVALID_REQUEST, request_id=recover_request_id(prefix))
    await response(scope, receive, send)


async def _busy(scope: Scope, receive: Receive, send: Send) -> None:
    message = "the server is holding too many large request bodies right now; retry in a moment"
    await json_rpc_error_response(503, message, retry_after=True)(scope, receive, send)
