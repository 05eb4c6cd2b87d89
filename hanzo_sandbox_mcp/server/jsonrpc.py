"""One JSON-RPC message from raw bytes: the message for the server, or the error replies it is owed.

Shared by the stdio transport (one line) and the streamable HTTP guard (one body), so both answer the
same input the same way. In order:

1. decoding: a leading BOM and a trailing CR are dropped; bytes that are not UTF-8 are -32700;
2. parsing with the standard library's `json`, which keeps a lone surrogate escape as a lone surrogate,
   so the service's own argument checks see it and give a clear tool error (NaN and Infinity are -32700);
3. the shape: a batch (answered once per request in it), a non-object, a request that is not a valid
   JSON-RPC request (a wrong id type, params that are not an object, nesting deeper than `MAX_DEPTH`)
   is -32600. The SDK's own parsing takes `{"id": 1.5, "method": ...}` for a notification and never
   answers it, so a request is validated as a request whenever it carries an id. Only requests are
   answered: a broken notification or response is logged and dropped, as JSON-RPC says.

An error carries the request's id when it can be recovered (from the parsed object, else from the
text's first members or last member, a number only when complete), else null.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from typing import Any

from mcp.shared.message import SessionMessage
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    PARSE_ERROR,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
)
from pydantic import ValidationError

__all__ = ["MAX_DEPTH", "Outgoing", "encode", "error_reply", "parse_message", "recover_id"]

_log = logging.getLogger("hanzo_sandbox_mcp.server.jsonrpc")

#: Deepest nesting of arrays and objects accepted in a message; no MCP request comes near it.
MAX_DEPTH = 64
_EDGE_BYTES = 64 * 1024
_BOM = b"\xef\xbb\xbf"
_STRING = r'"(?:[^"\\]|\\.)*"'
_SCALAR = rf"(?:{_STRING}|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null)"
#: A complete id: a number must be followed by ',' or '}' (a line cut inside `1813` must not answer `18`).
_ID = rf"(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?=\s*[,}}])|{_STRING})"
#: The id among the first members, after only scalar ones (`{"jsonrpc":"2.0","id":7,...`).
_ID_FIRST = re.compile(rf'^\s*\{{(?:\s*{_STRING}\s*:\s*{_SCALAR}\s*,)*?\s*"id"\s*:\s*{_ID}'.encode())
#: The id as the last member (`...,"jsonrpc":"2.0","id":7}`), the order of the TypeScript SDK.
_ID_LAST = re.compile(rf',\s*"id"\s*:\s*{_ID}\s*(?:,\s*"jsonrpc"\s*:\s*"2\.0"\s*)?\}}\s*$'.encode())
_SURROGATE = re.compile("[\ud800-\udfff]")

Outgoing = SessionMessage | dict[str, Any]
"""What a transport writes: the server's messages, and its own error replies."""


def parse_message(raw: bytes) -> SessionMessage | list[dict[str, Any]]:
    """A message for the server, or the error replies to send (maybe none)."""
    raw = raw.removeprefix(_BOM).removesuffix(b"\r")
    if not raw.strip():
        return []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [error_reply(recover_id(raw, raw), PARSE_ERROR, f"Parse error: byte {exc.start} is not valid UTF-8")]
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        return [error_reply(recover_id(raw, raw), PARSE_ERROR, f"Parse error: nested deeper than {MAX_DEPTH} levels")]
    except ValueError as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        return [error_reply(recover_id(raw, raw), PARSE_ERROR, f"Parse error: {reason}")]
    return _classify(value, text)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _classify(value: object, text: str) -> SessionMessage | list[dict[str, Any]]:
    if isinstance(value, list):
        replies = [
            error_reply(
                _echo_id(item["id"]),
                INVALID_REQUEST,
                "Invalid request: JSON-RPC batches are not supported by MCP; send each message on its own line",
            )
            for item in value
            if isinstance(item, dict) and "id" in item and "method" in item
        ]
        return replies or [error_reply(None, INVALID_REQUEST, "Invalid request: batches are not supported")]
    if not isinstance(value, dict):
        return [error_reply(None, INVALID_REQUEST, "Invalid request: a message must be a JSON object")]
    request_id = _echo_id(value.get("id"))
    if text.count("[") + text.count("{") > MAX_DEPTH and _deeper_than(value, MAX_DEPTH):
        if "method" in value and "id" not in value:
            return []
        return [error_reply(request_id, INVALID_REQUEST, f"Invalid request: nested deeper than {MAX_DEPTH} levels")]
    if "method" in value:
        if "id" not in value:
            return _or_drop(JSONRPCNotification, value, "notification")
        try:
            return SessionMessage(JSONRPCRequest.model_validate(value, by_name=False))
        except ValidationError as exc:
            return [error_reply(request_id, INVALID_REQUEST, f"Invalid request: {_first_problem(exc)}")]
    if "result" in value:
        return _or_drop(JSONRPCResponse, value, "response")
    if "error" in value:
        return _or_drop(JSONRPCError, value, "error response")
    return [error_reply(request_id, INVALID_REQUEST, "Invalid request: a request needs a 'method' (a string)")]


def _or_drop(
    model: type[JSONRPCNotification | JSONRPCResponse | JSONRPCError], value: dict[str, Any], kind: str
) -> SessionMessage | list[dict[str, Any]]:
    """Messages that get no answer in JSON-RPC, even when malformed: logged and dropped."""
    try:
        return SessionMessage(model.model_validate(value, by_name=False))
    except ValidationError as exc:
        _log.info("dropped a malformed %s from the client: %s", kind, _first_problem(exc))
        return []


def _first_problem(exc: ValidationError) -> str:
    # Field and reason only: the rejected value is the caller's data, maybe megabytes of it.
    err = exc.errors(include_url=False, include_input=False)[0]
    if err["loc"][:1] == ("id",):
        return "id must be a string or an integer"
    where = ".".join(str(part) for part in err["loc"]) or "the message"
    hint = {
        "params": " (MCP passes parameters by name, as an object)",
        "jsonrpc": ' (it must be "2.0")',
    }.get(str(err["loc"][0]) if err["loc"] else "", "")
    return f"{where}: {err['msg']}{hint}"


def _deeper_than(value: object, limit: int) -> bool:
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _echo_id(value: object) -> str | int | float | None:
    """The id to answer with: the request's own when JSON-RPC allows one (string or number), else null."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def recover_id(head: bytes, tail: bytes) -> str | int | float | None:
    """The top-level id of a line that does not parse, read from its edges; None when not found."""
    for pattern, edge in ((_ID_FIRST, head[:_EDGE_BYTES]), (_ID_LAST, tail[-_EDGE_BYTES:])):
        match = pattern.search(edge)
        if match is None:
            continue
        with contextlib.suppress(ValueError):
            return _echo_id(json.loads(match.group(1).decode("utf-8", "replace")))
    return None


def error_reply(request_id: str | int | float | None, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


# -- writing ---------------------------------------------------------------------------------------------


def encode(item: Outgoing) -> bytes:
    """One line of JSON for the wire. A message pydantic cannot encode (a lone surrogate in a result) is
    written with the surrogates replaced by U+FFFD, its id kept as it came, rather than lost."""
    if isinstance(item, dict):
        return _dumps(item).encode() + b"\n"
    try:
        return item.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"
    except ValueError as exc:  # PydanticSerializationError
        _log.warning("a response had to be re-encoded: %s", exc)
    try:
        data = item.message.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return _dumps(data).encode() + b"\n"
    except (ValueError, TypeError) as exc:
        request_id = getattr(item.message, "id", None)
        reply = error_reply(request_id, INTERNAL_ERROR, f"Internal error: the response could not be encoded ({exc})")
        return _dumps(reply).encode() + b"\n"


def _dumps(message: dict[str, Any]) -> str:
    # ASCII-only, so an id that came with a lone surrogate goes back escaped, exactly as it came.
    return json.dumps(_scrubbed(message, keep_id=True), ensure_ascii=True, separators=(",", ":"))


def _scrubbed(value: Any, *, keep_id: bool = False) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {k: v if keep_id and k == "id" else _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    return value
