"""The sandbox policy: what a sandboxed command may use. Pure data, no I/O.

Mirrors the reference crate's `SandboxPolicy` and `NetworkMode` (same fields, same defaults) with a few
additions the Python server needs (the unprivileged uid used when the server runs as root, the private
/tmp size, the workdir quota).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_serializer, field_validator

from .netproxy.addresses import parse_cidr
from .netproxy.allowlist import HostError, normalise_name, normalise_pattern, parse_host

__all__ = [
    "DEFAULT_MAX_CPU_SECS",
    "DEFAULT_MAX_FILE_SZ_MB",
    "DEFAULT_MAX_MEMORY_MB",
    "DEFAULT_MAX_OPEN_FDS",
    "DEFAULT_MAX_PROCS",
    "SANDBOX_ENV_VAR",
    "NetworkMode",
    "SandboxMode",
    "SandboxPolicy",
]

#: Environment variable that overrides the configured sandbox mode (`auto`, `on`, `off`; any case).
SANDBOX_ENV_VAR = "HANZO_SANDBOX"
DEFAULT_MAX_MEMORY_MB = 2048
DEFAULT_MAX_CPU_SECS = 300
DEFAULT_MAX_PROCS = 64
DEFAULT_MAX_OPEN_FDS = 1024
DEFAULT_MAX_FILE_SZ_MB = 256

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class NetworkMode(StrEnum):
    """Network access granted to sandboxed processes (serialized kebab-case, as in the crate)."""

    NONE = "none"
    """No sockets but AF_UNIX (denied at the syscall level on Linux)."""
    LOOPBACK = "loopback"
    """A private loopback only: the host's listeners are not reachable. The default."""
    FULL = "full"
    """Unrestricted, as without a sandbox."""
    ALLOWLIST = "allowlist"
    """A private loopback whose only way out is the server's proxy, to the names in `allowed_domains`."""


class SandboxMode(StrEnum):
    """How hard the server insists on an OS sandbox (`HANZO_SANDBOX`)."""

    AUTO = "auto"
    """Use the best sandbox available and report what is missing."""
    ON = "on"
    """Require an OS sandbox; refuse to run commands without one."""
    OFF = "off"
    """Use the null sandbox: no isolation, with a loud warning."""


def _absolute(path: Path) -> Path:
    if "\x00" in str(path):
        raise ValueError("path contains a NUL byte")
    if not path.is_absolute():
        raise ValueError(f"path {str(path)!r} must be absolute")
    return path


def _env_name(name: str) -> str:
    if not _ENV_NAME.match(name):
        raise ValueError(f"{name!r} is not an environment variable name (letters, digits, underscore)")
    return name


def _domain(entry: str) -> str:
    try:
        return normalise_pattern(entry)
    except HostError as exc:
        raise ValueError(f"allowed_domains: {exc}") from None


def _cidr(entry: str) -> str:
    return str(parse_cidr(entry))


AbsolutePath = Annotated[Path, AfterValidator(_absolute)]
EnvName = Annotated[str, AfterValidator(_env_name)]
DomainPattern = Annotated[str, AfterValidator(_domain)]
Cidr = Annotated[str, AfterValidator(_cidr)]
Port = Annotated[int, Field(ge=1, le=65535)]


class SandboxPolicy(BaseModel):
    """Policy applied to one sandboxed process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_memory_mb: int = Field(DEFAULT_MAX_MEMORY_MB, ge=16, le=1 << 30, description="Address-space cap (MiB).")
    max_cpu_secs: int = Field(DEFAULT_MAX_CPU_SECS, ge=1, le=1 << 31, description="CPU-time cap (seconds).")
    max_procs: int = Field(DEFAULT_MAX_PROCS, ge=1, le=1 << 22, description="Process/thread cap.")
    max_open_fds: int = Field(DEFAULT_MAX_OPEN_FDS, ge=16, le=1 << 20, description="Open file descriptor cap.")
    max_file_sz_mb: int = Field(DEFAULT_MAX_FILE_SZ_MB, ge=1, le=1 << 30, description="Largest file (MiB).")
    network: NetworkMode = Field(NetworkMode.LOOPBACK, description="Network access.")
    extra_fs_read: tuple[AbsolutePath, ...] = Field((), description="More paths readable (and executable).")
    extra_fs_write: tuple[AbsolutePath, ...] = Field((), description="More paths readable and writable.")
    extra_env: tuple[EnvName, ...] = Field((), description="More variable names let through the env scrub.")
    strict: bool = Field(False, description="A requested layer that cannot be applied is an error.")
    session_workdir: AbsolutePath | None = Field(None, description="Per-session writable directory.")
    session_scratch: tuple[AbsolutePath, AbsolutePath] | None = Field(
        None, description="Host directories that are the session's /tmp and /dev/shm (None: tmpfs mounts)."
    )
    sandbox_uid: int = Field(
        65534, ge=1, le=(1 << 32) - 2, description="Uid commands run as when the server runs as root."
    )
    sandbox_gid: int = Field(
        65534, ge=1, le=(1 << 32) - 2, description="Gid commands run as when the server runs as root."
    )
    tmp_size_mb: int = Field(
        64,
        ge=1,
        le=1 << 20,
        description="Size of each session's private /tmp and of its /dev/shm (MiB), when they are tmpfs; on a "
        "quota filesystem they share the session's disk quota instead.",
    )
    workdir_quota_mb: int = Field(1024, ge=1, le=1 << 30, description="Disk quota of a session workdir (MiB).")
    allowed_domains: tuple[DomainPattern, ...] = Field(
        (), description="network=allowlist: names ('pypi.org'), subdomains ('*.example.com') or IP literals."
    )
    allowed_ports: tuple[Port, ...] = Field((80, 443), min_length=1, description="network=allowlist: ports.")
    allowed_private_cidrs: tuple[Cidr, ...] = Field(
        (), description="network=allowlist: private ranges an allowed name may resolve to ('10.0.0.0/8')."
    )
    proxy_hosts: tuple[tuple[str, str], ...] = Field(
        (),
        description="network=allowlist: a TOML table of name = IP address, used before DNS and checked like "
        "a DNS answer (kept as sorted pairs so the policy stays hashable).",
    )

    @field_validator("proxy_hosts", mode="before")
    @classmethod
    def _proxy_hosts(cls, value: object) -> tuple[tuple[str, str], ...]:
        pairs = value.items() if isinstance(value, Mapping) else value
        if not isinstance(pairs, Iterable) or isinstance(pairs, str):
            raise ValueError('proxy_hosts must be a table of name = "IP address"')
        hosts: dict[str, str] = {}
        for pair in pairs:
            if not (isinstance(pair, tuple | list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
                raise ValueError('proxy_hosts must be a table of name = "IP address"')
            name, address = pair
            try:
                key = normalise_name(name)
                target = parse_host(address)
            except HostError as exc:
                raise ValueError(f"proxy_hosts entry {name!r} = {address!r}: {exc}") from None
            if isinstance(target, str):
                raise ValueError(f"proxy_hosts entry {name!r} = {address!r}: the value must be an IP address")
            if key in hosts:
                raise ValueError(f"proxy_hosts lists {key!r} twice (names are compared after normalisation)")
            hosts[key] = str(target)
        return tuple(sorted(hosts.items()))

    @field_serializer("proxy_hosts")
    def _dump_proxy_hosts(self, value: tuple[tuple[str, str], ...]) -> dict[str, str]:
        return dict(value)

    def with_workdir(self, workdir: Path, scratch: tuple[Path, Path] | None = None) -> SandboxPolicy:
        """Return a copy bound to one session's workdir (the crate fills it in right before `harden`), and
        to the directories that are its /tmp and /dev/shm when they live on its quota filesystem."""
        bound = None if scratch is None else (_absolute(scratch[0]), _absolute(scratch[1]))
        return self.model_copy(update={"session_workdir": _absolute(workdir), "session_scratch": bound})
