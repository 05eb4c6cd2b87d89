"""The HTTP transports (streamable HTTP at `/mcp`, legacy HTTP+SSE at `/sse`) and the guards in front of them.

Below the app, per connection (`http_limits`): caps on connections in total and per peer, a reserve for
clients with a token, and deadlines for request headers and bodies. Then, per request, in order:

1. Host (loopback binds only): the `Host` header must name this machine's loopback (`localhost` in any
   case, a loopback IP, `[::1]`) with no port or the bound port, else 421. This stops DNS rebinding: a
   page from evil.example whose name now resolves to 127.0.0.1 still sends `Host: evil.example`.
2. Origin: a request carrying an `Origin` header must come from an allowed origin (loopback origins when
   bound to loopback, plus `http.allowed_origins`), else 403. This stops cross-site requests from a
   browser on the user's machine; clients that are not browsers send no Origin.
3. Bearer token: when tokens are configured (`http.token`, `http.tokens`, `HANZO_SANDBOX_TOKEN`) every
   request must carry `Authorization: Bearer <token>` (compared in constant time), else 401 with
   `WWW-Authenticate`. A token is mandatory off loopback: `check_bind()` refuses to start without one.
   A named token's client name goes into the ASGI scope as `scope["state"]["hanzo_client"]`, which is how
   the tool layer tells clients apart; it is never taken from anything the client can set otherwise.
4. Long streams (`http_streams`): legacy SSE sessions capped and expired; all GET streams end on shutdown.
5. Body (`http_body`): the size limit that fits the largest legal call, and a budget over all connections.

Then the SDK's transport (protocol sessions capped and expired with the same settings as legacy SSE).
uvicorn logs go to stderr. Tokens are never logged.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from contextlib import contextmanager
from ipaddress import IPv6Address, ip_address
from typing import Any, Literal

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..clients import SCOPE_CLIENT_NAME
from ..config import HttpSettings, Settings
from ..errors import ConfigError
from .http_body import MAX_REQUEST_BODY_BYTES, BodyBudget, BodyLimit
from .http_limits import ConnectionLimits, ConnectionTable, guarded_protocol, raise_fd_limit
from .http_messages import JsonRpcBodyCheck
from .http_streams import LongStreams
from .http_tokens import TokenBook

__all__ = ["HttpServer", "RequestGuard", "check_bind", "host_is_loopback", "loopback_origins"]

_log = logging.getLogger("hanzo_sandbox_mcp.http")

_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_GRACEFUL_SHUTDOWN_S = 5
_ACCEPT_BATCH = 64

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
    if not http.is_loopback() and not http.has_tokens():
        raise ConfigError(
            f"refusing to listen on {http.host}, which is not a loopback address, without a bearer token: "
            "anyone who can reach it could run commands. Set HANZO_SANDBOX_TOKEN (16+ characters) or "
            "http.token or http.tokens in the config file, or bind to 127.0.0.1"
        )


def host_is_loopback(host: str | None, bound_port: int | None) -> bool:
    """True when a `Host` header names this machine's loopback, with no port or `bound_port`.

    The name is case-insensitive (`LOCALHOST`), IPv6 literals come in brackets (`[::1]:8765`), and a port
    must be all digits: `localhost:evil.example` is not a port, so it is refused.
    """
    if not host:
        return False
    if host.startswith("["):
        name, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return False
        port = rest[1:] if rest else None
        try:
            loopback = IPv6Address(name).is_loopback
        except ValueError:
            return False
    else:
        name, colon, after = host.partition(":")
        port = after if colon else None
        loopback = name.lower() == "localhost" or _is_loopback_ipv4(name)
    if port is not None and not (port.isascii() and port.isdigit() and (bound_port is None or int(port) == bound_port)):
        return False
    return loopback


def _is_loopback_ipv4(name: str) -> bool:
    try:
        address = ip_address(name)
    except ValueError:
        return False
    return address.version == 4 and address.is_loopback


class RequestGuard:
    """ASGI middleware: Host (421, loopback binds), Origin allowlist (403), then the bearer token (401)."""

    def __init__(self, app: ASGIApp, *, tokens: TokenBook, allowed_origins: Sequence[str], check_host: bool) -> None:
        self.app = app
        self._tokens = tokens
        self._check_host = check_host
        self._exact = frozenset(o for o in allowed_origins if not o.endswith(":*"))
        self._port_wildcards = tuple(o[:-1] for o in allowed_origins if o.endswith(":*"))

    def _origin_allowed(self, origin: str) -> bool:
        if origin in self._exact:
            return True
        # A "scheme://host:*" entry admits that host on any port: the prefix then digits only.
        return any(origin.startswith(p) and origin[len(p) :].isdigit() for p in self._port_wildcards)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        server = scope.get("server")
        if self._check_host and not host_is_loopback(headers.get("host"), server[1] if server else None):
            _log.warning("refused a request for host %r", (headers.get("host") or "")[:200])
            await PlainTextResponse("Misdirected Request: invalid Host header", status_code=421)(scope, receive, send)
            return
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin):
            _log.warning("refused a request from origin %r", origin[:200])
            await PlainTextResponse("Forbidden: this Origin is not allowed", status_code=403)(scope, receive, send)
            return
        if self._tokens:
            match = self._tokens.match(headers.get("authorization"))
            if match is None:
                response = PlainTextResponse(
                    "Unauthorized: send the server's token as 'Authorization: Bearer <token>'",
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="hanzo-sandbox-mcp"'},
                )
                await response(scope, receive, send)
                return
            if match.name is not None:
                scope.setdefault("state", {})[SCOPE_CLIENT_NAME] = match.name
        await self.app(scope, receive, send)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handlers: serve_async() owns the signals and calls stop()."""

    @contextmanager
    def capture_signals(self) -> Any:
        yield


class HttpServer:
    """One MCP server behind the guards, served by uvicorn on HTTP (streamable HTTP or SSE)."""

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
        if http.max_body_bytes_in_flight < MAX_REQUEST_BODY_BYTES:
            raise ConfigError(
                f"http.max_body_bytes_in_flight must be at least {MAX_REQUEST_BODY_BYTES}, the largest request body"
            )
        self.http = http
        loopback = http.is_loopback()
        origins = [*(loopback_origins() if loopback else ()), *http.allowed_origins]
        # The guard checks Host and Origin itself (the SDK's check took `LOCALHOST:8765` for foreign and
        # `localhost:evil.com` for local); the SDK still checks the Content-Type of POSTs.
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
        inner: ASGIApp
        if transport == "http":
            streamable = server.streamable_http_app(
                streamable_http_path=http.path,
                transport_security=security,
                host=http.host,
                max_request_body_size=MAX_REQUEST_BODY_BYTES,
                max_sessions=http.max_protocol_sessions,
                session_idle_timeout=http.protocol_session_idle_s,
            )
            # Answers what the SDK would leave unanswered (a request with a float id passes as a notification).
            inner = JsonRpcBodyCheck(
                streamable, path=http.path, security=security, max_body_bytes=MAX_REQUEST_BODY_BYTES
            )
        else:
            inner = server.sse_app(
                transport_security=security, host=http.host, max_request_body_size=MAX_REQUEST_BODY_BYTES
            )
        tokens = TokenBook(http)
        self.streams = LongStreams(
            BodyLimit(inner, max_body=MAX_REQUEST_BODY_BYTES, budget=BodyBudget(http.max_body_bytes_in_flight)),
            sse_path="/sse",
            message_path="/messages/",
            max_sessions=http.max_protocol_sessions,
            idle_s=http.protocol_session_idle_s,
        )
        self.app = RequestGuard(self.streams, tokens=tokens, allowed_origins=origins, check_host=loopback)
        self.limits = ConnectionLimits.from_settings(http, raise_fd_limit())
        _log.info(
            "HTTP limits: %d connections (%d per peer, %d reserved for token holders), headers within %s s, "
            "bodies within %s s and %d bytes",
            self.limits.max_connections,
            self.limits.per_peer,
            self.limits.reserved,
            self.limits.header_timeout_s,
            self.limits.body_timeout_s,
            MAX_REQUEST_BODY_BYTES,
        )
        config = uvicorn.Config(
            self.app,
            host=http.host,
            port=http.port,
            http=guarded_protocol(ConnectionTable(self.limits, tokens)),
            # asyncio accepts up to `backlog` connections per loop turn before any is admitted or refused:
            # a small batch keeps a flood from taking the fds beyond the connection cap (EMFILE otherwise).
            backlog=_ACCEPT_BATCH,
            ws="none",  # no WebSocket upgrade: it would hand the connection to a protocol without the guard
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
        """Ask uvicorn to shut down gracefully (serve() then returns); open GET streams end at once."""
        self._uvicorn.should_exit = True
        self.streams.close_all()

    @property
    def started(self) -> bool:
        return self._uvicorn.started
