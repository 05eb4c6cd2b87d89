"""Run a test body in a forked child, so kernel restrictions (Landlock, seccomp) never touch pytest."""

from __future__ import annotations

import ctypes
import json
import os
from collections.abc import Callable
from typing import Any

import pytest

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_NO_NEW_PRIVS = 38


def set_no_new_privs() -> None:
    if _LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")


def fork_child(body: Callable[[], Any], setup: Callable[[], None] | None = None) -> tuple[int, Any]:
    """Run `setup` then `body` in a forked child; (wait status, its JSON result or error, None if it died)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            if setup is not None:
                setup()
            payload = {"value": body()}
        except BaseException as exc:
            payload = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            with os.fdopen(write_fd, "w") as pipe:
                pipe.write(json.dumps(payload))
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    return status, json.loads(data) if data else None


def in_child(body: Callable[[], Any], setup: Callable[[], None] | None = None) -> Any:
    """`fork_child` for a child that must exit normally; its exception becomes a test failure."""
    status, result = fork_child(body, setup)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child died: status {status:#x}"
    if "error" in result:
        pytest.fail(f"child raised {result['error']}")
    return result["value"]
