"""Connect the official `mcp` client to the server over every transport: in memory, stdio, streamable HTTP, SSE.

`connect(**config)` is an async context manager yielding a `Connected` client for the transport the test is
parametrized with (`transport` fixture). `config` is merged into the base configuration (a TOML file for the
stdio child, `Settings` for the in-process servers). The stdio server is the real command line
(`python -m hanzo_sandbox_mcp serve`) with its environment passed explicitly; the HTTP and SSE servers run
in this process on a socket bound to port 0, behind the same guard as `serve()`.

Each server gets its own sessions parent (mode 0711, under /var/tmp: the sandbox hides the host's /tmp), so
a test can check that no workdir is left behind. Processes are found by a marker in their command line.

The `kit` fixture hands tests the helpers of this module: test modules cannot import it by name, since
tests/security has a conftest.py too.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp_types import CallToolResult, TextContent
from support.processes import marker_pids

from hanzo_sandbox_mcp.config import Settings
from hanzo_sandbox_mcp.server import build_server
from hanzo_sandbox_mcp.server.http import HttpServer
from hanzo_sandbox_mcp.service import SandboxService

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Debian's interpreter: every uid can execute it (a pyenv one under /root is out of reach of uid 65534).
SYSTEM_PYTHON = "/usr/bin/python3"
TRANSPORTS = ("memory", "stdio", "http", "sse")
Transport = Literal["memory", "stdio", "http", "sse"]

BASE_CONFIG: dict[str, Any] = {
    "log_level": "WARNING",
    "exec": {"python": SYSTEM_PYTHON, "default_timeout_s": 30.0, "max_timeout_s": 120.0},
    # A root server gives each session a filesystem of this size and refuses sessions the free disk could
    # not hold (quota.py): small quotas keep tests that open many sessions independent of the disk's size.
    "policy": {"workdir_quota_mb": 128},
}


@dataclass
class Connected:
    client: Client
    transport: Transport
    sessions_parent: Path
    """The configured sessions root: the server makes its own directory inside and removes it at exit."""
    implicit: Literal["default", "protocol_session"]
    service: SandboxService | None
    """The in-process service (None for stdio)."""


Connect = Callable[..., AbstractAsyncContextManager[Connected]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> Transport:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def sessions_parent() -> Iterator[Path]:
    parent = Path(tempfile.mkdtemp(prefix="hanzo-it-", dir="/var/tmp"))
    parent.chmod(0o711)
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def connect(transport: Transport, sessions_parent: Path, tmp_path: Path) -> Connect:
    def factory(**config: Any) -> AbstractAsyncContextManager[Connected]:
        return connect_to(transport, sessions_parent, tmp_path, config)

    return factory


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = value
    return out


def to_toml(config: dict[str, Any]) -> str:
    """The few TOML shapes the configuration uses: scalars, tables of scalars, lists of strings."""

    def scalar(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return repr(value)
        if isinstance(value, list | tuple):
            return "[" + ", ".join(scalar(v) for v in value) + "]"
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"{k} = {scalar(v)}" for k, v in config.items() if not isinstance(v, dict)]
    for key, table in config.items():
        if isinstance(table, dict):
            lines.append(f"[{key}]")
            lines.extend(f"{k} = {scalar(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The stdio child's whole environment (the SDK passes only a few variables otherwise)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "PYTHONPATH": str(REPO_ROOT),
        "LANG": "C.UTF-8",
        **extra,
    }


def stdio_params(config_file: Path, tmp_path: Path, *args: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "hanzo_sandbox_mcp", "--config", str(config_file), "serve", *args],
        env=child_env(tmp_path),
        cwd=str(REPO_ROOT),
    )


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def http_server(
    settings: Settings, transport: Literal["http", "sse"]
) -> AsyncIterator[tuple[str, SandboxService]]:
    """An in-process HTTP/SSE server on a fresh port; yields its base URL ("http://127.0.0.1:PORT")."""
    service = SandboxService(settings, implicit_session="protocol_session")
    async with service, serving(HttpServer(build_server(service), settings, transport, "127.0.0.1", 0)) as base:
        yield base, service


@asynccontextmanager
async def serving(http: HttpServer) -> AsyncIterator[str]:
    """Serve `http` on a fresh loopback port until the block ends; yields its base URL."""
    sock = listening_socket()
    async with anyio.create_task_group() as group:
        group.start_soon(http.serve, [sock])
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            http.stop()


@asynccontextmanager
async def connect_to(
    transport: Transport, sessions_parent: Path, tmp_path: Path, config: dict[str, Any]
) -> AsyncIterator[Connected]:
    full = merged(BASE_CONFIG, {"sessions": {"root": str(sessions_parent)}}, config)
    if transport == "stdio":
        config_file = tmp_path / "config.toml"
        config_file.write_text(to_toml(full))
        async with Client(stdio_params(config_file, tmp_path)) as client:
            yield Connected(client, transport, sessions_parent, "default", None)
        return
    settings = Settings.model_validate(full)
    if transport == "memory":
        async with SandboxService(settings) as service, Client(build_server(service)) as client:
            yield Connected(client, transport, sessions_parent, "default", service)
        return
    async with http_server(settings, transport) as (base, service):
        url = f"{base}/mcp" if transport == "http" else f"{base}/sse"
        target = url if transport == "http" else sse_client(url)
        async with Client(target) as client:
            yield Connected(client, transport, sessions_parent, "protocol_session", service)


# -- processes -------------------------------------------------------------------------------------------


def unique_marker() -> str:
    """A sleep duration no other process uses: `sleep <marker>` is findable in the process table."""
    return f"{900 + secrets.randbelow(99)}.{secrets.randbelow(10**9):09d}"


async def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll a condition the test cannot be notified of (the process table), bounded by `timeout`."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.02)


def leftover_workdirs(sessions_parent: Path) -> list[Path]:
    """Workdirs (or whole server roots) still under the configured sessions parent."""
    return sorted(sessions_parent.rglob("*")) if sessions_parent.exists() else []


# -- calling tools ---------------------------------------------------------------------------------------


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def call(conn: Connected, tool: str, arguments: dict[str, Any], timeout: float = 60.0) -> CallToolResult:
    with anyio.fail_after(timeout):
        return await conn.client.call_tool(tool, arguments)


async def ok(conn: Connected, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured content (also checked against the JSON text block)."""
    result = await call(conn, tool, arguments)
    assert not result.is_error, text_of(result)
    assert isinstance(result.structured_content, dict)
    first = result.content[0]
    assert isinstance(first, TextContent) and json.loads(first.text) == result.structured_content
    return result.structured_content


async def error(conn: Connected, tool: str, **arguments: Any) -> str:
    """Call a tool that must fail with isError; its message."""
    result = await call(conn, tool, arguments)
    assert result.is_error, result
    return text_of(result)


async def alive(conn: Connected) -> None:
    caps = await ok(conn, "capabilities")
    assert caps["sandbox"]


class ServerKit:
    """The helpers of this module, handed to tests by the `kit` fixture."""

    call = staticmethod(call)
    ok = staticmethod(ok)
    error = staticmethod(error)
    alive = staticmethod(alive)
    text_of = staticmethod(text_of)
    unique_marker = staticmethod(unique_marker)
    marker_pids = staticmethod(marker_pids)
    wait_until = staticmethod(wait_until)
    leftover_workdirs = staticmethod(leftover_workdirs)
    merged = staticmethod(merged)
    to_toml = staticmethod(to_toml)
    child_env = staticmethod(child_env)
    stdio_params = staticmethod(stdio_params)
    http_server = staticmethod(http_server)
    serving = staticmethod(serving)
    connect_to = staticmethod(connect_to)
    listening_socket = staticmethod(listening_socket)
    BASE_CONFIG = BASE_CONFIG
    REPO_ROOT = REPO_ROOT
    SYSTEM_PYTHON = SYSTEM_PYTHON


@pytest.fixture
def kit() -> type[ServerKit]:
    return ServerKit
