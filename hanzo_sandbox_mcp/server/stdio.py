"""The stdio transport: a bounded line reader that answers every line carrying an id, then the SDK's loop.

Why not the SDK's `stdio_server()`: its reader reads a line whole before any check (a 500 MB line took
1.96 GB), and a line its JSON parser refuses (a lone surrogate escape, a BOM, deep nesting) or that
matches no message shape (params as an array, a batch, an object or float id, which then passes as a
notification) is dropped without an answer, so the client waits forever.

Here a line longer than `max_line_bytes` is discarded as it streams (only its first and last 64 KiB are
kept, to find its id) and answered with -32600; every other line is classified by `jsonrpc.parse_message`
(the rules are there) and either reaches the server or gets its error replies. Responses are written one
per line; one the SDK cannot encode (a lone surrogate in a result) is written with the surrogate replaced,
never lost.

Seam: the SDK's low-level `Server.run(read_stream, write_stream, options)`, the entry its own transports
and its in-memory client use; nothing of the SDK is patched. `MCPServer` keeps that server in
`_lowlevel_server` (the SDK's client reads it the same way), the one private name used here.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.mcpserver import MCPServer
from mcp.shared.message import SessionMessage
from mcp_types import INVALID_REQUEST

from ..errors import ConfigError
from .jsonrpc import Outgoing, encode, error_reply, parse_message, recover_id

__all__ = ["LineSplitter", "Overlong", "check_std_streams", "read_line", "run_stdio", "stdio_transport"]

_log = logging.getLogger("hanzo_sandbox_mcp.server.stdio")

_EDGE_BYTES = 64 * 1024
_CHUNK_BYTES = 64 * 1024
_DRAIN_S = 5.0
_INLINE_PARSE_BYTES = 64 * 1024


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


# -- one line -> a message for the server, or error replies --------------------------------------------


def read_line(line: bytes | Overlong, max_line_bytes: int) -> SessionMessage | list[dict[str, Any]]:
    """Classify one line: a message for the server, or the error replies to write (maybe none)."""
    if isinstance(line, Overlong):
        return [
            error_reply(
                recover_id(line.head, line.tail),
                INVALID_REQUEST,
                f"Invalid request: the line is {line.size} bytes, over this server's {max_line_bytes}-byte "
                "limit (stdio.max_line_bytes); it was discarded. Send large data in smaller calls.",
            )
        ]
    return parse_message(line)


# -- the transport ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _claimed_std_fds() -> Iterator[tuple[int, int]]:
    """Private duplicates of fd 0 and 1 for the wire; fd 0 then reads /dev/null and fd 1 goes to stderr,
    so a stray print or an inherited descriptor never reaches the protocol stream. Best effort: when fd 0
    or 1 cannot be duplicated (closed at start), the wire is served from them in place."""
    try:
        wire_in = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    except OSError:
        yield 0, 1
        return
    try:
        wire_out = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    except OSError:
        yield wire_in, 1
        return
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


async def _chunks(fd: int) -> AsyncIterator[bytes]:
    """What arrives on `fd` until EOF; a read error counts as the end."""
    while True:
        try:
            chunk = await anyio.to_thread.run_sync(os.read, fd, _CHUNK_BYTES, abandon_on_cancel=True)
        except OSError as exc:
            _log.info("stdin unreadable, taken as its end: %s", exc.strerror)
            return
        if not chunk:
            return
        yield chunk


async def _classified(line: bytes | Overlong, max_line_bytes: int) -> SessionMessage | list[dict[str, Any]]:
    if isinstance(line, bytes) and len(line) > _INLINE_PARSE_BYTES:
        # A legal line can be 30 MiB: parse it off the event loop, which keeps serving the other calls.
        return await anyio.to_thread.run_sync(read_line, line, max_line_bytes)
    return read_line(line, max_line_bytes)


@asynccontextmanager
async def stdio_transport(
    max_line_bytes: int,
) -> AsyncIterator[tuple[MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[Outgoing]]]:
    """(read stream, write stream) for `Server.run` over the process's stdin and stdout (claimed). The read
    stream ends at EOF."""
    with _claimed_std_fds() as (wire_in, wire_out):
        to_server, from_client = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        to_wire, from_server = anyio.create_memory_object_stream[Outgoing](0)
        replies = to_wire.clone()

        async def deliver(line: bytes | Overlong) -> None:
            outcome = await _classified(line, max_line_bytes)
            if isinstance(outcome, SessionMessage):
                await to_server.send(outcome)
                return
            for reply in outcome:
                await replies.send(reply)

        async def reader() -> None:
            splitter = LineSplitter(max_line_bytes)
            async with to_server, replies:
                async for chunk in _chunks(wire_in):
                    for line in splitter.feed(chunk):
                        await deliver(line)
                if (last := splitter.close()) is not None:
                    await deliver(last)

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


def check_std_streams() -> None:
    """ConfigError when stdin or stdout was closed when the process started."""
    if sys.stdin is None or sys.stdout is None:
        # Python found fd 0 or 1 closed; another descriptor (the event loop's) may hold that number now.
        raise ConfigError("serve over stdio needs an open stdin and stdout (fd 0 or 1 is closed)")


async def run_stdio(server: MCPServer, max_line_bytes: int) -> None:
    """Serve `server` over stdin/stdout until EOF (`check_std_streams()` first)."""
    lowlevel = server._lowlevel_server  # see the module docstring: the SDK's own client reads it too
    async with stdio_transport(max_line_bytes) as (read_stream, write_stream):
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
