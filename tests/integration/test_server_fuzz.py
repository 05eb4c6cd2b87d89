"""Thousands of random tool calls, mostly invalid, against the in-memory server: every one is answered (a
result or a JSON-RPC error), none crashes a tool (the SDK's bare "Error executing tool X" means an
unexpected exception), and the server still works afterwards."""

from __future__ import annotations

import random
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.anyio
Kit = Any

CALLS = 2000
SEED = 20261128
TOOLS = ["run_command", "run_python", "create_session", "close_session", "list_files", "capabilities"]
PARAMS = ["command", "code", "session_id", "cwd", "timeout_s", "stdin", "path"]
CHEAP_COMMANDS = ["true", "echo fuzz", "exit 3", "ls -a", "printf '\\377\\000'", "cat", "pwd"]


def _string(rng: random.Random) -> str:
    kind = rng.randrange(12)
    if kind == 0:
        return ""
    if kind == 1:
        return "../" * rng.randrange(1, 6) + "etc/passwd"
    if kind == 2:
        return "/" + rng.choice(["etc", "proc/self", "root", "", "var/tmp"])
    if kind == 3:
        return "a\x00b"
    if kind == 4:
        return "x" * rng.choice([255, 256, 4096, 70_000])
    if kind == 5:
        return "\t\r\n\x7f\x1b[31m" + "control characters"
    if kind == 6:
        return rng.choice(["link-to-root", "link-to-root/etc", "file.txt", "dir", "dir/../..", "./dir/"])
    if kind == 7:
        return "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(1, 40)))
    if kind == 8:
        return rng.choice(["A" * 32, "-" * 32, "a" * 31 + "\n", "%2e%2e%2f" * 3])
    return "".join(rng.choice("abc/._- $;|&`'\"\\\n*?~") for _ in range(rng.randrange(1, 30)))


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10 if depth < 2 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**63, -(2**70), 7])
    if kind == 3:
        return rng.choice([0.0, -0.5, 1e-9, 1e308, float("nan"), float("inf"), float("-inf"), 0.2])
    if kind in (4, 5, 6):
        return _string(rng)
    if kind == 7:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {_string(rng)[:10]: _value(rng, depth + 1) for _ in range(rng.randrange(3))}


def _arguments(rng: random.Random, session_ids: list[str]) -> dict[str, Any]:
    arguments: dict[str, Any] = {}
    for name in rng.sample(PARAMS, rng.randrange(len(PARAMS) + 1)):
        arguments[name] = _value(rng)
    if session_ids and rng.random() < 0.3:
        arguments["session_id"] = rng.choice(session_ids)
    if rng.random() < 0.1:
        arguments[_string(rng)[:20] or "extra"] = _value(rng)
    return arguments


@pytest.mark.parametrize("transport", ["memory"])
async def test_random_tool_calls_never_crash_the_server(connect: Any, kit: Kit) -> None:
    rng = random.Random(SEED)
    crashes: list[tuple[str, dict[str, Any], str]] = []
    answered = 0
    session_ids: list[str] = []
    async with connect() as conn:
        setup = await kit.ok(conn, "run_command", command="ln -s / link-to-root; mkdir dir; echo hi > file.txt")
        session_ids.append(setup["session_id"])
        with anyio.fail_after(600):
            for _ in range(CALLS):
                roll = rng.random()
                if roll < 0.04:  # a valid, cheap command now and then: spawning is the slow part
                    tool = "run_command"
                    arguments: dict[str, Any] = {"command": rng.choice(CHEAP_COMMANDS), "timeout_s": 5}
                    if rng.random() < 0.5:
                        arguments["session_id"] = rng.choice(session_ids)
                elif roll < 0.06:
                    uri = f"sandbox://sessions/{rng.choice([*session_ids, 'x'])}/files/{_string(rng)}"
                    try:
                        await conn.client.read_resource(uri)
                    except MCPError:
                        pass
                    answered += 1
                    continue
                else:
                    tool = rng.choice([*TOOLS, rng.choice(TOOLS) + "_", _string(rng)[:30]])
                    arguments = _arguments(rng, session_ids)
                result = await conn.client.call_tool(tool, arguments)
                answered += 1
                text = kit.text_of(result)
                if result.is_error and text.strip() == f"Error executing tool {tool}":
                    crashes.append((tool, arguments, text))
                sid = (result.structured_content or {}).get("session_id") if not result.is_error else None
                if isinstance(sid, str) and sid not in session_ids and len(session_ids) < 20:
                    session_ids.append(sid)
        await kit.alive(conn)
        final = await kit.ok(conn, "run_command", command="echo still-serving")
    assert answered == CALLS
    assert crashes == []
    assert final["stdout"] == "still-serving\n"
