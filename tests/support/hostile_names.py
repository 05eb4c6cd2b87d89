"""File names no string holds as they are, and the Python that creates them in a workdir."""

from __future__ import annotations

#: Not UTF-8, a UTF-8-encoded surrogate, '%' forms that do and do not look escaped, a newline, an OSC title.
HOSTILE_NAMES = [b"\xff", b"\xed\xa0\x80", b"%41", b"a%", b"new\nline", b"\x1b]0;title\x07"]

#: run_python code: with the names' repr on stdin, make a directory of each holding `inner`, whose content
#: is the name's bytes.
MAKE_NAMES_CODE = (
    "import os, sys\n"
    "for name in eval(sys.stdin.read()):\n"
    "    os.mkdir(name)\n"
    "    with open(name + b'/inner', 'wb') as f:\n"
    "        f.write(name)\n"
)
