"""SOCKS5 (RFC 1928), CONNECT only, no authentication, destinations by name (`socks5h://`).

A client that resolves names itself sends an address (ATYP 1 or 4): that is an IP literal like any other,
refused unless listed, and it could not have resolved anything inside the sandbox anyway. BIND and UDP
ASSOCIATE are refused (reply 7): they would open the server to inbound traffic and to UDP.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple

import anyio
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from .egress import Egress, Failure, Refused
from .limits import ProxyLimits
from .relay import relay

__all__ = ["serve_socks5"]

_VERSION = 5
_NO_AUTH = 0
_NO_METHOD = 0xFF
_CONNECT = 1
_ATYP_V4, _ATYP_NAME, _ATYP_V6 = 1, 3, 4
_REPLY: dict[Failure, int] = {
    "policy": 2,  # connection not allowed by ruleset
    "unresolved": 4,  # host unreachable
    "unreachable": 3,  # network unreachable
    "refused": 5,  # connection refused
    "timeout": 6,  # TTL expired: the closest code for "timed out"
}
_CMD_NOT_SUPPORTED = 7
_ATYP_NOT_SUPPORTED = 8


class _Rejection(NamedTuple):
    code: int
    reason: str


def _reply(code: int) -> bytes:
    return bytes((_VERSION, code, 0, _ATYP_V4, 0, 0, 0, 0, 0, 0))


async def _request(reader: BufferedByteReceiveStream, client: SocketStream) -> tuple[str, int] | _Rejection:
    """The destination of the client's CONNECT request, or the reply code that refuses it and why."""
    version, count = await reader.receive_exactly(2)
    methods = await reader.receive_exactly(count)
    if version != _VERSION or _NO_AUTH not in methods:
        await client.send(bytes((_VERSION, _NO_METHOD)))
        return _Rejection(_NO_METHOD, "SOCKS5 without authentication is the only method offered")
    await client.send(bytes((_VERSION, _NO_AUTH)))
    version, command, _, atyp = await reader.receive_exactly(4)
    if atyp == _ATYP_V4:
        host = str(IPv4Address(await reader.receive_exactly(4)))
    elif atyp == _ATYP_V6:
        host = str(IPv6Address(await reader.receive_exactly(16)))
    elif atyp == _ATYP_NAME:
        (length,) = await reader.receive_exactly(1)
        host = (await reader.receive_exactly(length)).decode("utf-8", errors="replace")
    else:
        return _Rejection(_ATYP_NOT_SUPPORTED, f"SOCKS5 address type {atyp} does not exist")
    (port,) = struct.unpack("!H", await reader.receive_exactly(2))
    if command != _CONNECT:
        return _Rejection(_CMD_NOT_SUPPORTED, f"SOCKS5 command {command} refused: only CONNECT (1) is supported")
    return host, port


async def serve_socks5(
    reader: BufferedByteReceiveStream, client: SocketStream, egress: Egress, limits: ProxyLimits, deadline: float
) -> None:
    """One SOCKS5 connection: the handshake by `deadline` (anyio's clock), then the tunnel."""
    try:
        with anyio.fail_after(deadline - anyio.current_time()):
            request = await _request(reader, client)
    except (TimeoutError, anyio.IncompleteRead, anyio.EndOfStream):
        return  # a client that gives up (or stalls) during the handshake gets nothing more
    if isinstance(request, _Rejection):  # refused before a destination was named
        egress.refuse("socks5", "?", 0, request.reason)
        if request.code != _NO_METHOD:  # that one was answered in the method negotiation
            await client.send(_reply(request.code))
        return
    host, port = request
    try:
        upstream = await egress.open("socks5", host, port)
    except Refused as exc:
        await client.send(_reply(_REPLY[exc.failure]))
        return
    async with upstream:
        await client.send(_reply(0))
        await relay(reader, client, upstream, buffer_bytes=limits.buffer_bytes, idle_timeout_s=limits.idle_timeout_s)
