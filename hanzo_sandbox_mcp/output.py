"""Bounded capture of a command's output: the head and the tail are kept, the middle is counted."""

from __future__ import annotations

__all__ = ["CappedBuffer"]


class CappedBuffer:
    """Keeps at most `cap` bytes: the first half and the last half of the stream, whatever its size.

    A command that floods gigabytes costs `cap` bytes of memory; the model still sees how the output began
    and how it ended (where errors usually are), and `dropped` says how much was cut from the middle.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._head_cap = cap - cap // 2
        self._tail_cap = cap // 2
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if chunk and self._tail_cap:
            self._tail += chunk
            if len(self._tail) > self._tail_cap:
                del self._tail[: len(self._tail) - self._tail_cap]

    @property
    def dropped(self) -> int:
        return self.total - len(self._head) - len(self._tail)

    def text(self) -> str:
        """UTF-8 with invalid bytes replaced (binary output never raises); a marker where bytes were cut."""
        if not self.dropped:  # decoded whole, so a character split between head and tail survives
            return (self._head + self._tail).decode("utf-8", "replace")
        head = self._head.decode("utf-8", "replace")
        tail = self._tail.decode("utf-8", "replace")
        return f"{head}\n[... {self.dropped} bytes truncated ...]\n{tail}"
