"""The stdio transport: a bounded line reader that answers every line carrying an id, then the SDK's loop.

Why not the SDK's `stdio_server()`: its reader reads a line whole before any check (a 500 MB line took
1.96 GB), and a line its JSON parser refuses (a lone surrogate escape, a BOM, deep nesting) or that
matches no message shape (params as an array, a batch, an object or float id, which then passes as a
notification) is dropped without an answer, so the client waits forever.

Here each line goes through, in this order:

1. the splitter: a line longer than `max_line_bytes` is discarded as it streams (only its first and last
   64 KiB are kept, to find its id) and answered with -32600;
2. decoding: a leading BOM and a trailing CR are dropped; bytes that are not UTF-8 are -32700;
3. parsing with the standard library's `json`, which keeps a lone surrogate escape as a lone surrogate,
   so the server's own argument checks see it and give a clear tool error (NaN and Infinity are -32700);
4. the shape: a batch, a non-object, a request that is not a valid JSON-RPC request (a wrong id type,
   params that are not an object, nesting deeper than `MAX_DEPTH`) is -32600. Only requests are
   answered: a broken notification or response is logged and dropped, as JSON-RPC says.

An error carries the request's id when it can be recovered (from the parsed object, else from the line's
first members or last member), else null. Responses are written one per line; one the SDK cannot encode
(a lone surrogate in a result) is written with the surrogate replaced, never lost.

Seam: the SDK's low-level `Server.run(read_stream, write_stream, options)`, the entry its own transports
and its in-memory client use; nothing of the SDK is patched. `MCPServer` keeps that server in
`_lowlevel_server` (the SDK's client reads it the same way), the one private name used here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.mcpserver import MCPServer
from mcp.shared.message import SessionMessage
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    PARSE_ERROR,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
)
from pydantic import ValidationError

__all__ = ["MAX_DEPTH", "LineSplitter", "Overlong", "read_line", "run_stdio", "stdio_transport"]

_log = logging.getLogger("hanzo_sandbox_mcp.server.stdio")

#: Deepest nesting of arrays and objects accepted in a message; no MCP request comes near it.
MAX_DEPTH = 64
_EDGE_BYTES = 64 * 1024
_CHUNK_BYTES = 64 * 1024
_DRAIN_S = 5.0
_BOM = b"\xef\xbb\xbf"
_STRING = r'"(?:[^"\\]|\\.)*"'
_SCALAR = rf"(?:{_STRING}|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null)"
_ID = rf"(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|{_STRING})"
#: The id among the first members, after only scalar ones (`{"jsonrpc":"2.0","id":7,...`).
_ID_FIRST = re.compile(rf'^\s*\{{(?:\s*{_STRING}\s*:\s*{_SCALAR}\s*,)*?\s*"id"\s*:\s*{_ID}'.encode())
#: The id as the last member (`...,"jsonrpc":"2.0","id":7}`), the order of the TypeScript SDK.
_ID_LAST = re.compile(rf',\s*"id"\s*:\s*{_ID}\s*(?:,\s*"jsonrpc"\s*:\s*"2\.0"\s*)?\}}?\s*$'.encode())

_SURROGATE = re.compile("[\ud800-\udfff]")

Outgoing = SessionMessage | dict[str, Any]
"""What the writer sends: the server's messages, and the transport's own error replies."""


# -- splitting lines without holding more than the cap -------------------------------------------------


@dataclass(frozen=True)
class Overlong:
    """A line longer than the cap: its size, and the edges kept to find its id."""

    size: int
    head: bytes
    tail: bytes


class LineSplitter:
    """Bytes in, lines out; never holds more than `max_line_bytes` plus one chunk."""

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._line = bytearray()
        self._size = 0
        self._head: bytes | None = None  # set once the line is over the cap
        self._tail = b""

    def feed(self, chunk: bytes) -> list[bytes | Overlong]:
        """The lines `chunk` completes (without their newline)."""
        done: list[bytes | Overlong] = []
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            self._take(chunk[start:end])
            done.append(self._finish())
            start = end + 1
        self._take(chunk[start:])
        return done

    def close(self) -> bytes | Overlong | None:
        """The last line when the stream ends without a newline."""
        return self._finish() if self._size else None

    def _take(self, piece: bytes) -> None:
        self._size += len(piece)
        if self._head is None:
            self._line += piece
            if len(self._line) <= self.max_line_bytes:
                return
            # Over the cap: keep the edges, drop the rest now and everything up to the next newline.
            self._head = bytes(self._line[:_EDGE_BYTES])
            self._tail = bytes(self._line[-_EDGE_BYTES:])
            self._line = bytearray()
            return
        self._tail = (self._tail + piece)[-_EDGE_BYTES:]

    def _finish(self) -> bytes | Overlong:
        line = bytes(self._line) if self._head is None else Overlong(self._size, self._head, self._tail)
        self._line = bytearray()
        self._size = 0
        self._head = None
        self._tail = b""
        return line


# -- one line -> a message for the server, error replies, or nothing ------------------------------------


def read_line(line: bytes | Overlong, max_line_bytes: int) -> SessionMessage | list[dict[str, Any]]:
    """Classify one line: a message for the server, or the error replies to write (maybe none)."""
    if isinstance(line, Overlong):
        return [
            _error(
                _recover_id(line.head, line.tail),
                INVALID_REQUEST,
                f"Invalid request: the line is {line.size} bytes, over this server's {max_line_bytes}-byte "
                "limit (stdio.max_line_bytes); it was discarded. Send large data in smaller calls.",
            )
        ]
    raw = line.removeprefix(_BOM).removesuffix(b"\r")
    if not raw.strip():
        return []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [_error(_recover_id(raw, raw), PARSE_ERROR, f"Parse error: byte {exc.start} is not valid UTF-8")]
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        return [_error(_recover_id(raw, raw), PARSE_ERROR, f"Parse error: nested deeper than {MAX_DEPTH} levels")]
    except ValueError as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        return [_error(_recover_id(raw, raw), PARSE_ERROR, f"Parse error: {reason}")]
    return _classify(value, text)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _classify(value: object, text: str) -> SessionMessage | list[dict[str, Any]]:
    if isinstance(value, list):
        replies = [
            _error(
                _echo_id(item["id"]),
                INVALID_REQUEST,
                "Invalid request: JSON-RPC batches are not supported by MCP; send each message on its own line",
            )
            for item in value
            if isinstance(item, dict) and "id" in item and "method" in item
        ]
        return replies or [_error(None, INVALID_REQUEST, "Invalid request: batches are not supported")]
    if not isinstance(value, dict):
        return [_error(None, INVALID_REQUEST, "Invalid request: a message must be a JSON object")]
    request_id = _echo_id(value.get("id"))
    if text.count("[") + text.count("{") > MAX_DEPTH and _deeper_than(value, MAX_DEPTH):
        if "method" in value and "id" not in value:
            return []
        return [_error(request_id, INVALID_REQUEST, f"Invalid request: nested deeper than {MAX_DEPTH} levels")]
    if "method" in value:
        if "id" not in value:
            return _or_drop(JSONRPCNotification, value, "notification")
        try:
            return SessionMessage(JSONRPCRequest.model_validate(value, by_name=False))
        except ValidationError as exc:
            return [_error(request_id, INVALID_REQUEST, f"Invalid request: {_first_problem(exc)}")]
    if "result" in value:
        return _or_drop(JSONRPCResponse, value, "response")
    if "error" in value:
        return _or_drop(JSONRPCError, value, "error response")
    return [_error(request_id, INVALID_REQUEST, "Invalid request: a request needs a 'method' (a string)")]


def _or_drop(
    model: type[JSONRPCNotification | JSONRPCResponse | JSONRPCError], value: dict[str, Any], kind: str
) -> SessionMessage | list[dict[str, Any]]:
    """Messages that get no answer in JSON-RPC, even when malformed: logged and dropped."""
    try:
        return SessionMessage(model.model_validate(value, by_name=False))
    except ValidationError as exc:
        _log.info("dropped a malformed %s from the client: %s", kind, _first_problem(exc))
        return []


def _first_problem(exc: ValidationError) -> str:
    # Field and reason only: the rejected value is the caller's data, maybe megabytes of it.
    err = exc.errors(include_url=False, include_input=False)[0]
    if err["loc"][:1] == ("id",):
        return "id must be a string or an integer"
    where = ".".join(str(part) for part in err["loc"]) or "the message"
    hint = {
        "params": " (MCP passes parameters by name, as an object)",
        "jsonrpc": ' (it must be "2.0")',
    }.get(str(err["loc"][0]) if err["loc"] else "", "")
    return f"{where}: {err['msg']}{hint}"


def _deeper_than(value: object, limit: int) -> bool:
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _echo_id(value: object) -> str | int | float | None:
    """The id to answer with: the request's own when JSON-RPC allows one (string or number), else null."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def _recover_id(head: bytes, tail: bytes) -> str | int | float | None:
    """The top-level id of a line that does not parse, read from its edges; None when not found."""
    for pattern, edge in ((_ID_FIRST, head[:_EDGE_BYTES]), (_ID_LAST, tail[-_EDGE_BYTES:])):
        match = pattern.search(edge)
        if match is None:
            continue
        with contextlib.suppress(ValueError):
            return _echo_id(json.loads(match.group(1).decode("utf-8", "replace")))
    return None


def _error(request_id: str | int | float | None, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


# -- writing ---------------------------------------------------------------------------------------------


def encode(item: Outgoing) -> bytes:
    """One line of JSON for the wire. A message pydantic cannot encode (a lone surrogate in a result) is
    written with the surrogates replaced by U+FFFD, its id kept as it came, rather than lost."""
    if isinstance(item, dict):
        return _dumps(item).encode() + b"\n"
    try:
        return item.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"
    except ValueError as exc:  # PydanticSerializationError
        _log.warning("a response had to be re-encoded: %s", exc)
    try:
        data = item.message.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return _dumps(data).encode() + b"\n"
    except (ValueError, TypeError) as exc:
        request_id = getattr(item.message, "id", None)
        reply = _error(request_id, INTERNAL_ERROR, f"Internal error: the response could not be encoded ({exc})")
        return _dumps(reply).encode() + b"\n"


def _dumps(message: dict[str, Any]) -> str:
    # ASCII-only, so an id that came with a lone surrogate goes back escaped, exactly as it came.
    return json.dumps(_scrubbed(message, keep_id=True), ensure_ascii=True, separators=(",", ":"))


def _scrubbed(value: Any, *, keep_id: bool = False) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {k: v if keep_id and k == "id" else _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    return value


# -- the transport ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _claimed_std_fds() -> Iterator[tuple[int, int]]:
    """Private duplicates of fd 0 and 1 for the wire; fd 0 then reads /dev/null and fd 1 goes to stderr,
    so a stray print or an inherited descriptor never reaches the protocol stream."""
    wire_in = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    wire_out = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.dup2(null, 0)
        os.dup2(2, 1)
    finally:
        os.close(null)
    try:
        yield wire_in, wire_out
    finally:
        # wire_in stays open: a reader thread may still block on it, and a closed number could be reused.
        os.dup2(wire_in, 0)
        os.dup2(wire_out, 1)
        os.close(wire_out)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@asynccontextmanager
async def stdio_transport(
    max_line_bytes: int, fds: tuple[int, int] | None = None
) -> AsyncIterator[tuple[MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[Outgoing]]]:
    """(read stream, write stream) for `Server.run`, over `fds` (default: the process's stdin/stdout,
    claimed). The read stream ends at EOF."""
    with contextlib.ExitStack() as stack:
        wire_in, wire_out = fds if fds is not None else stack.enter_context(_claimed_std_fds())
        to_server, from_client = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        to_wire, from_server = anyio.create_memory_object_stream[Outgoing](0)
        replies = to_wire.clone()

        async def reader() -> None:
            splitter = LineSplitter(max_line_bytes)
            async with to_server, replies:
                while True:
                    try:
                        chunk = await anyio.to_thread.run_sync(os.read, wire_in, _CHUNK_BYTES, abandon_on_cancel=True)
                    except OSError as exc:
                        _log.info("stdin unreadable, taken as its end: %s", exc.strerror)
                        chunk = b""
                    lines = splitter.feed(chunk) if chunk else [splitter.close()]
                    for line in lines:
                        if line is None:
                            continue
                        outcome = read_line(line, max_line_bytes)
                        if isinstance(outcome, SessionMessage):
                            await to_server.send(outcome)
                        else:
                            for reply in outcome:
                                await replies.send(reply)
                    if not chunk:
                        return

        async def writer() -> None:
            async with from_server:
                async for item in from_server:
                    try:
                        await anyio.to_thread.run_sync(_write_all, wire_out, encode(item), abandon_on_cancel=True)
                    except OSError as exc:  # the client closed its end: nothing more can be said
                        _log.info("stdout closed: %s", exc.strerror)
                        return

        async with anyio.create_task_group() as group:
            reading = anyio.CancelScope()

            async def read_until_stopped() -> None:
                with reading:
                    await reader()

            group.start_soon(read_until_stopped)
            group.start_soon(writer)
            try:
                yield from_client, to_wire
            finally:
                # The server is done: stop reading, let the writer send what is queued (bounded), then go.
                reading.cancel()
                await to_wire.aclose()
                group.cancel_scope.deadline = anyio.current_time() + _DRAIN_S


async def run_stdio(server: MCPServer, max_line_bytes: int) -> None:
    """Serve `server` over stdin/stdout until EOF."""
    lowlevel = server._lowlevel_server  # see the module docstring: the SDK's own client reads it too
    async with stdio_transport(max_line_bytes) as (read_stream, write_stream):
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
