"""Half-open connections cannot lock clients out: the real `serve --transport http` process under a 1,024-fd
limit, flooded with 1,100 connections that send a request line and one header, then nothing.

Before the guard, such a flood held every fd: new clients waited forever and a running call failed with
EMFILE. Now the ordinary connection places fill up, the rest are refused at once, a client with a token
still gets in through the reserve (or, without tokens, a client from another address through the per-peer
cap), and every half-open connection is closed at its header deadline.
"""

from __future__ import annotations

import resource
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from support.http_process import ServerProcess, http_server_process

pytestmark = pytest.mark.anyio
Kit = Any

FD_LIMIT = 1024
HALF_OPEN = 1100
#: One peer's flood: well past its 128 places, and quick to make, so it all still stands when checked.
PEER_FLOOD = 400
#: Long enough that the flood still stands while the real client is served (1,100 connections took over
#: 15 s on a loaded 2-core machine, and the first ones were closed before the check), short for a test.
HEADER_TIMEOUT_S = 40.0
TOKEN = "slowloris-test-token-" + "z" * 16
ATTACKER_ADDRESSES = [f"127.0.0.{n}" for n in range(10, 30)]
CLIENT_ADDRESS = "127.0.0.3"


@pytest.fixture(autouse=True)
def _room_for_the_flood() -> Iterator[None]:
    """This test process holds the whole flood: raise its own soft fd limit (restored afterwards)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = HALF_OPEN + 256
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"the flood needs {need} fds in the test process, but its hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _half_open(port: int, count: int, sources: list[str]) -> list[socket.socket]:
    """`count` connections to 127.0.0.1:port (from `sources` in turn) that each send an unfinished request."""
    head = f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode()
    held: list[socket.socket] = []
    for n in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(10)
        try:
            sock.bind((sources[n % len(sources)], 0))
            sock.connect(("127.0.0.1", port))
            sock.sendall(head)
        except OSError:  # refused at once (reset before the send): that is a closed one already
            sock.close()
            continue
        held.append(sock)
    return held


def _wait_all_closed(sockets: list[socket.socket], timeout: float) -> list[socket.socket]:
    """Poll (bounded by `timeout`) until the server has closed every socket; the ones left open."""
    deadline = time.monotonic() + timeout
    left = list(sockets)
    while left and time.monotonic() < deadline:
        left = _still_open(left)
        if left:
            time.sleep(0.2)
    return left


def _still_open(sockets: list[socket.socket]) -> list[socket.socket]:
    """The sockets the server has not closed: nothing to read, no EOF, no reset (poll: fds above 1,024)."""
    poller = select.poll()
    by_fd = {sock.fileno(): sock for sock in sockets}
    for fd in by_fd:
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    closed = set()
    for fd, _event in poller.poll(0):
        sock = by_fd[fd]
        try:
            while sock.recv(65536):  # a 408 or 503 first, then EOF
                pass
        except OSError:  # reset
            pass
        closed.add(fd)
    return [sock for fd, sock in by_fd.items() if fd not in closed]


def _refused_at_once(port: int, source: str) -> bytes:
    """What the server answers a fresh connection from `source` that sends a whole request without a token.

    A connection refused outright is answered before it sends anything (read that first: sending to a
    closed connection would reset it and drop the answer); one let in on probation is answered after its
    request.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0)) as sock:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        if not poller.poll(2000):
            sock.sendall(f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    return answer


def _config(kit: Kit, tmp_path: Path, sessions_parent: Path) -> Path:
    config = tmp_path / "config.toml"
    http = {"header_timeout_s": HEADER_TIMEOUT_S}
    layers = kit.merged(kit.BASE_CONFIG, {"sessions": {"root": str(sessions_parent)}, "http": http})
    config.write_text(kit.to_toml(layers))
    return config


async def _flood(server: ServerProcess, sources: list[str], count: int = HALF_OPEN) -> list[socket.socket]:
    with anyio.fail_after(120):
        return await anyio.to_thread.run_sync(_half_open, server.port, count, sources)


async def _assert_flood_closed(server: ServerProcess, held: list[socket.socket]) -> None:
    try:
        left = await anyio.to_thread.run_sync(_wait_all_closed, held, HEADER_TIMEOUT_S + 60)
        assert left == [], f"{len(left)} half-open connections were never closed"
        assert server.process.poll() is None, server.stderr_text()
        assert "Too many open files" not in server.stderr_text()
    finally:
        for sock in held:
            sock.close()


async def test_half_open_flood_does_not_lock_out_a_client_with_a_token(
    kit: Kit, tmp_path: Path, sessions_parent: Path
) -> None:
    config = _config(kit, tmp_path, sessions_parent)
    auth = {"authorization": f"Bearer {TOKEN}"}
    env = kit.child_env(tmp_path, HANZO_SANDBOX_TOKEN=TOKEN)
    with http_server_process(config, env=env, cwd=kit.REPO_ROOT, nofile=FD_LIMIT) as server:
        await server.wait_until_serving(auth)
        held = await _flood(server, ATTACKER_ADDRESSES)
        # The flood takes every ordinary place (half the 1,024 fds go to connections, an eighth of those
        # kept in reserve), so a fresh connection without a token is turned away, with a JSON-RPC 503,
        answer = await anyio.to_thread.run_sync(_refused_at_once, server.port, "127.0.0.250")
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        assert b'"jsonrpc": "2.0"' in answer
        # ... while a real client with the token is served through the reserve, its command run in full.
        assert await server.echo("served", auth) == "served\n"
        await _assert_flood_closed(server, held)
        assert await server.echo("still-served", auth) == "still-served\n"


async def test_half_open_flood_from_one_peer_does_not_lock_out_other_peers(
    kit: Kit, tmp_path: Path, sessions_parent: Path
) -> None:
    config = _config(kit, tmp_path, sessions_parent)
    with http_server_process(config, env=kit.child_env(tmp_path), cwd=kit.REPO_ROOT, nofile=FD_LIMIT) as server:
        await server.wait_until_serving()
        held = await _flood(server, ["127.0.0.2"], PEER_FLOOD)
        # The peer's own fresh connections are refused at once (its share of places is taken) ...
        answer = await anyio.to_thread.run_sync(_refused_at_once, server.port, "127.0.0.2")
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        # ... and a client from another address is served while the flood stands.
        assert await server.echo("served", local_address=CLIENT_ADDRESS) == "served\n"
        await _assert_flood_closed(server, held)
