"""HTTP transports: the bearer token (401), Origin and Host checks (403/421), the refusal to listen off loopback
without a token, JSON-RPC errors for protocol misuse, and the real `serve --transport http` process."""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from support.http_process import http_server_process

from hanzo_sandbox_mcp.config import HttpSettings, Settings
from hanzo_sandbox_mcp.errors import ConfigError
from hanzo_sandbox_mcp.server import build_server, serve
from hanzo_sandbox_mcp.server.http import HttpServer, check_bind
from hanzo_sandbox_mcp.service import SandboxService

pytestmark = pytest.mark.anyio
Kit = Any

TOKEN = "test-token-" + "x" * 20
JSON_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


def _settings(kit: Kit, sessions_parent: Path, **config: Any) -> Settings:
    return Settings.model_validate(kit.merged(kit.BASE_CONFIG, {"sessions": {"root": str(sessions_parent)}}, config))


async def _post(url: str, body: str = "{}", **headers: str) -> httpx2.Response:
    async with httpx2.AsyncClient() as http:
        with anyio.fail_after(30):
            return await http.post(url, headers={**JSON_HEADERS, **headers}, content=body)


# -- the token -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_requests_without_the_token_get_401(kit: Kit, sessions_parent: Path, transport: str) -> None:
    settings = _settings(kit, sessions_parent, http={"token": TOKEN})
    async with kit.http_server(settings, transport) as (base, _service), httpx2.AsyncClient() as http:
        with anyio.fail_after(30):
            if transport == "http":
                missing = await http.post(f"{base}/mcp", headers=JSON_HEADERS, content="{}")
                wrong = await http.post(
                    f"{base}/mcp", headers={**JSON_HEADERS, "authorization": "Bearer wrong-token"}, content="{}"
                )
                basic = await http.post(
                    f"{base}/mcp", headers={**JSON_HEADERS, "authorization": f"Basic {TOKEN}"}, content="{}"
                )
            else:
                missing = await http.get(f"{base}/sse")
                wrong = await http.get(f"{base}/sse", headers={"authorization": "Bearer wrong-token"})
                basic = await http.post(f"{base}/messages/?session_id=x", content="{}")
    for response in (missing, wrong, basic):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_the_token_lets_a_client_in_over_streamable_http(kit: Kit, sessions_parent: Path) -> None:
    settings = _settings(kit, sessions_parent, http={"token": TOKEN})
    async with (
        kit.http_server(settings, "http") as (base, _service),
        httpx2.AsyncClient(headers={"authorization": f"Bearer {TOKEN}"}, timeout=30) as http,
        Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client,
    ):
        with anyio.fail_after(30):
            result = await client.call_tool("run_command", {"command": "echo authorized"})
    assert not result.is_error and result.structured_content is not None
    assert result.structured_content["stdout"] == "authorized\n"


async def test_the_token_lets_a_client_in_over_sse(kit: Kit, sessions_parent: Path) -> None:
    settings = _settings(kit, sessions_parent, http={"token": TOKEN})
    async with (
        kit.http_server(settings, "sse") as (base, _service),
        Client(sse_client(f"{base}/sse", headers={"authorization": f"Bearer {TOKEN}"})) as client,
    ):
        with anyio.fail_after(30):
            result = await client.call_tool("run_command", {"command": "echo authorized"})
    assert not result.is_error


async def test_no_token_needed_on_loopback_when_none_is_configured(kit: Kit, sessions_parent: Path) -> None:
    async with kit.http_server(_settings(kit, sessions_parent), "http") as (base, _service):
        response = await _post(f"{base}/mcp", "not json")
    assert response.status_code != 401


# -- Origin and Host -------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, TOKEN])
async def test_a_foreign_origin_gets_403(kit: Kit, sessions_parent: Path, token: str | None) -> None:
    settings = _settings(kit, sessions_parent, http={"token": token} if token else {})
    auth = {"authorization": f"Bearer {token}"} if token else {}
    async with kit.http_server(settings, "http") as (base, _service):
        for origin in ("http://evil.example", "http://127.0.0.1.evil.example:80", "http://localhost:80x", "null"):
            response = await _post(f"{base}/mcp", origin=origin, **auth)
            assert response.status_code == 403, origin
        local = await _post(f"{base}/mcp", "not json", origin="http://localhost:5173", **auth)
    assert local.status_code not in (401, 403)


async def test_a_configured_origin_is_allowed(kit: Kit, sessions_parent: Path) -> None:
    settings = _settings(kit, sessions_parent, http={"allowed_origins": ["https://app.example"]})
    async with kit.http_server(settings, "http") as (base, _service):
        allowed = await _post(f"{base}/mcp", "not json", origin="https://app.example")
        other = await _post(f"{base}/mcp", origin="https://other.example")
    assert allowed.status_code not in (401, 403) and other.status_code == 403


async def test_a_foreign_host_header_gets_421_on_loopback(kit: Kit, sessions_parent: Path) -> None:
    async with kit.http_server(_settings(kit, sessions_parent), "http") as (base, _service):
        response = await _post(f"{base}/mcp", host="rebound.example")
    assert response.status_code == 421


async def test_protocol_misuse_is_a_json_rpc_error(kit: Kit, sessions_parent: Path) -> None:
    async with kit.http_server(_settings(kit, sessions_parent), "http") as (base, _service):
        response = await _post(f"{base}/mcp", "{not json")
    assert response.json()["error"]["code"] == -32700


# -- binding off loopback --------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com"])
def test_refuses_to_listen_off_loopback_without_a_token(host: str) -> None:
    with pytest.raises(ConfigError, match="not a loopback address"):
        check_bind(HttpSettings(host=host))
    with pytest.raises(ConfigError, match="HANZO_SANDBOX_TOKEN"):
        serve(Settings(), "http", host, 0)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_token(host: str) -> None:
    check_bind(HttpSettings(host=host))


async def test_off_loopback_the_token_is_enforced(kit: Kit, sessions_parent: Path) -> None:
    settings = _settings(kit, sessions_parent, http={"token": TOKEN})
    service = SandboxService(settings, implicit_session="protocol_session")
    http = HttpServer(build_server(service), settings, "http", "0.0.0.0", 0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("0.0.0.0", 0))
    sock.listen(16)
    sock.setblocking(False)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    async with service, anyio.create_task_group() as group:
        group.start_soon(http.serve, [sock])
        try:
            refused = await _post(url)
            allowed = await _post(url, "not json", authorization=f"Bearer {TOKEN}")
        finally:
            http.stop()
    assert refused.status_code == 401 and allowed.status_code not in (401, 403)


# -- the real process ------------------------------------------------------------------------------------


async def test_serve_http_process_cleans_up_on_sigterm(kit: Kit, sessions_parent: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(kit.to_toml(kit.merged(kit.BASE_CONFIG, {"sessions": {"root": str(sessions_parent)}})))
    with http_server_process(config, env=kit.child_env(tmp_path), cwd=kit.REPO_ROOT) as server:
        await server.wait_until_serving()
        assert kit.leftover_workdirs(sessions_parent)
        server.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(60):
            while server.process.poll() is None:
                await anyio.sleep(0.05)
        assert server.process.stdout is not None and server.process.stdout.read() == b""  # logs go to stderr only
        assert kit.leftover_workdirs(sessions_parent) == []
