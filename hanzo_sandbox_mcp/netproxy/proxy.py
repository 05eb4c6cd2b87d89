"""The proxy server of one session: accept on the session's listening socket, detect the protocol, serve.

The listening socket is made by the session sandbox inside the session's network namespace and handed to
the server (SCM_RIGHTS): a socket stays in the namespace it was made in, so the commands reach it at their
own 127.0.0.1 while this code runs in the server, outside the sandbox, with the host's network. The first
byte picks the protocol: 5 is SOCKS5, 4 is SOCKS4 (refused: it cannot carry names), anything else HTTP.
"""

from __future__ import annotations

import logging
import socket

import anyio
from anyio.abc import SocketListener, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from ..policy import SandboxPolicy
from .decisions import DecisionLog
from .egress import Egress, EgressRules
from .http import serve_http
from .limits import ProxyLimits
from .relay import STREAM_GONE
from .socks import serve_socks5

__all__ = ["serve"]

_log = logging.getLogger("hanzo_sandbox_mcp.netproxy")
_SOCKS4_REJECTED = bytes((0, 0x5B, 0, 0, 0, 0, 0, 0))
_BUSY = b"HTTP/1.1 503 Too many connections through the sandbox proxy\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


async def serve(
    listener: socket.socket,
    policy: SandboxPolicy,
    *,
    session_tag: str,
    decisions: DecisionLog,
    limits: ProxyLimits | None = None,
) -> None:
    """Serve `listener` (a listening TCP socket; this takes it over and closes it) until cancelled.

    Every destination is checked against `policy`'s network keys; every decision goes to `decisions` under
    `session_tag`. At most `limits.max_connections` connections are served at once: more are answered with
    a 503 and closed at once, and counted as refusals.
    """
    limits = limits or ProxyLimits()
    egress = Egress(EgressRules.of(policy), limits, decisions, session_tag)
    open_connections = 0

    async def handle(stream: SocketStream) -> None:
        nonlocal open_connections
        try:
            async with stream:
                await _serve_one(stream, egress, limits)
        except Exception as exc:  # one connection's failure must never end the session's proxy
            if not _peer_gone(exc):
                _log.warning("session %s: proxy connection failed: %s: %s", session_tag, type(exc).__name__, exc)
        finally:
            open_connections -= 1

    server = await SocketListener.from_socket(listener)
    async with server, anyio.create_task_group() as group:
        while True:
            try:
                stream = await server.accept()
            except OSError as exc:  # EMFILE and the like: back off instead of spinning
                _log.warning("session %s: proxy accept failed: %s", session_tag, exc.strerror)
                await anyio.sleep(0.1)
                continue
            if open_connections >= limits.max_connections:
                egress.refuse("unknown", "*", 0, f"more than {limits.max_connections} connections open at once")
                await _turn_away(stream)
                continue
            open_connections += 1
            group.start_soon(handle, stream)


def _peer_gone(exc: BaseException) -> bool:
    """True when `exc` (or every exception of a group) only says that a peer went away."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_peer_gone(inner) for inner in exc.exceptions)
    return isinstance(exc, STREAM_GONE)


async def _turn_away(stream: SocketStream) -> None:
    """Answer 503 and close. A fresh connection's send buffer is empty, so the write returns at once; the
    deadline only keeps a broken peer from holding up the accept loop."""
    with anyio.move_on_after(1):
        try:
            await stream.send(_BUSY)
        except (*STREAM_GONE, OSError):
            pass
    await stream.aclose()


async def _serve_one(stream: SocketStream, egress: Egress, limits: ProxyLimits) -> None:
    reader = BufferedByteReceiveStream(stream)
    # One deadline from accept to a complete request, however the client spreads its bytes (slowloris).
    deadline = anyio.current_time() + limits.handshake_timeout_s
    try:
        with anyio.fail_after(limits.handshake_timeout_s):
            first = await reader.receive(limits.buffer_bytes)
    except (TimeoutError, *STREAM_GONE):
        return
    reader.feed_data(first)
    if first[0] == 5:
        await serve_socks5(reader, stream, egress, limits, deadline)
    elif first[0] == 4:
        egress.refuse("unknown", "?", 0, "SOCKS4 cannot carry host names; use socks5h://127.0.0.1:<port>")
        await stream.send(_SOCKS4_REJECTED)
    else:
        await serve_http(reader, stream, egress, limits, deadline)
