"""The environment a sandboxed command may see.

Only an allowlist of harmless variables (and the policy's `extra_env` names) passes from the server's
environment, so API keys and tokens the server holds never reach model-generated code. HOME and TMPDIR
point inside the session workdir so tools that write caches or temp files stay inside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .policy import SandboxPolicy

__all__ = ["ALLOWED_ENV", "DEFAULT_PATH", "scrub_env"]

#: Names passed through from the server's environment (values from the server).
ALLOWED_ENV: frozenset[str] = frozenset(
    {"PATH", "LANG", "LANGUAGE", "TERM", "TZ", "COLORTERM", "NO_COLOR", "SOURCE_DATE_EPOCH"}
)
#: Used when the server has no PATH of its own.
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"


def _allowed(name: str, extra: frozenset[str]) -> bool:
    return name in ALLOWED_ENV or name.startswith("LC_") or name in extra


def scrub_env(parent: Mapping[str, str], policy: SandboxPolicy, workdir: Path) -> dict[str, str]:
    """Return the child's environment: the allowlist plus `extra_env`, HOME/TMPDIR in the workdir."""
    extra = frozenset(policy.extra_env)
    env = {name: value for name, value in parent.items() if _allowed(name, extra) and "\x00" not in value}
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("LANG", "C.UTF-8")
    home = str(workdir)
    env["HOME"] = home
    env["TMPDIR"] = str(workdir / ".tmp")
    env["PWD"] = home
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env
