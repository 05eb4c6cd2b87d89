"""Server settings: TOML file + `HANZO_SANDBOX` -> a validated `Settings`.

Precedence: `--config FILE`, else `$XDG_CONFIG_HOME/hanzo-sandbox-mcp/config.toml` (default
`~/.config/...`) when it exists, else the embedded defaults (the model's own defaults: the server runs with
no file at all). `HANZO_SANDBOX=auto|on|off` then overrides `mode`, and `HANZO_SANDBOX_TOKEN` supplies the
HTTP bearer token when the file has none. Every key is documented in `config/default.toml`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from ipaddress import ip_address
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .policy import SANDBOX_ENV_VAR, SandboxMode, SandboxPolicy

__all__ = [
    "TOKEN_ENV_VAR",
    "ExecSettings",
    "HttpSettings",
    "NamedToken",
    "OutputSettings",
    "ProcessSettings",
    "SessionSettings",
    "Settings",
    "StdioSettings",
    "default_config_path",
    "format_validation_error",
    "load_settings",
    "parse_mode",
]

TOKEN_ENV_VAR = "HANZO_SANDBOX_TOKEN"
_MiB = 1024 * 1024


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OutputSettings(_Section):
    """Caps on what one call returns (sized for a model's context window)."""

    max_stdout_bytes: int = Field(32 * 1024, ge=256, le=512 * 1024)
    max_stderr_bytes: int = Field(32 * 1024, ge=256, le=512 * 1024)


class ExecSettings(_Section):
    """Per-call limits and the interpreter `run_python` uses."""

    default_timeout_s: float = Field(60.0, gt=0, le=86400)
    max_timeout_s: float = Field(600.0, gt=0, le=86400)
    python: str | None = Field(None, description="Interpreter for run_python; None: the server's, else python3.")
    max_concurrent_calls: int = Field(8, ge=1, le=1024)
    max_concurrent_calls_per_session: int = Field(2, ge=1, le=1024)
    max_concurrent_calls_per_client: int | None = Field(
        None, ge=1, le=1024, description="None: half of max_concurrent_calls (at least 1) on HTTP, all on stdio."
    )

    @model_validator(mode="after")
    def _timeouts(self) -> ExecSettings:
        if self.default_timeout_s > self.max_timeout_s:
            raise ValueError("default_timeout_s must not exceed max_timeout_s")
        return self

    def client_slots(self, *, shared: bool) -> int:
        """Calls one client may run at once; `shared`: the server can have more than one client."""
        if self.max_concurrent_calls_per_client is not None:
            return min(self.max_concurrent_calls_per_client, self.max_concurrent_calls)
        return max(1, self.max_concurrent_calls // 2) if shared else self.max_concurrent_calls


class SessionSettings(_Section):
    """Session handles and their workdirs."""

    idle_ttl_s: float = Field(3600.0, gt=0, le=30 * 86400)
    max_sessions: int = Field(64, ge=1, le=100_000)
    root: Path | None = Field(None, description="Where workdirs live; None: a private temp directory.")
    quota_mode: Literal["auto", "polled"] = Field(
        "auto",
        description="auto: a filesystem per workdir when the server is root with loop devices, else polled; "
        "polled: always count the workdir in the background.",
    )
    workdir_inodes: int | None = Field(
        None, ge=64, le=1 << 32, description="Files and directories a workdir may hold; None: 256 per MiB of quota."
    )
    disk_reserve_mb: int = Field(
        1024, ge=0, le=1 << 30, description="Host disk kept free beyond every filesystem workdir's quota (MiB)."
    )
    tmp_budget_mb: int = Field(
        10240,
        ge=1,
        le=1 << 30,
        description="RAM (MiB) that all sessions' tmpfs /tmp and /dev/shm may hold together: each session "
        "reserves 2 x policy.tmp_size_mb, and a new one is refused past this budget or when the host's "
        "available memory could not hold it. Unused where they live on the session's quota filesystem. The "
        "default holds max_sessions and a full pool at the default size, so the session cap binds first (and "
        "reclaims idle single-call sessions); the available-memory check still applies.",
    )
    pool_size: int = Field(
        2,
        ge=0,
        le=64,
        description="Session sandboxes kept made and ready (workdir included), so that a new session's first "
        "call is as fast as any; 0: each session's sandbox is made when the session is.",
    )
    uid_range_start: int = Field(
        2_000_000_000, ge=1000, description="First host uid (and gid) of the ids a root server gives its sessions."
    )
    uid_range_size: int = Field(
        4096,
        ge=0,
        description="Ids in that range (sessions beyond it are refused); 0: every session runs as policy.sandbox_uid.",
    )
    uid_lock_dir: Path = Field(
        Path("/run/hanzo-sandbox-mcp/uids"),
        description="Root-only directory of the lock files that keep servers on one host from sharing a session uid.",
    )

    @model_validator(mode="after")
    def _uid_range(self) -> SessionSettings:
        # 2**32-1 is (uid_t)-1: "no id" to chown and "unchanged" to setresuid.
        if self.uid_range_start + self.uid_range_size > 2**32 - 2:
            raise ValueError("uid_range_start + uid_range_size must not exceed 4294967294 (2**32-2)")
        if not self.uid_lock_dir.is_absolute():
            raise ValueError("uid_lock_dir must be an absolute path")
        return self


#: A client name from `[http] tokens`: what logs and the fairness layer call that client.
_CLIENT_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def _check_token(token: str) -> str:
    # Clients' credentials are compared after stripping (HTTP drops surrounding whitespace anyway), so a
    # configured token with a space at either end could never match: refuse it instead of locking everyone out.
    if token != token.strip():
        raise ValueError("the token starts or ends with whitespace, which no client can send; remove it")
    return token


class NamedToken(_Section):
    """One client's bearer token, and the name the server knows that client by."""

    name: str = Field(pattern=_CLIENT_NAME, description="Client name (letters, digits, '.', '_', '-').")
    token: str = Field(min_length=16)

    @field_validator("token")
    @classmethod
    def _token(cls, value: str) -> str:
        return _check_token(value)


class HttpSettings(_Section):
    """The HTTP transports (streamable HTTP and legacy SSE): address, tokens, and the limits of every stage."""

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    path: str = "/mcp"
    token: str | None = Field(None, min_length=16, description="Bearer token; required off loopback.")
    tokens: tuple[NamedToken, ...] = Field((), description="More bearer tokens, each naming its client.")
    allowed_origins: tuple[str, ...] = ()
    header_timeout_s: float = Field(10.0, gt=0, le=3600, description="Deadline for a request's headers.")
    body_timeout_s: float = Field(60.0, gt=0, le=3600, description="Deadline for a request's body.")
    max_connections: int | None = Field(None, ge=8, le=1_000_000, description="None: from the fd limit.")
    max_connections_per_peer: int | None = Field(None, ge=1, le=1_000_000, description="None: derived.")
    reserved_connections: int | None = Field(None, ge=0, le=1_000_000, description="None: derived.")
    max_body_bytes_in_flight: int = Field(128 * _MiB, ge=32 * _MiB, le=64 * 1024 * _MiB)
    max_protocol_sessions: int = Field(64, ge=1, le=100_000)
    protocol_session_idle_s: float = Field(3600.0, gt=0, le=30 * 86400)

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        return None if value is None else _check_token(value)

    @model_validator(mode="after")
    def _distinct_tokens(self) -> HttpSettings:
        names = [named.name for named in self.tokens]
        if len(set(names)) != len(names):
            raise ValueError("two entries of http.tokens have the same name; give each client its own name")
        secrets = [named.token for named in self.tokens] + ([self.token] if self.token else [])
        if len(set(secrets)) != len(secrets):
            raise ValueError("two of http.token and http.tokens are equal; give each client its own token")
        return self

    def has_tokens(self) -> bool:
        """True when clients must authenticate (a `token` or any `tokens` entry)."""
        return self.token is not None or bool(self.tokens)

    def is_loopback(self) -> bool:
        """True when the bind address only accepts local connections."""
        if self.host == "localhost":
            return True
        try:
            return ip_address(self.host).is_loopback
        except ValueError:
            return False


class ProcessSettings(_Section):
    """Background processes (`start_process`): how many, how much output kept, how long they may run."""

    max_per_session: int = Field(4, ge=0, le=1024, description="Background processes one session may hold.")
    max_total: int = Field(32, ge=0, le=100_000, description="Background processes the whole server may hold.")
    buffer_bytes: int = Field(
        1024 * 1024, ge=4096, le=64 * _MiB, description="Output kept per stream of each process (a ring buffer)."
    )
    max_lifetime_s: float = Field(
        3600.0, gt=0, le=30 * 86400, description="A process still running this long after its start is stopped."
    )
    stop_grace_s: float = Field(
        5.0, ge=0, le=600, description="How long a stopped process has after its signal before its tree is killed."
    )


class StdioSettings(_Section):
    """The stdio transport (one JSON-RPC message per line)."""

    # The largest legal request is run_python with 1 MiB of code and 4 MiB of stdin; JSON escaping can
    # make text 6 times longer (a control character becomes \u0001), so 30 MiB, plus the envelope.
    max_line_bytes: int = Field(32 * _MiB, ge=64 * 1024, le=1024 * _MiB)


class Settings(_Section):
    """Everything the server reads from its configuration."""

    mode: SandboxMode = SandboxMode.AUTO
    policy: SandboxPolicy = SandboxPolicy()
    output: OutputSettings = OutputSettings()
    exec: ExecSettings = ExecSettings()
    sessions: SessionSettings = SessionSettings()
    processes: ProcessSettings = ProcessSettings()
    http: HttpSettings = HttpSettings()
    stdio: StdioSettings = StdioSettings()
    audit_log: Path | None = Field(None, description="JSON-lines audit log of calls; None: no audit log.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _sse_sessions_outlast_calls(self) -> Settings:
        # A legacy SSE session counts as idle when no message passes either way, and a call without output
        # sends none until it ends: the idle limit must be longer than the longest call, or it would end
        # the session under a running call.
        if self.http.protocol_session_idle_s <= self.exec.max_timeout_s:
            raise ValueError(
                f"http.protocol_session_idle_s ({self.http.protocol_session_idle_s}) must be longer than "
                f"exec.max_timeout_s ({self.exec.max_timeout_s})"
            )
        return self


def parse_mode(value: str) -> SandboxMode:
    """Parse a `HANZO_SANDBOX` value (case-insensitive), raising ConfigError on anything else."""
    try:
        return SandboxMode(value.strip().lower())
    except ValueError:
        raise ConfigError(f"{SANDBOX_ENV_VAR}={value!r} is not valid: use one of auto, on, off (any case)") from None


def default_config_path(env: Mapping[str, str]) -> Path:
    """The user's config file path (it may not exist)."""
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "hanzo-sandbox-mcp" / "config.toml"


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem, naming the key, for people editing a config file."""
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"  {key}: {err['msg']}")
    return "\n".join(lines)


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def load_settings(config: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Load settings with the documented precedence; every problem is a ConfigError with a clear message."""
    env = os.environ if env is None else env
    path = config if config is not None else default_config_path(env)
    data: dict[str, object] = {}
    source = "the embedded defaults"
    if config is not None or path.is_file():
        data = _read_toml(path)
        source = str(path)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
    updates: dict[str, object] = {}
    if (raw_mode := env.get(SANDBOX_ENV_VAR)) is not None and raw_mode.strip():
        updates["mode"] = parse_mode(raw_mode)
    if settings.http.token is None and (token := env.get(TOKEN_ENV_VAR)) is not None:
        try:  # validated again: the variable's token must differ from the named ones too
            updates["http"] = HttpSettings.model_validate({**settings.http.model_dump(), "token": _env_token(token)})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, TOKEN_ENV_VAR)) from None
    return settings.model_copy(update=updates) if updates else settings


def _env_token(token: str) -> str:
    # An empty variable once meant "no authentication": a typo in a deployment script then opened the
    # server to every local process. Unset it to go without a token.
    if not token.strip():
        raise ConfigError(
            f"{TOKEN_ENV_VAR} is set but empty; set it to a token of 16+ characters, or unset it to run "
            "without authentication (loopback only)"
        )
    if len(token) < 16:
        raise ConfigError(f"{TOKEN_ENV_VAR} must be at least 16 characters long")
    try:
        return _check_token(token)
    except ValueError as exc:
        raise ConfigError(f"{TOKEN_ENV_VAR}: {exc}") from None
