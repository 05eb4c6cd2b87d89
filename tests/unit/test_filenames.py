"""The file-name escaping: every bytes name round-trips, ordinary names list unchanged, results stay text."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hanzo_sandbox_mcp.filenames import display_path, escape_name, quoted, unescape_name

TRIPLET = re.compile("%[0-9A-Fa-f]{2}")


@given(st.binary(max_size=64))
@example(b"\xff")
@example(b"\xed\xa0\x80")  # a UTF-8-encoded surrogate
@example(b"\xc0\x80")  # an overlong NUL
@example(b"%41")
@example(b"%%41")
@example(b"%A\xff")
@example(b"%\xff41")
def test_every_bytes_name_round_trips(raw: bytes) -> None:
    assert unescape_name(escape_name(raw)) == raw


@given(st.binary(max_size=64))
def test_an_escaped_name_is_printable_utf8_text(raw: bytes) -> None:
    text = escape_name(raw)
    text.encode("utf-8")  # no lone surrogate: serializable as JSON and as a URI
    assert not [c for c in text if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F]


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), max_size=40))
def test_text_without_a_percent_triplet_lists_unchanged(name: str) -> None:
    if TRIPLET.search(name):
        assert escape_name(name.encode()) != name
    else:
        assert escape_name(name.encode()) == name


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"notes.txt", "notes.txt"),
        (b"100%.txt", "100%.txt"),
        (b"a%", "a%"),
        (b"%41", "%2541"),
        (b"%4a", "%254a"),
        (b"\xff", "%FF"),
        (b"\xed\xa0\x80", "%ED%A0%80"),
        (b"new\nline", "new%0Aline"),
        (b"\x1b]52;c;eA==\x07", "%1B]52;c;eA==%07"),
        (b"\xc2\x9b", "%C2%9B"),  # U+009B, the one-byte CSI of 8-bit terminals
        ("café".encode(), "café"),
    ],
)
def test_the_documented_examples(raw: bytes, text: str) -> None:
    assert escape_name(raw) == text
    assert unescape_name(text) == raw


def test_unescaping_accepts_lower_case_hex() -> None:
    assert unescape_name("%ff%0a") == b"\xff\n"


def test_unescaping_refuses_a_lone_surrogate() -> None:
    with pytest.raises(UnicodeEncodeError):
        unescape_name("\ud800")


def test_display_path_escapes_each_component() -> None:
    assert display_path(["d", "\udcff", "%41"]) == "d/%FF/%2541"


def test_quoted_cuts_long_arguments_and_says_how_long() -> None:
    assert quoted("short") == "'short'"
    long = quoted("x" * 100_000)
    assert len(long) < 200 and "100000 characters" in long
