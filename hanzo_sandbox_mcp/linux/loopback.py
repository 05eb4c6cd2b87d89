"""Bring up `lo` in a fresh network namespace (stdlib only: runs inside the launcher).

A new network namespace starts with `lo` down; `network = "loopback"` needs it up so programs can talk to
their own listeners, while the host's listeners stay unreachable (they live in another namespace).
"""

from __future__ import annotations

import _socket
import fcntl
import struct

__all__ = ["bring_up_loopback"]

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = "16sH14x"


def bring_up_loopback() -> None:
    """Set IFF_UP on `lo`; raises OSError when the namespace does not allow it."""
    # `_socket`, not `socket`: the wrapper module imports enum/selectors, a few ms at every launch.
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        request = struct.pack(_IFREQ, b"lo", 0)
        _, flags = struct.unpack(_IFREQ, fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | IFF_UP))
    finally:
        sock.close()
