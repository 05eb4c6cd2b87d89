"""JSON-RPC error bodies for what the HTTP layer refuses itself (busy, too large), so clients parse every answer."""

from __future__ import annotations

import json
from http import HTTPStatus

from starlette.responses import Response

__all__ = ["INVALID_REQUEST", "SERVER_BUSY", "json_rpc_error_body", "json_rpc_error_response", "raw_json_rpc_error"]

#: JSON-RPC 2.0's "Invalid Request", and an implementation-defined server error for "busy, retry".
INVALID_REQUEST = -32600
SERVER_BUSY = -32000
RETRY_AFTER_S = "1"

RequestId = str | int | None


def json_rpc_error_body(message: str, *, code: int = SERVER_BUSY, request_id: RequestId = None) -> bytes:
    """`{"jsonrpc": "2.0", "id": ..., "error": {"code": ..., "message": ...}}` as bytes."""
    body = {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
    return json.dumps(body).encode()


def json_rpc_error_response(
    status: int,
    message: str,
    *,
    code: int = SERVER_BUSY,
    request_id: RequestId = None,
    retry_after: bool = False,
    close: bool = False,
) -> Response:
    """A Starlette response carrying a JSON-RPC error (for use inside the ASGI app)."""
    headers = {"retry-after": RETRY_AFTER_S} if retry_after else {}
    if close:
        headers["connection"] = "close"
    body = json_rpc_error_body(message, code=code, request_id=request_id)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def raw_json_rpc_error(status: int, message: str, *, retry_after: bool = False) -> bytes:
    """A whole HTTP/1.1 response with a JSON-RPC error, for a connection that never reached the app."""
    body = json_rpc_error_body(message)
    head = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after:
        head.append(f"retry-after: {RETRY_AFTER_S}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body
