"""File names are bytes, tool arguments and results are Unicode text: one escaping that round-trips.

A command can create any name but NUL and '/', including bytes that are not UTF-8 (`\\xff`), UTF-8-encoded
surrogates (`\\xed\\xa0\\x80`) and control characters (a newline, ESC). The server lists such names, and a
name as listed can be passed back (`list_files` path, `run_command` cwd, the resource URI's path) to reach
the same file. The rule, applied to each path component:

- escaping: a byte is written as `%XX` (two upper-case hex digits) when it is not part of valid UTF-8
  (surrogates and overlong forms included), when it belongs to a control character (U+0000-U+001F,
  U+007F-U+009F), or when it is a `%` followed by two hex digits; every other character is itself. So
  ordinary names, `100%.txt` and `a%` among them, list unchanged, and `%41` lists as `%2541`;
- unescaping: every `%` followed by two hex digits (either case) is the byte they name; any other
  character stands for its UTF-8 encoding.

Inside the server a component travels as `os.fsdecode(raw)`, the `str` that `os.open` turns back into
exactly those bytes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

__all__ = ["ECHO_CHARS", "display_path", "escape_name", "quoted", "unescape_name"]

_HEX = frozenset("0123456789abcdefABCDEF")
_TRIPLET = re.compile(r"%([0-9A-Fa-f]{2})")
#: Longest piece of a caller's argument repeated in an error message.
ECHO_CHARS = 120


def _is_control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F


def escape_name(raw: bytes) -> str:
    """The text form of one file name (or path component), per the module's rule."""
    text = raw.decode("utf-8", "surrogateescape")  # each byte that is not valid UTF-8 -> U+DC80..U+DCFF
    out: list[str] = []
    for index, char in enumerate(text):
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"%{code - 0xDC00:02X}")
        elif _is_control(char):
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
        elif char == "%" and text[index + 1 : index + 2] in _HEX and text[index + 2 : index + 3] in _HEX:
            out.append("%25")
        else:
            out.append(char)
    return "".join(out)


def unescape_name(text: str) -> bytes:
    """The bytes a listed name stands for. ValueError when `text` holds a lone surrogate (not Unicode)."""
    out = bytearray()
    last = 0
    for match in _TRIPLET.finditer(text):
        out += text[last : match.start()].encode("utf-8")
        out.append(int(match.group(1), 16))
        last = match.end()
    out += text[last:].encode("utf-8")
    return bytes(out)


def display_path(parts: Iterable[str]) -> str:
    """Components as `os.fsdecode` gives them -> the escaped relative path a result shows."""
    return "/".join(escape_name(os.fsencode(part)) for part in parts)


def quoted(text: str, limit: int = ECHO_CHARS) -> str:
    """`text` quoted for an error message, cut to `limit` characters (with its length) when longer.

    A caller's argument can be 100 KB: repeating it whole would flood the model's context for nothing.
    """
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
