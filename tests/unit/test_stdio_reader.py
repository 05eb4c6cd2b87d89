"""The stdio reader's pure parts: bounded line splitting, and the answer each kind of bad line gets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp.shared.message import SessionMessage
from mcp_types import JSONRPCRequest, JSONRPCResponse, TextContent

from hanzo_sandbox_mcp.config import StdioSettings
from hanzo_sandbox_mcp.server.jsonrpc import MAX_DEPTH, encode
from hanzo_sandbox_mcp.server.stdio import LineSplitter, Overlong, read_line
from hanzo_sandbox_mcp.service import MAX_CODE_BYTES, MAX_STDIN_BYTES

CAP = 1024


def _one_error(line: bytes) -> dict[str, Any]:
    outcome = read_line(line, CAP)
    assert isinstance(outcome, list) and len(outcome) == 1, outcome
    return outcome[0]


@given(st.lists(st.binary(max_size=3 * CAP).filter(lambda b: b"\n" not in b), max_size=6), st.integers(1, 4000))
def test_the_splitter_gives_each_line_or_its_size_whatever_the_chunking(lines: list[bytes], chunk: int) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    splitter = LineSplitter(CAP)
    out: list[bytes | Overlong] = []
    for start in range(0, len(stream), chunk):
        out.extend(splitter.feed(stream[start : start + chunk]))
    assert splitter.close() is None
    assert len(out) == len(lines)
    for line, got in zip(lines, out, strict=True):
        if len(line) <= CAP:
            assert got == line
        else:
            assert isinstance(got, Overlong) and got.size == len(line)
            assert line.startswith(got.head) and line.endswith(got.tail)


def test_the_splitter_never_holds_more_than_the_cap_plus_a_chunk() -> None:
    splitter = LineSplitter(CAP)
    for _ in range(1000):
        assert splitter.feed(b"x" * 4096) == []
        assert len(splitter._line) <= CAP + 4096 and len(splitter._tail) <= 64 * 1024
    (last,) = splitter.feed(b"\n")
    assert isinstance(last, Overlong) and last.size == 4096 * 1000


def test_a_last_line_without_a_newline_is_read() -> None:
    splitter = LineSplitter(CAP)
    assert splitter.feed(b'{"a":1}') == []
    assert splitter.close() == b'{"a":1}'


def test_a_good_request_goes_to_the_server_even_with_a_bom_and_crlf() -> None:
    outcome = read_line(b'\xef\xbb\xbf{"jsonrpc":"2.0","id":5,"method":"ping"}\r', CAP)
    assert isinstance(outcome, SessionMessage) and isinstance(outcome.message, JSONRPCRequest)
    assert outcome.message.id == 5


def test_a_lone_surrogate_reaches_the_server_as_a_lone_surrogate() -> None:
    line = b'{"jsonrpc":"2.0","id":"a","method":"tools/call",'
    line += b'"params":{"name":"run_command","arguments":{"command":"\\ud800"}}}'
    outcome = read_line(line, CAP)
    assert isinstance(outcome, SessionMessage) and isinstance(outcome.message, JSONRPCRequest)
    assert outcome.message.params is not None and outcome.message.params["arguments"]["command"] == "\ud800"


@pytest.mark.parametrize(
    ("line", "code", "request_id", "words"),
    [
        (b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":[1]}', -32600, 3, "params"),
        (b'{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}', -32600, None, "id must be"),
        (b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}', -32600, 1.5, "id must be"),
        (b'{"jsonrpc":"2.0","id":null,"method":"ping"}', -32600, None, "id must be"),
        (b'{"jsonrpc":"2.0","id":true,"method":"ping"}', -32600, None, "id must be"),
        (b'{"jsonrpc":"1.0","id":4,"method":"ping"}', -32600, 4, "2.0"),
        (b'{"jsonrpc":"2.0","id":4}', -32600, 4, "method"),
        (b"17", -32600, None, "object"),
        (b"[]", -32600, None, "batch"),
        (b'{"jsonrpc":"2.0","id":8,"method":"ping"', -32700, 8, "Parse error"),
        (b'{"method":"ping","params":{"a":],"jsonrpc":"2.0","id":"x"}', -32700, "x", "Parse error"),
        (b'{"jsonrpc":"2.0","id":1813', -32700, None, "Parse error"),  # the id may be cut: not 1813
        (b'{"method":"ping","jsonrpc":"2.0","id":18', -32700, None, "Parse error"),
        (b'{"jsonrpc":"2.0","id":9,"method":"ping","x":NaN}', -32700, 9, "NaN"),
        (b'{"jsonrpc":"2.0","id":10,"method":"ping","x":"\xff"}', -32700, 10, "UTF-8"),
        (
            b'{"jsonrpc":"2.0","id":11,"method":"ping","params":{"a":' + b"[" * 5000 + b"]" * 5000 + b"}}",
            -32700,
            11,
            "",
        ),
        (
            b'{"jsonrpc":"2.0","id":12,"method":"ping","params":{"a":' + b"[" * 70 + b"]" * 70 + b"}}",
            -32600,
            12,
            "nested",
        ),
    ],
)
def test_each_bad_request_is_answered_with_its_id(line: bytes, code: int, request_id: object, words: str) -> None:
    reply = _one_error(line)
    assert reply["error"]["code"] == code and reply["id"] == request_id
    assert words in reply["error"]["message"]
    json.loads(encode(reply))  # what reaches the wire is one line of JSON


def test_a_batch_is_answered_once_per_request_in_it() -> None:
    batch = b'[{"jsonrpc":"2.0","id":6,"method":"ping"},{"jsonrpc":"2.0","method":"x"},'
    batch += b'{"jsonrpc":"2.0","id":"7","method":"ping"}]'
    outcome = read_line(batch, CAP)
    assert isinstance(outcome, list) and [r["id"] for r in outcome] == [6, "7"]


def test_an_overlong_line_is_answered_with_the_id_from_its_edges() -> None:
    first = Overlong(10**9, b'{"jsonrpc":"2.0","id":21,"method":"tools/call","params":{"x":"aaaa', b'aaaa"}}}')
    last = Overlong(10**9, b'{"method":"tools/call","params":{"x":"aaa', b'aaa"}},"jsonrpc":"2.0","id":"r-22"}')
    for line, request_id in ((first, 21), (last, "r-22")):
        reply = _one_error(line)  # type: ignore[arg-type]
        assert reply["id"] == request_id and reply["error"]["code"] == -32600
        assert "1000000000 bytes" in reply["error"]["message"] and "max_line_bytes" in reply["error"]["message"]


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"   ",
        b'{"jsonrpc":"2.0","method":17}',
        b'{"jsonrpc":"2.0","id":1,"result":[]}',
        b'{"jsonrpc":"2.0","method":"a","params":' + b"[" * 70 + b"]" * 70 + b"}",
    ],
)
def test_notifications_responses_and_blank_lines_are_never_answered(line: bytes) -> None:
    assert read_line(line, CAP) == []


def test_the_depth_limit_is_generous_for_real_arguments() -> None:
    nested = "[" * (MAX_DEPTH - 3) + "]" * (MAX_DEPTH - 3)
    line = f'{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"a":{nested}}}}}'.encode()
    assert isinstance(read_line(line, CAP * 10), SessionMessage)


def test_a_response_with_a_lone_surrogate_is_still_written_as_json() -> None:
    content = TextContent(type="text", text="Unknown tool: x\ud800").model_dump(mode="json")
    message = SessionMessage(JSONRPCResponse(jsonrpc="2.0", id=3, result={"content": [content]}))
    data = json.loads(encode(message))
    assert data["id"] == 3 and data["result"]["content"][0]["text"] == "Unknown tool: x\ufffd"


def test_the_default_line_cap_fits_the_largest_legal_request_json_escaped() -> None:
    # A control character travels as \u0001: six bytes of JSON for one byte of code or stdin.
    assert StdioSettings().max_line_bytes > 6 * (MAX_CODE_BYTES + MAX_STDIN_BYTES)
