"""The HTTP side of the proxy: `CONNECT host:port` tunnels and plain HTTP requests with an absolute URI.

h11 parses both ends, so the request that is checked is the request that is forwarded: one parser, strict
framing (a request with both Content-Length and Transfer-Encoding is refused, not guessed at), heads capped at
`max_header_bytes`. A plain request goes to the origin with its hop-by-hop headers removed and `Connection:
close`; the proxy serves one request per client connection and says so in its response (`Connection:
close`), which every HTTP client handles by opening a new connection for the next request. Refusals carry
their reason in the status line too: pip's warnings and urllib's errors quote that line, so the model reads why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import anyio
import h11
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from .allowlist import HostError, parse_host
from .egress import Egress, Failure, Refused
from .limits import ProxyLimits
from .relay import STREAM_GONE, relay

__all__ = ["serve_http"]

_STATUS: dict[Failure, int] = {"policy": 403, "unresolved": 502, "unreachable": 502, "refused": 502, "timeout": 504}
#: Hop-by-hop headers (RFC 9110 7.6.1) and the proxy's own; framing headers stay, h11 frames both sides alike.
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate", b"proxy-authorization", b"te"}
    | {b"trailer", b"upgrade"}
)
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True, slots=True)
class _Client:
    """The client's end of one proxy connection: its h11 state, its buffered receive side, its stream."""

    conn: h11.Connection
    reader: BufferedByteReceiveStream
    stream: SocketStream


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def _next_event(
    conn: h11.Connection, reader: BufferedByteReceiveStream, buffer_bytes: int, idle_timeout_s: float | None = None
) -> object:
    """The next h11 event, reading (at most `buffer_bytes` at a time) only when h11 needs more."""
    while (event := conn.next_event()) is h11.NEED_DATA:
        try:
            with anyio.fail_after(idle_timeout_s):
                data = await reader.receive(buffer_bytes)
        except anyio.EndOfStream:
            data = b""
        conn.receive_data(data)
    return event


async def _send(conn: h11.Connection, stream: SocketStream, event: h11.Event) -> None:
    if data := conn.send(event):
        await stream.send(data)


async def _reply_error(conn: h11.Connection, client: SocketStream, status: int, reason: str) -> None:
    """A short text/plain error with the reason in the status line and the body, then the connection ends."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return  # a response is already under way: closing is the only signal left
    phrase = _UNPRINTABLE.sub("?", f"Refused by the sandbox proxy: {reason}")[:300]
    body = f"hanzo-sandbox-mcp proxy: {reason}\n".encode()
    headers = [
        ("content-type", "text/plain; charset=utf-8"),
        ("content-length", str(len(body))),
        ("connection", "close"),
    ]
    try:
        await _send(conn, client, h11.Response(status_code=status, headers=headers, reason=phrase.encode()))
        await _send(conn, client, h11.Data(data=body))
        await _send(conn, client, h11.EndOfMessage())
    except (*STREAM_GONE, h11.LocalProtocolError):
        pass


def _authority(text: str, default_port: int | None) -> tuple[str, int]:
    """`host[:port]` or `[v6][:port]` -> (host, port); _BadRequest when malformed."""
    if "@" in text:
        raise _BadRequest(400, "credentials in the request target are not forwarded; send an Authorization header")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise _BadRequest(400, f"{text!r} is not a valid host and port")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        raise _BadRequest(400, f"{text!r}: write an IPv6 address in brackets, as in [2001:db8::1]:443")
    else:
        host, port_text = text, None
    if port_text is None:
        if default_port is None:
            raise _BadRequest(400, f"{text!r} has no port: CONNECT needs host:port")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _BadRequest(400, f"{text!r} does not end in a port number from 1 to 65535")
    return host, int(port_text)


def _split_absolute(target: str) -> tuple[str, str]:
    """`http://authority/path?query` -> (authority, origin-form path)."""
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() != "http":
        if target.startswith("/"):
            raise _BadRequest(400, "this is a proxy: send the absolute URI (http://host/path), or CONNECT for TLS")
        raise _BadRequest(400, f"only http:// URIs are forwarded (use CONNECT for https), not {scheme!r}")
    end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    path = rest[end:].partition("#")[0]
    return rest[:end], path if path.startswith("/") else "/" + path


def _same_host(header: str, host: str, port: int) -> bool:
    try:
        named, named_port = _authority(header, 80)
        return parse_host(named) == parse_host(host) and named_port == port
    except (_BadRequest, HostError):
        return False


def _forwarded_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The end-to-end headers: hop-by-hop ones and those the Connection header names are dropped."""
    pairs = list(headers)
    named = {token.strip().lower() for name, value in pairs if name == b"connection" for token in value.split(b",")}
    return [(name, value) for name, value in pairs if name not in _HOP_BY_HOP and name not in named]


async def serve_http(
    reader: BufferedByteReceiveStream, client: SocketStream, egress: Egress, limits: ProxyLimits, deadline: float
) -> None:
    """One client connection: its first request (CONNECT or absolute URI) by `deadline` (anyio's clock), then
    the tunnel or the response."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
    try:
        with anyio.fail_after(deadline - anyio.current_time()):
            request = await _next_event(conn, reader, limits.buffer_bytes)
    except TimeoutError:
        await _reply_error(conn, client, 408, "the request head did not arrive in time")
        return
    except h11.RemoteProtocolError as exc:
        await _reply_error(conn, client, exc.error_status_hint, f"malformed request: {exc}")
        return
    if not isinstance(request, h11.Request):
        return
    # h11 caps only a head that is still incomplete; one read can bring a whole, larger one.
    if (
        len(request.target) + sum(len(name) + len(value) + 4 for name, value in request.headers)
        > limits.max_header_bytes
    ):
        await _reply_error(conn, client, 431, f"the request head is larger than {limits.max_header_bytes} bytes")
        return
    try:
        peer = _Client(conn, reader, client)
        if request.method == b"CONNECT":
            await _tunnel(peer, request, egress, limits)
        else:
            await _forward(peer, request, egress, limits)
    except _BadRequest as exc:
        egress.refuse("connect" if request.method == b"CONNECT" else "http", "?", 0, exc.reason)
        await _reply_error(conn, client, exc.status, exc.reason)
    except Refused as exc:
        await _reply_error(conn, client, _STATUS[exc.failure], exc.reason)


async def _tunnel(client: _Client, request: h11.Request, egress: Egress, limits: ProxyLimits) -> None:
    host, port = _authority(request.target.decode("ascii"), None)
    upstream = await egress.open("connect", host, port)
    async with upstream:
        established = h11.Response(status_code=200, headers=[], reason=b"Connection established")
        await _send(client.conn, client.stream, established)
        early, _ = client.conn.trailing_data  # a client may send its TLS hello before reading the 200
        if early:
            await upstream.send(bytes(early))
        await relay(
            client.reader,
            client.stream,
            upstream,
            buffer_bytes=limits.buffer_bytes,
            idle_timeout_s=limits.idle_timeout_s,
        )


async def _forward(client: _Client, request: h11.Request, egress: Egress, limits: ProxyLimits) -> None:
    authority, path = _split_absolute(request.target.decode("ascii"))
    host, port = _authority(authority, 80)
    names = {name for name, _ in request.headers}
    if b"content-length" in names and b"transfer-encoding" in names:
        # Two framings: the origin might read the body's end elsewhere than h11 did (request smuggling).
        raise _BadRequest(400, "the request has both Content-Length and Transfer-Encoding; send one")
    hosts = [value.decode("latin-1") for name, value in request.headers if name == b"host"]  # h11: at most one
    if hosts and not _same_host(hosts[0], host, port):
        # A Host that disagrees with the target is how a request for an allowed name reaches another site
        # behind the same address (virtual hosting, CDNs): refused, never rewritten.
        raise egress.refuse("http", host, port, f"the Host header {hosts[0]!r} does not match the target {authority!r}")
    upstream = await egress.open("http", host, port)
    async with upstream:
        origin = h11.Connection(h11.CLIENT, max_incomplete_event_size=limits.max_header_bytes)
        headers = _forwarded_headers(request.headers)
        if not hosts:
            headers.insert(0, (b"host", authority.encode("ascii")))
        headers.append((b"connection", b"close"))
        await _send(origin, upstream, h11.Request(method=request.method, target=path.encode("ascii"), headers=headers))
        origin_reader = BufferedByteReceiveStream(upstream)
        async with anyio.create_task_group() as group:
            group.start_soon(_request_body, client, origin, upstream, limits)
            await _response(origin, origin_reader, client, limits)
            group.cancel_scope.cancel()


async def _request_body(client: _Client, origin: h11.Connection, upstream: SocketStream, limits: ProxyLimits) -> None:
    """The client's request body, as h11 frames it, to the origin."""
    try:
        while True:
            event = await _next_event(client.conn, client.reader, limits.buffer_bytes, limits.idle_timeout_s)
            if isinstance(event, h11.Data):
                await _send(origin, upstream, h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await _send(origin, upstream, h11.EndOfMessage())
                return
            else:
                return
    except (*STREAM_GONE, TimeoutError, h11.ProtocolError):
        return  # the response side notices: the origin never gets a complete request


async def _response(
    origin: h11.Connection, origin_reader: BufferedByteReceiveStream, client: _Client, limits: ProxyLimits
) -> None:
    """The origin's response, hop-by-hop headers removed, to the client."""
    while True:
        try:
            event = await _next_event(origin, origin_reader, limits.buffer_bytes, limits.idle_timeout_s)
        except TimeoutError:
            await _reply_error(client.conn, client.stream, 504, "the origin did not answer in time")
            return
        except h11.RemoteProtocolError as exc:
            await _reply_error(client.conn, client.stream, 502, f"the origin's response is malformed: {exc}")
            return
        if isinstance(event, h11.InformationalResponse):
            if event.status_code != 101:  # no protocol switch: Upgrade was not forwarded
                await _send(client.conn, client.stream, event)
        elif isinstance(event, h11.Response):
            headers = [*_forwarded_headers(event.headers), (b"connection", b"close")]
            if any(name == b"transfer-encoding" for name, _ in headers):  # it overrides a length (RFC 9112 6.3)
                headers = [(name, value) for name, value in headers if name != b"content-length"]
            await _send(
                client.conn,
                client.stream,
                h11.Response(status_code=event.status_code, headers=headers, reason=event.reason),
            )
        elif isinstance(event, h11.Data):
            await _send(client.conn, client.stream, h11.Data(data=event.data))
        elif isinstance(event, h11.EndOfMessage):
            await _send(client.conn, client.stream, h11.EndOfMessage())
            return
        else:
            return
