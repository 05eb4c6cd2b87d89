"""CappedBuffer: bounded memory whatever a command prints; head and tail kept, the middle counted."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hanzo_sandbox_mcp.output import CappedBuffer


def _buffer(cap: int, *chunks: bytes) -> CappedBuffer:
    buffer = CappedBuffer(cap)
    for chunk in chunks:
        buffer.feed(chunk)
    return buffer


def test_empty_buffer() -> None:
    buffer = CappedBuffer(16)
    assert buffer.text() == ""
    assert buffer.total == 0
    assert buffer.dropped == 0


def test_output_under_the_cap_is_kept_whole() -> None:
    buffer = _buffer(16, b"hello ", b"world\n")
    assert buffer.text() == "hello world\n"
    assert buffer.dropped == 0
    assert buffer.total == 12


def test_output_exactly_at_the_cap_is_kept_whole_without_a_marker() -> None:
    data = bytes(range(97, 97 + 16))
    buffer = _buffer(16, data)
    assert buffer.text() == data.decode()
    assert buffer.dropped == 0
    assert "truncated" not in buffer.text()


def test_over_the_cap_keeps_head_and_tail_and_counts_the_middle() -> None:
    buffer = _buffer(10, b"HEAD-", b"x" * 1000, b"-TAIL")
    assert buffer.total == 1010
    assert buffer.dropped == 1000
    assert buffer.text() == "HEAD-\n[... 1000 bytes truncated ...]\n-TAIL"


def test_an_odd_cap_gives_the_extra_byte_to_the_head() -> None:
    buffer = _buffer(5, b"abcdefghij")
    assert buffer.text() == "abc\n[... 5 bytes truncated ...]\nij"


def test_memory_stays_bounded_for_a_flood() -> None:
    buffer = CappedBuffer(1024)
    chunk = b"y" * 65536
    for _ in range(160):  # 10 MiB
        buffer.feed(chunk)
    assert buffer.total == 160 * 65536
    assert len(buffer._head) + len(buffer._tail) == 1024
    assert buffer.dropped == 160 * 65536 - 1024


def test_invalid_utf8_is_replaced_not_raised() -> None:
    buffer = _buffer(64, b"ok \xff\xfe bad \xc3")
    assert buffer.text() == "ok \ufffd\ufffd bad \ufffd"


def test_a_character_cut_by_the_cap_decodes_with_replacement() -> None:
    euro = "€".encode()  # 3 bytes
    buffer = _buffer(4, b"a" + euro + b"zzzz" + euro)
    text = buffer.text()
    assert text.startswith("a")
    assert "\ufffd" in text
    assert "bytes truncated" in text


def _expected(data: bytes, cap: int) -> tuple[bytes, bytes, int]:
    head_cap, tail_cap = cap - cap // 2, cap // 2
    if len(data) <= cap:
        return data[:head_cap], data[head_cap:], 0
    return data[:head_cap], data[len(data) - tail_cap :] if tail_cap else b"", len(data) - cap


@settings(database=None)  # no example database: the checkout may be read-only
@given(
    chunks=st.lists(st.binary(max_size=300), max_size=20),
    cap=st.integers(min_value=2, max_value=600),
)
def test_any_chunking_keeps_exactly_the_first_and_last_bytes(chunks: list[bytes], cap: int) -> None:
    data = b"".join(chunks)
    buffer = _buffer(cap, *chunks)
    head, tail, dropped = _expected(data, cap)
    assert bytes(buffer._head) == head
    assert bytes(buffer._tail) == tail
    assert buffer.dropped == dropped
    assert buffer.total == len(data)
    if dropped:
        assert buffer.text() == (
            head.decode("utf-8", "replace")
            + f"\n[... {dropped} bytes truncated ...]\n"
            + tail.decode("utf-8", "replace")
        )
    elif data.isascii():
        assert buffer.text() == data.decode()


def test_output_that_fits_decodes_like_the_whole_stream() -> None:
    cap = 32 * 1024
    data = b"a" * (cap // 2 - 1) + "€ é".encode() * 100  # '€' spans bytes cap/2-1 .. cap/2+1
    assert len(data) <= cap
    buffer = _buffer(cap, data)
    assert buffer.dropped == 0
    assert buffer.text() == data.decode()


@pytest.mark.parametrize("cap", [256, 32 * 1024])
def test_the_marker_reports_the_exact_count(cap: int) -> None:
    data = b"S" + b"m" * (3 * cap) + b"E"
    buffer = _buffer(cap, data)
    text = buffer.text()
    assert text.startswith("S")
    assert text.endswith("E")
    assert f"[... {len(data) - cap} bytes truncated ...]" in text
