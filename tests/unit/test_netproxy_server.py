"""The proxy's protocol edges and bounds, spoken byte by byte over real sockets to a local origin.

Each refusal has its control in the same test or the one before it: the well-formed request through the
same proxy to the same origin succeeds.
"""

from __future__ import annotations

import hashlib
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.origins import RunningProxy, StaticOrigin, running_proxy

from hanzo_sandbox_mcp.netproxy.limits import ProxyLimits
from hanzo_sandbox_mcp.policy import SandboxPolicy

WAIT_S = 20


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticOrigin]:
    root = tmp_path_factory.mktemp("www")
    (root / "index.html").write_text("hello")
    with StaticOrigin(root) as served:
        yield served


def _policy(origin: StaticOrigin, **overrides: object) -> SandboxPolicy:
    fields: dict[str, object] = {
        "network": "allowlist",
        "allowed_domains": ["origin.test", "localhost"],
        "allowed_ports": [origin.port],
        "allowed_private_cidrs": ["127.0.0.0/8"],
        "proxy_hosts": {"origin.test": "127.0.0.1"},
    }
    return SandboxPolicy.model_validate({**fields, **overrides})


@pytest.fixture(scope="module")
def proxy(origin: StaticOrigin) -> Iterator[RunningProxy]:
    limits = ProxyLimits(max_connections=4, handshake_timeout_s=2, idle_timeout_s=2, max_header_bytes=4096)
    with running_proxy(_policy(origin), limits) as running:
        yield running


def _connect(proxy: RunningProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT_S)
    sock.settimeout(WAIT_S)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _exchange(proxy: RunningProxy, request: bytes) -> bytes:
    with _connect(proxy) as sock:
        sock.sendall(request)
        return _read_all(sock)


def _get(origin: StaticOrigin, extra: bytes = b"") -> bytes:
    target = f"http://origin.test:{origin.port}/"
    return f"GET {target} HTTP/1.1\r\nHost: origin.test:{origin.port}\r\n".encode() + extra + b"\r\n"


def test_plain_http_is_forwarded_once_and_the_connection_closes(proxy: RunningProxy, origin: StaticOrigin) -> None:
    answer = _exchange(proxy, _get(origin) * 2)  # a pipelined second request is not served
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello")
    assert answer.count(b"HTTP/1.1") == 1
    assert b"connection: close" in answer.lower()


def test_hop_by_hop_headers_do_not_reach_the_origin(proxy: RunningProxy, origin: StaticOrigin) -> None:
    # The origin would refuse an Upgrade it cannot do; removed, the request is a plain GET again.
    extra = b"Proxy-Authorization: Basic c2VjcmV0\r\nConnection: upgrade, x-private\r\nUpgrade: h2c\r\nX-Private: 1\r\n"
    assert _exchange(proxy, _get(origin, extra)).startswith(b"HTTP/1.1 200")


def test_request_bodies_reach_the_origin_whole(proxy: RunningProxy, origin: StaticOrigin) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, more than one relay buffer
    head = f"POST http://origin.test:{origin.port}/ HTTP/1.1\r\nHost: origin.test:{origin.port}\r\n"
    answer = _exchange(proxy, head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert answer.endswith(f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode())


@pytest.mark.parametrize(
    ("request_bytes", "status", "words"),
    [
        (b"GET / HTTP/1.1\r\nHost: origin.test\r\n\r\n", b"400", b"absolute URI"),
        (b"GET https://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n", b"400", b"use CONNECT"),
        (b"GET http://user:pw@origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n", b"400", b"credentials"),
        (b"CONNECT origin.test HTTP/1.1\r\nHost: origin.test\r\n\r\n", b"400", b"no port"),
        (b"CONNECT ::1:443 HTTP/1.1\r\nHost: x\r\n\r\n", b"400", b"brackets"),
        (b"GET http://origin.test/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"400", b"multiple Host"),
        # Request smuggling: both framings at once is refused, not guessed at.
        (
            b"POST http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"400",
            b"both Content-Length and Transfer-Encoding",
        ),
        (b"GET http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\nX: " + b"a" * 8192 + b"\r\n\r\n", b"431", b""),
    ],
)
def test_malformed_requests_get_a_clear_error(
    proxy: RunningProxy, origin: StaticOrigin, request_bytes: bytes, status: bytes, words: bytes
) -> None:
    assert _exchange(proxy, _get(origin)).startswith(b"HTTP/1.1 200")  # control
    answer = _exchange(proxy, request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status), answer
    assert words in answer


def test_a_stalled_request_head_gets_408(proxy: RunningProxy, origin: StaticOrigin) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"GET http://origin.test/ HTTP/1.1\r\n")  # and never the rest
        assert _read_all(sock).startswith(b"HTTP/1.1 408")


def test_an_idle_tunnel_is_closed(proxy: RunningProxy, origin: StaticOrigin) -> None:
    with _connect(proxy) as sock:
        sock.sendall(f"CONNECT origin.test:{origin.port} HTTP/1.1\r\nHost: origin.test\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 Connection established\r\n\r\n")
        assert _read_all(sock) == b""  # nobody speaks: closed after idle_timeout_s


def test_connections_beyond_the_limit_are_turned_away(origin: StaticOrigin) -> None:
    with running_proxy(_policy(origin), ProxyLimits(max_connections=2)) as proxy:
        held = [_connect(proxy) for _ in range(2)]
        try:
            for sock in held:  # each one is being served (mid-handshake), so both slots are taken
                sock.sendall(b"\x05\x01\x00")
                assert sock.recv(2) == b"\x05\x00"
            assert _exchange(proxy, _get(origin)).startswith(b"HTTP/1.1 503")
        finally:
            for sock in held:
                sock.close()
        assert any("more than 2 connections" in why for _, _, why in proxy.take_denied())


def _socks(proxy: RunningProxy, request: bytes, methods: bytes = b"\x00") -> tuple[bytes, socket.socket]:
    sock = _connect(proxy)
    sock.sendall(b"\x05" + bytes([len(methods)]) + methods)
    greeting = sock.recv(2)
    if greeting == b"\x05\x00":
        sock.sendall(request)
        return sock.recv(10), sock
    return greeting, sock


def _socks_name(command: int, name: bytes, port: int) -> bytes:
    return bytes((5, command, 0, 3, len(name))) + name + struct.pack("!H", port)


def test_socks5_connects_by_name_and_refuses_other_commands(proxy: RunningProxy, origin: StaticOrigin) -> None:
    reply, sock = _socks(proxy, _socks_name(1, b"origin.test", origin.port))
    with sock:
        assert reply[:2] == b"\x05\x00"  # control: CONNECT by name
        sock.sendall(f"GET / HTTP/1.0\r\nHost: origin.test:{origin.port}\r\n\r\n".encode())
        assert _read_all(sock).endswith(b"hello")
    for command in (2, 3):  # BIND, UDP ASSOCIATE
        reply, sock = _socks(proxy, _socks_name(command, b"origin.test", origin.port))
        sock.close()
        assert reply[:2] == b"\x05\x07"
    reply, sock = _socks(proxy, _socks_name(1, b"unlisted.test", origin.port))
    sock.close()
    assert reply[:2] == b"\x05\x02"  # not allowed by the ruleset


def test_socks5_without_the_no_auth_method_is_refused(proxy: RunningProxy) -> None:
    reply, sock = _socks(proxy, b"", methods=b"\x02")  # username/password only
    sock.close()
    assert reply == b"\x05\xff"


def test_socks4_is_refused_because_it_cannot_carry_names(proxy: RunningProxy, origin: StaticOrigin) -> None:
    request = b"\x04\x01" + struct.pack("!H", origin.port) + socket.inet_aton("127.0.0.1") + b"\x00"
    assert _exchange(proxy, request)[:2] == b"\x00\x5b"


def test_dns_answers_are_checked_like_proxy_hosts(origin: StaticOrigin, tmp_path: Path) -> None:
    try:
        answers = {info[4][0] for info in socket.getaddrinfo("localhost", origin.port, type=socket.SOCK_STREAM)}
    except OSError:
        pytest.skip("localhost does not resolve on this machine")
    if answers != {"127.0.0.1"}:
        pytest.skip(f"localhost resolves to {sorted(answers)} here, not 127.0.0.1 alone")
    request = f"GET http://localhost:{origin.port}/ HTTP/1.1\r\nHost: localhost:{origin.port}\r\n\r\n".encode()
    with running_proxy(_policy(origin)) as allowing:  # control: the resolver's answer is in a listed range
        assert _exchange(allowing, request).startswith(b"HTTP/1.1 200")
    with running_proxy(_policy(origin, allowed_private_cidrs=[])) as strict:
        assert _exchange(strict, request).startswith(b"HTTP/1.1 403")
        assert any("127.0.0.1 is a loopback address" in why for _, _, why in strict.take_denied())


class _UntilEof(socketserver.BaseRequestHandler):
    """Answers only after the client's end of the stream: the size of what it received."""

    def handle(self) -> None:
        total = 0
        while chunk := self.request.recv(65536):
            total += len(chunk)
        self.request.sendall(f"got {total}".encode())


def test_a_tunnel_passes_the_clients_half_close_and_still_carries_the_answer(tmp_path: Path) -> None:
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _UntilEof) as server:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        port = server.server_address[1]
        policy = SandboxPolicy.model_validate(
            {
                "network": "allowlist",
                "allowed_domains": ["eof.test"],
                "allowed_ports": [port],
                "allowed_private_cidrs": ["127.0.0.0/8"],
                "proxy_hosts": {"eof.test": "127.0.0.1"},
            }
        )
        try:
            with running_proxy(policy) as proxy, _connect(proxy) as sock:
                sock.sendall(f"CONNECT eof.test:{port} HTTP/1.1\r\nHost: eof.test\r\n\r\n".encode() + b"x" * 300_000)
                assert sock.recv(39) == b"HTTP/1.1 200 Connection established\r\n\r\n"
                sock.shutdown(socket.SHUT_WR)  # the origin answers only once it sees this end of stream
                assert _read_all(sock) == b"got 300000"
        finally:
            server.shutdown()


def test_ipv6_origins_pass_only_with_their_range_listed(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("hello over ipv6")
    try:
        origin = StaticOrigin(tmp_path, bind="::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with origin:
        fields = {
            "network": "allowlist",
            "allowed_domains": ["v6.test"],
            "allowed_ports": [origin.port],
            "proxy_hosts": {"v6.test": "::1"},
        }
        request = f"GET http://v6.test:{origin.port}/ HTTP/1.1\r\nHost: v6.test:{origin.port}\r\n\r\n".encode()
        listed = SandboxPolicy.model_validate({**fields, "allowed_private_cidrs": ["::1/128"]})
        with running_proxy(listed) as proxy:  # control
            assert _exchange(proxy, request).endswith(b"hello over ipv6")
        with running_proxy(SandboxPolicy.model_validate(fields)) as proxy:
            assert _exchange(proxy, request).startswith(b"HTTP/1.1 403")
            assert any("::1 is a loopback address" in why for _, _, why in proxy.take_denied())
