"""Terminal escaping: no control byte but newline and tab gets through, however the output is chunked."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hanzo_sandbox_mcp.terminal import TerminalEscaper, escape_for_terminal


def _escaped(data: bytes, cuts: list[int]) -> bytes:
    escaper = TerminalEscaper()
    out, last = [], 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        out.append(escaper.feed(data[last:cut]))
        last = cut
    out.append(escaper.feed(data[last:]))
    return b"".join(out) + escaper.flush()


@given(st.binary(max_size=200), st.lists(st.integers(0, 400), max_size=8))
def test_chunking_never_changes_the_result(data: bytes, cuts: list[int]) -> None:
    assert _escaped(data, cuts) == _escaped(data, [])


@given(st.binary(max_size=200))
def test_no_control_byte_but_newline_and_tab_reaches_the_terminal(data: bytes) -> None:
    out = _escaped(data, []).decode("utf-8")  # always valid UTF-8
    assert not [c for c in out if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F]


def test_printable_text_is_unchanged() -> None:
    text = "café, naïve — 日本語 ✓\n\tindented 100%\n"
    assert escape_for_terminal(text) == text
    assert _escaped(text.encode(), [3, 7, 8]) == text.encode()


def test_osc_52_and_a_carriage_return_become_visible_text() -> None:
    assert escape_for_terminal("\x1b]52;c;aGk=\x07ok\rX") == "\\x1b]52;c;aGk=\\x07ok\\rX"
