"""The errors this package raises, one tree so callers can catch as wide or as narrow as they need.

```
HanzoSandboxError
 ├── ConfigError            a config file, policy value or HANZO_SANDBOX value is invalid
 ├── SandboxError
 │    ├── SandboxSetupError     a layer failed while it was being prepared or applied
 │    └── SandboxUnavailable    a required layer (strict policy, HANZO_SANDBOX=on) cannot be applied here
 ├── RequestError           a call's arguments are unusable (cwd escaping the workdir, NUL bytes, ...)
 └── SessionError
      ├── SessionNotFound       unknown, closed or expired session handle
      └── SessionLimitReached   too many sessions or concurrent calls
```

Every message is written for the reader who must act on it (often a model): what went wrong and
what to do instead.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "HanzoSandboxError",
    "RequestError",
    "SandboxError",
    "SandboxSetupError",
    "SandboxUnavailable",
    "SessionError",
    "SessionLimitReached",
    "SessionNotFound",
]


class HanzoSandboxError(Exception):
    """Base of every error raised by hanzo_sandbox_mcp."""


class ConfigError(HanzoSandboxError):
    """Configuration (file, environment variable or policy value) is invalid."""


class SandboxError(HanzoSandboxError):
    """The sandbox could not be set up as asked."""


class SandboxSetupError(SandboxError):
    """A layer failed while being prepared or applied (the seed's `SandboxError::Setup`)."""


class SandboxUnavailable(SandboxError):
    """A layer that must be applied is not available here (the seed's `SandboxError::Unsupported`)."""


class RequestError(HanzoSandboxError):
    """A call's arguments cannot be used as given."""


class SessionError(HanzoSandboxError):
    """A session handle cannot be used."""


class SessionNotFound(SessionError):
    """The session handle is unknown, closed or expired."""


class SessionLimitReached(SessionError):
    """Too many sessions or too many concurrent calls."""
