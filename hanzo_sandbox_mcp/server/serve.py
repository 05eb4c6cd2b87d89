"""`serve()`: run the MCP server on stdio, streamable HTTP or SSE until EOF or a signal, then clean up.

Shutdown always ends every session: running calls are cancelled (their process trees killed) and every
workdir is deleted. On stdio that happens at stdin EOF, or on SIGTERM/SIGINT/SIGHUP, after which the
signal is re-raised with its default action so the exit status says what happened. On HTTP a signal
makes uvicorn stop gracefully (open streams get a few seconds) before the same cleanup.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Literal

import anyio

from ..config import Settings
from ..service import SandboxService
from .app import build_server
from .http import HttpServer
from .stdio import check_std_streams, run_stdio

__all__ = ["Transport", "serve", "serve_async"]

_log = logging.getLogger("hanzo_sandbox_mcp.server")

Transport = Literal["stdio", "http", "sse"]
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def serve(settings: Settings, transport: Transport, host: str | None, port: int | None) -> None:
    """Run the server until it is told to stop (blocking, like `MCPServer.run`).

    Raises ConfigError before binding anything when HTTP would listen off loopback without a token, and
    SandboxUnavailable when HANZO_SANDBOX=on and this platform has no sandbox.
    """
    anyio.run(serve_async, settings, transport, host, port)


async def serve_async(
    settings: Settings,
    transport: Transport,
    host: str | None = None,
    port: int | None = None,
    *,
    sockets: list[socket.socket] | None = None,
) -> None:
    """`serve()` inside a running event loop; `sockets`: pre-bound listening sockets for HTTP (tests)."""
    if transport == "stdio":
        await _serve_stdio(settings)
        return
    service = SandboxService(settings, implicit_session="protocol_session")
    http = HttpServer(build_server(service), settings, transport, host, port)

    async def stop(_signum: int) -> None:
        http.stop()

    async with service, anyio.create_task_group() as group:
        group.start_soon(_on_signal, stop)
        _log.info("serving MCP over %s on %s:%s", transport, http.http.host, http.http.port)
        await http.serve(sockets)
        group.cancel_scope.cancel()


async def _serve_stdio(settings: Settings) -> None:
    check_std_streams()
    service = SandboxService(settings, implicit_session="default")
    server = build_server(service)
    async with service, anyio.create_task_group() as group:

        async def die(signum: int) -> None:
            # The stdio reader blocks in a worker thread that cancellation cannot interrupt, so clean up
            # here and then die of the signal, rather than wait for stdin to close.
            await service.aclose()
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

        group.start_soon(_on_signal, die)
        await run_stdio(server, settings.stdio.max_line_bytes)
        group.cancel_scope.cancel()


async def _on_signal(handler: Callable[[int], Awaitable[None]]) -> None:
    with anyio.open_signal_receiver(*_SIGNALS) as signals:
        async for signum in signals:
            _log.info("received %s: shutting down", signal.Signals(signum).name)
            await handler(signum)
