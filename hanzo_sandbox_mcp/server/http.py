"""The HTTP transports (streamable HTTP at `/mcp`, legacy HTTP+SSE at `/sse`) and the guard in front of them.

The guard, in order:

1. Origin: a request carrying an `Origin` header must come from an allowed origin (loopback origins when
   bound to loopback, plus `http.allowed_origins`), else 403. This stops DNS-rebinding and cross-site
   requests from a browser on the user's machine; clients that are not browsers send no Origin.
2. Bearer token: when a token is configured (`http.token` or `HANZO_SANDBOX_TOKEN`) every request must
   carry `Authorization: Bearer <token>` (compared in constant time), else 401 with `WWW-Authenticate`.
   A token is mandatory whenever the bind address is not loopback: `check_bind()` refuses to start
   without one.

Behind it, the SDK's own transport security also checks the `Host` header on loopback binds (421).
uvicorn logs go to stderr.
"""

from __future__ import annotations

import hmac
import logging
import socket
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any, Literal

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import HttpSettings, Settings
from ..errors import ConfigError
from .http_messages import JsonRpcBodyCheck

__all__ = ["HttpServer", "TokenAndOriginGuard", "check_bind", "loopback_origins"]

_log = logging.getLogger("hanzo_sandbox_mcp.http")

_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_GRACEFUL_SHUTDOWN_S = 5

#: uvicorn's default logging, with the access log moved from stdout to stderr.
_LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "default": {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(message)s"},
        "access": {
            "()": "uvicorn.logging.AccessFormatter",
            "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
        },
    },
    "handlers": {
        "default": {"formatter": "default", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
        "access": {"formatter": "access", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
    },
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}


def loopback_origins() -> list[str]:
    """Origins of pages served from this machine's loopback, any port."""
    return [f"{scheme}://{host}:*" for scheme in ("http", "https") for host in _LOOPBACK_HOSTS] + [
        f"{scheme}://{host}" for scheme in ("http", "https") for host in _LOOPBACK_HOSTS
    ]


def check_bind(http: HttpSettings) -> None:
    """Refuse a non-loopback bind address without a bearer token (ConfigError with the fix)."""
    if not http.is_loopback() and not http.token:
        raise ConfigError(
            f"refusing to listen on {http.host}, which is not a loopback address, without a bearer token: "
            "anyone who can reach it could run commands. Set HANZO_SANDBOX_TOKEN (16+ characters) or "
            "http.token in the config file, or bind to 127.0.0.1"
        )


class TokenAndOriginGuard:
    """ASGI middleware: Origin allowlist (403), then bearer token when one is configured (401)."""

    def __init__(self, app: ASGIApp, *, token: str | None, allowed_origins: Sequence[str]) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self._exact = frozenset(o for o in allowed_origins if not o.endswith(":*"))
        self._port_wildcards = tuple(o[:-1] for o in allowed_origins if o.endswith(":*"))

    def _origin_allowed(self, origin: str) -> bool:
        if origin in self._exact:
            return True
        # A "scheme://host:*" entry admits that host on any port: the prefix then digits only.
        return any(origin.startswith(p) and origin[len(p) :].isdigit() for p in self._port_wildcards)

    def _token_ok(self, authorization: str | None) -> bool:
        assert self._token is not None
        if not authorization:
            return False
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin):
            _log.warning("refused a request from origin %r", origin[:200])
            await PlainTextResponse("Forbidden: this Origin is not allowed", status_code=403)(scope, receive, send)
            return
        if self._token is not None and not self._token_ok(headers.get("authorization")):
            response = PlainTextResponse(
                "Unauthorized: send the server's token as 'Authorization: Bearer <token>'",
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="hanzo-sandbox-mcp"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handlers: serve_async() owns the signals and calls stop()."""

    @contextmanager
    def capture_signals(self) -> Any:
        yield


class HttpServer:
    """One MCP server behind the guard, served by uvicorn on HTTP (streamable HTTP or SSE)."""

    def __init__(
        self,
        server: MCPServer,
        settings: Settings,
        transport: Literal["http", "sse"],
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        http = settings.http.model_copy(update={k: v for k, v in (("host", host), ("port", port)) if v is not None})
        check_bind(http)
        self.http = http
        loopback = http.is_loopback()
        origins = [*(loopback_origins() if loopback else ()), *http.allowed_origins]
        # On loopback the SDK validates Host too (DNS rebinding); off loopback the bind address says
        # nothing about the names clients use, so the guard's Origin check and the token carry it.
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=loopback,
            allowed_hosts=[f"{h}:*" for h in _LOOPBACK_HOSTS] + list(_LOOPBACK_HOSTS),
            allowed_origins=origins,
        )
        inner: ASGIApp
        if transport == "http":
            streamable = server.streamable_http_app(
                streamable_http_path=http.path, transport_security=security, host=http.host
            )
            # Answers what the SDK would leave unanswered (a request with a float id passes as a notification).
            inner = JsonRpcBodyCheck(streamable, path=http.path, security=security)
        else:
            inner = server.sse_app(transport_security=security, host=http.host)
        self.app = TokenAndOriginGuard(inner, token=http.token, allowed_origins=origins)
        config = uvicorn.Config(
            self.app,
            host=http.host,
            port=http.port,
            log_config=_LOG_CONFIG,
            log_level=settings.log_level.lower(),
            lifespan="on",
            timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
        )
        self._uvicorn = _Uvicorn(config)

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve until `stop()`; `sockets` are already-bound listening sockets (tests bind port 0)."""
        await self._uvicorn.serve(sockets=sockets)

    def stop(self) -> None:
        """Ask uvicorn to shut down gracefully (serve() then returns)."""
        self._uvicorn.should_exit = True

    @property
    def started(self) -> bool:
        return self._uvicorn.started
