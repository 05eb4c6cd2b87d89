"""The few libc calls the launcher needs that Python 3.11's `os` lacks (stdlib ctypes only).

Every wrapper checks the return value and raises OSError with errno, so a failure is never mistaken for
success (and errno is read only when the call really failed).
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["check", "libc", "prctl", "syscall"]

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.prctl.restype = ctypes.c_int
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def check(result: int, what: str) -> int:
    """Raise OSError(errno) naming `what` when a libc call returned -1."""
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2) with integer arguments."""
    return check(libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def syscall(number: int, *args: int | bytes | ctypes.c_void_p | ctypes.Array[ctypes.c_char]) -> int:
    """A raw syscall; arguments are passed as C longs or pointers."""
    return check(libc.syscall(ctypes.c_long(number), *args), f"syscall({number})")
