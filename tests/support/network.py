"""Host-side victims for network attacks: listeners that count connections and answer a banner."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from typing import Any

__all__ = ["BannerListener"]


class BannerListener:
    """A host listener (TCP, or a pathname or abstract UNIX socket) that counts every accepted connection
    and answers a unique banner line: the banner in a sandboxed command's output proves it got through."""

    def __init__(self, family: int, address: Any) -> None:
        self.banner = f"HOST-BANNER-{uuid.uuid4().hex}"
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if family != socket.AF_UNIX:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(address)
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> BannerListener:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            with conn, contextlib.suppress(OSError):
                conn.sendall(self.banner.encode() + b"\n")

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.sock.close()
