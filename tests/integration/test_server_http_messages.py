"""Streamable HTTP answers every request that carries an id, as stdio does (the SDK alone answered some
with 202 and no response), and its own Host check still comes first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from hanzo_sandbox_mcp.config import Settings

pytestmark = pytest.mark.anyio
Kit = Any
HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}

CASES: list[tuple[bytes, object]] = [
    (b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}', 1.5),  # the SDK took it for a notification: 202
    (b'{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}', None),
    (b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":[1,2]}', 7),
    (b'{"jsonrpc":"2.0","id":8,"method":"ping"', 8),
]


async def test_each_malformed_request_gets_a_json_rpc_error_with_its_id(kit: Kit, sessions_parent: Path) -> None:
    settings = Settings.model_validate(kit.merged(kit.BASE_CONFIG, {"sessions": {"root": str(sessions_parent)}}))
    async with kit.http_server(settings, "http") as (base, _service), httpx2.AsyncClient() as http:
        with anyio.fail_after(30):
            for body, request_id in CASES:
                response = await http.post(f"{base}/mcp", headers=HEADERS, content=body)
                assert response.status_code == 400, (body, response.status_code, response.text)
                assert response.json()["id"] == request_id and response.json()["error"]["code"] in (-32600, -32700)
            batch = b'[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]'
            answered = await http.post(f"{base}/mcp", headers=HEADERS, content=batch)
            foreign = await http.post(
                f"{base}/mcp", headers={**HEADERS, "host": "rebound.example"}, content=CASES[0][0]
            )
    assert [reply["id"] for reply in answered.json()] == [1, 2]
    assert foreign.status_code == 421  # DNS-rebinding protection answers before the body is read
