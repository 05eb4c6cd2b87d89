"""Choosing a sandbox: `detect()` for the best one here, `null()` for none, `for_mode()` for HANZO_SANDBOX."""

from __future__ import annotations

import logging
import sys
import threading

from ..errors import SandboxUnavailable
from ..policy import SandboxMode, SandboxPolicy
from .base import Attachment, NoAttachment, Sandbox
from .null import NullSandbox

__all__ = [
    "Attachment",
    "NoAttachment",
    "NullSandbox",
    "Sandbox",
    "detect",
    "ensure_required",
    "for_mode",
    "null",
]

_log = logging.getLogger("hanzo_sandbox_mcp")
_warned = threading.Event()

NULL_WARNING = "sandbox disabled - model-generated code has full filesystem, network, and subprocess access"
UNSUPPORTED_WARNING = "no sandbox implementation for this platform - model-generated code has full host access"


def _warn_once(message: str) -> None:
    if not _warned.is_set():
        _warned.set()
        _log.warning(message)


def null() -> NullSandbox:
    """The explicit no-op sandbox; logs a warning (once per process) that commands get full host access."""
    _warn_once(NULL_WARNING)
    return NullSandbox()


def detect() -> Sandbox:
    """The best sandbox implementation for this platform (the null sandbox, loudly, where there is none)."""
    if sys.platform.startswith("linux"):
        from ..linux.sandbox import LinuxSandbox

        return LinuxSandbox()
    if sys.platform == "darwin":
        from ..macos.sandbox import MacosSandbox, seatbelt_available

        if seatbelt_available():
            return MacosSandbox()
        _warn_once("/usr/bin/sandbox-exec is missing - " + UNSUPPORTED_WARNING)
        return NullSandbox()
    _warn_once(UNSUPPORTED_WARNING)
    return NullSandbox()


def for_mode(mode: SandboxMode) -> Sandbox:
    """The sandbox for a `HANZO_SANDBOX` mode: `off` -> null, `on` -> an OS sandbox or an error."""
    if mode is SandboxMode.OFF:
        return null()
    sandbox = detect()
    if mode is SandboxMode.ON and isinstance(sandbox, NullSandbox):
        raise SandboxUnavailable(
            "HANZO_SANDBOX=on requires an OS sandbox, but this platform has none; "
            "run on Linux or macOS, or set HANZO_SANDBOX=auto to accept the null sandbox"
        )
    return sandbox


def ensure_required(mode: SandboxMode, sandbox: Sandbox, policy: SandboxPolicy) -> None:
    """`HANZO_SANDBOX=on`: refuse to run commands when nothing would actually be enforced."""
    if mode is SandboxMode.ON and not sandbox.effective(policy).any():
        raise SandboxUnavailable(
            f"HANZO_SANDBOX=on requires an OS sandbox, but the {sandbox.name} sandbox enforces nothing here "
            "(run `hanzo-sandbox-mcp doctor` for the cause); fix the missing layers or set HANZO_SANDBOX=auto"
        )
