"""hanzo-sandbox-mcp: run an LLM's commands inside an OS-level sandbox and report what protected them.

The public names below load lazily: the launcher imports submodules of this package under `python -I -S`
before every command and must not pay for pydantic or the MCP SDK.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing costs the launcher ~8 ms

__all__ = [
    "SANDBOX_ENV_VAR",
    "ConfigError",
    "EffectiveProtection",
    "ExecResult",
    "HanzoSandboxError",
    "Layer",
    "LayerStatus",
    "NetworkMode",
    "NullSandbox",
    "ResourceUsage",
    "Sandbox",
    "SandboxError",
    "SandboxMode",
    "SandboxPolicy",
    "SandboxService",
    "SandboxSetupError",
    "SandboxUnavailable",
    "Settings",
    "detect",
    "load_settings",
    "null",
    "run_sandboxed",
]

_WHERE = {
    "SANDBOX_ENV_VAR": "policy",
    "NetworkMode": "policy",
    "SandboxMode": "policy",
    "SandboxPolicy": "policy",
    "EffectiveProtection": "protection",
    "Layer": "protection",
    "LayerStatus": "protection",
    "ExecResult": "results",
    "ResourceUsage": "results",
    "ConfigError": "errors",
    "HanzoSandboxError": "errors",
    "SandboxError": "errors",
    "SandboxSetupError": "errors",
    "SandboxUnavailable": "errors",
    "Sandbox": "sandbox",
    "NullSandbox": "sandbox",
    "detect": "sandbox",
    "null": "sandbox",
    "Settings": "config",
    "load_settings": "config",
    "run_sandboxed": "runner",
    "SandboxService": "service",
}

if TYPE_CHECKING:
    from .config import Settings, load_settings
    from .errors import (
        ConfigError,
        HanzoSandboxError,
        SandboxError,
        SandboxSetupError,
        SandboxUnavailable,
    )
    from .policy import SANDBOX_ENV_VAR, NetworkMode, SandboxMode, SandboxPolicy
    from .protection import EffectiveProtection, Layer, LayerStatus
    from .results import ExecResult, ResourceUsage
    from .runner import run_sandboxed
    from .sandbox import NullSandbox, Sandbox, detect, null
    from .service import SandboxService


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'hanzo_sandbox_mcp' has no attribute {name!r}")
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
