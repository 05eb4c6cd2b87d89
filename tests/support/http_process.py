"""A real `hanzo-sandbox-mcp serve --transport http` process for tests: a free port, an optional fd limit,
a bounded wait until a real client is served, and a kill at the end whatever happened."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

__all__ = ["ServerProcess", "free_port", "http_server_process"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    stderr_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def stderr_text(self) -> str:
        """The server's stderr so far (a file: a pipe nobody reads could fill and stall the server)."""
        return self.stderr_path.read_text(errors="replace")

    async def echo(
        self,
        text: str,
        headers: Mapping[str, str] | None = None,
        *,
        local_address: str | None = None,
        timeout: float = 60.0,
    ) -> str:
        """`run_command echo <text>` through the SDK's streamable-HTTP client (from `local_address`); its stdout."""
        transport = httpx2.AsyncHTTPTransport(local_address=local_address)
        with anyio.fail_after(timeout):
            async with (
                httpx2.AsyncClient(headers=dict(headers or {}), timeout=timeout, transport=transport) as http,
                Client(streamable_http_client(self.url, http_client=http)) as client,
            ):
                result = await client.call_tool("run_command", {"command": f"echo {text}"})
        assert not result.is_error and result.structured_content is not None, result
        return str(result.structured_content["stdout"])

    async def wait_until_serving(self, headers: Mapping[str, str] | None = None, timeout: float = 60.0) -> None:
        """Retry a real call until the process has imported and bound (bounded by `timeout`)."""
        with anyio.fail_after(timeout):
            while True:
                try:
                    assert await self.echo("up", headers) == "up\n"
                    return
                except (httpx2.ConnectError, ExceptionGroup, OSError):
                    assert self.process.poll() is None, self.stderr_text()
                    await anyio.sleep(0.1)


def _fd_limit(nofile: int | None) -> Callable[[], None] | None:
    if nofile is None:
        return None

    def apply() -> None:  # in the child, before exec: the server starts under this limit, soft and hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    return apply


@contextmanager
def http_server_process(
    config: Path, *, env: Mapping[str, str], cwd: Path, nofile: int | None = None
) -> Iterator[ServerProcess]:
    """Start `serve --transport http` with `config` on a free loopback port; SIGKILL it on the way out."""
    port = free_port()
    argv = [sys.executable, "-m", "hanzo_sandbox_mcp", "--config", str(config), "serve"]
    stderr_path = config.with_suffix(".stderr")
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [*argv, "--transport", "http", "--port", str(port)],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            preexec_fn=_fd_limit(nofile),
        )
    try:
        yield ServerProcess(process, port, stderr_path)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
