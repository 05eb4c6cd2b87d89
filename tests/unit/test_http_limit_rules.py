"""The pure rules of the HTTP limits: derived connection caps, Host parsing, id recovery, and token matching."""

from __future__ import annotations

import json

import pytest

from hanzo_sandbox_mcp.config import HttpSettings
from hanzo_sandbox_mcp.errors import ConfigError
from hanzo_sandbox_mcp.server.http import host_is_loopback
from hanzo_sandbox_mcp.server.http_body import MAX_REQUEST_BODY_BYTES, recover_request_id
from hanzo_sandbox_mcp.server.http_limits import ConnectionLimits
from hanzo_sandbox_mcp.server.http_tokens import TokenBook, TokenMatch
from hanzo_sandbox_mcp.service import MAX_CODE_BYTES, MAX_STDIN_BYTES

TOKEN = "a-configured-token-0123"


@pytest.mark.parametrize(
    ("fd_limit", "tokens", "expected"),
    [
        (1024, False, (512, 128, 0)),  # no tokens: nobody could claim a reserved place
        (1024, True, (512, 128, 64)),
        (20000, True, (4096, 512, 512)),  # at most 4096 by default, however many fds
        (20, True, (16, 16, 4)),  # never fewer than 16
    ],
)
def test_connection_caps_follow_the_fd_limit(fd_limit: int, tokens: bool, expected: tuple[int, int, int]) -> None:
    limits = ConnectionLimits.from_settings(HttpSettings(token=TOKEN if tokens else None), fd_limit)
    assert (limits.max_connections, limits.per_peer, limits.reserved) == expected


def test_configured_connection_caps_win() -> None:
    http = HttpSettings(token=TOKEN, max_connections=100, max_connections_per_peer=7, reserved_connections=9)
    limits = ConnectionLimits.from_settings(http, 1024)
    assert (limits.max_connections, limits.per_peer, limits.reserved) == (100, 7, 9)


def test_a_reserve_as_large_as_the_cap_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="reserved_connections"):
        ConnectionLimits.from_settings(HttpSettings(token=TOKEN, max_connections=16, reserved_connections=16), 1024)


def test_the_body_limit_fits_the_largest_legal_call_escaped_in_the_worst_way() -> None:
    worst = json.dumps({"code": "\x01" * MAX_CODE_BYTES, "stdin": "\x00" * MAX_STDIN_BYTES})
    assert len(worst) < MAX_REQUEST_BODY_BYTES
    assert HttpSettings().max_body_bytes_in_flight >= MAX_REQUEST_BODY_BYTES


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost:8765", True),
        ("LOCALHOST:8765", True),
        ("LocalHost", True),
        ("127.0.0.1:8765", True),
        ("127.1.2.3:8765", True),
        ("[::1]:8765", True),
        ("[::1]", True),
        ("localhost:evil.example", False),
        ("localhost:8766", False),
        ("localhost:", False),
        ("localhost:+8765", False),
        ("localhost:８７６５", False),  # fullwidth digits are not a port
        ("localhost.evil.example:8765", False),
        ("evil.example:8765", False),
        ("10.0.0.1:8765", False),
        ("[::1]evil:8765", False),
        ("[::2]:8765", False),
        ("[::1:8765", False),
        ("", False),
        (None, False),
    ],
)
def test_host_header_parsing(host: str | None, allowed: bool) -> None:
    assert host_is_loopback(host, 8765) is allowed


@pytest.mark.parametrize(
    ("prefix", "request_id"),
    [
        (b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":{"stdin":"xxxx', 7),
        (b'  {"jsonrpc": "2.0", "id": "req-1", "method": "tools/call", "params": {"a": "b', "req-1"),
        (b'{"method":"tools/call","params":{"id":5,"stdin":"xx', None),  # an id inside params is not the id
        (b'{"jsonrpc":"2.0","method":"x","params":{"a":"b"},"id":9}', 9),
        (b'{"jsonrpc":"2.0","id":true}', None),
        (b'{"jsonrpc":"2.0","id":1.5}', None),
        (b"[1, 2", None),
        (b"not json", None),
        (b"", None),
    ],
)
def test_recover_request_id(prefix: bytes, request_id: str | int | None) -> None:
    assert recover_request_id(prefix) == request_id


def test_token_book_names_the_client_whose_token_matched() -> None:
    http = HttpSettings(
        token=TOKEN,
        tokens=({"name": "ci", "token": "the-ci-token-0123456"},),  # type: ignore[arg-type]
    )
    book = TokenBook(http)
    assert book.match("Bearer the-ci-token-0123456") == TokenMatch("ci")
    assert book.match(f"bearer  {TOKEN}") == TokenMatch(None)
    assert book.match("Bearer the-ci-token-012345") is None
    assert book.match(f"Basic {TOKEN}") is None
    assert book.match(None) is None
    assert not TokenBook(HttpSettings())
