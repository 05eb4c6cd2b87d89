"""The blind byte relay of a tunnel (CONNECT, SOCKS5): fixed-size buffers, half-close, one idle deadline.

Each direction reads at most `buffer_bytes` and writes it out before reading again, so a fast sender and a
slow receiver meet TCP's flow control instead of the server's memory. The idle deadline counts bytes in
either direction: a download streams one way for minutes while the other side stays silent.
"""

from __future__ import annotations

import anyio
from anyio.abc import ByteReceiveStream, SocketStream

__all__ = ["STREAM_GONE", "relay"]

#: What a stream raises when its peer is gone or it was closed: the end of a connection, not a fault.
STREAM_GONE = (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, anyio.ClosedResourceError)


class _Activity:
    def __init__(self) -> None:
        self.last = anyio.current_time()


async def _pump(source: ByteReceiveStream, sink: SocketStream, buffer_bytes: int, activity: _Activity) -> None:
    try:
        while True:
            chunk = await source.receive(buffer_bytes)
            activity.last = anyio.current_time()
            await sink.send(chunk)
    except STREAM_GONE:
        pass
    try:
        await sink.send_eof()  # half-close: the other direction may still be answering
    except STREAM_GONE:
        pass


async def _watch(scope: anyio.CancelScope, activity: _Activity, idle_timeout_s: float) -> None:
    while (left := activity.last + idle_timeout_s - anyio.current_time()) > 0:
        await anyio.sleep(left)
    scope.cancel()


async def relay(
    client_in: ByteReceiveStream,
    client: SocketStream,
    upstream: SocketStream,
    *,
    buffer_bytes: int,
    idle_timeout_s: float,
) -> None:
    """Copy bytes both ways until both sides have finished or nothing moved for `idle_timeout_s`.

    `client_in` is the client's receive side (a buffered reader may hold bytes already read past a request).
    """
    activity = _Activity()
    async with anyio.create_task_group() as group:
        group.start_soon(_watch, group.cancel_scope, activity, idle_timeout_s)
        async with anyio.create_task_group() as pumps:
            pumps.start_soon(_pump, client_in, upstream, buffer_bytes, activity)
            pumps.start_soon(_pump, upstream, client, buffer_bytes, activity)
        group.cancel_scope.cancel()
