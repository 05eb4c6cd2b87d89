"""Output for a person's terminal: a command's control sequences shown as text, never obeyed.

`hanzo-sandbox-mcp run` streams what the sandboxed command prints. On a terminal, bytes such as
`ESC ] 52 ; c ; <base64> BEL` (OSC 52) write the user's clipboard, `ESC ] 0 ; title BEL` retitles the
window, CSI sequences move the cursor or repaint what the user already read, and a carriage return hides
the start of a line. The command is not trusted, so on a terminal every control character but newline
and tab is printed as visible text (`\\x1b`, `\\r`, `\\x9b`), as are bytes that are not UTF-8 (`\\xff`)
and the bidirectional-override characters that reorder what is shown (`\\u202e`). Pipes and files get
the bytes unchanged.
"""

from __future__ import annotations

import codecs
import os

__all__ = ["TerminalEscaper", "escape_for_terminal", "wants_escaping"]

_KEPT = frozenset("\n\t")
#: Bidirectional embeddings, overrides and isolates: they reorder the text a reader sees.
_BIDI = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))


def wants_escaping(fd: int, *, raw: bool) -> bool:
    """True when output to `fd` should be escaped: it is a terminal and `--raw` was not given."""
    return not raw and os.isatty(fd)


def _visible(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if char in _KEPT:
        return char
    if code < 0x20 or code == 0x7F:
        return "\\r" if char == "\r" else f"\\x{code:02x}"
    if 0x80 <= code <= 0x9F or char in _BIDI:
        return f"\\u{code:04x}"
    return char


def escape_for_terminal(text: str) -> str:
    """`text` with every control character but newline and tab written as visible text."""
    return "".join(_visible(char) if not char.isprintable() or char in _BIDI else char for char in text)


class TerminalEscaper:
    """Escapes a byte stream chunk by chunk; a UTF-8 character split across chunks is kept whole."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")

    def feed(self, chunk: bytes) -> bytes:
        return escape_for_terminal(self._decoder.decode(chunk)).encode("utf-8")

    def flush(self) -> bytes:
        """What a truncated character at the very end of the stream leaves, escaped."""
        return escape_for_terminal(self._decoder.decode(b"", final=True)).encode("utf-8")
