"""Random input, mostly invalid: every request is answered, nothing crashes, the server keeps working.

Two fuzzers share the generators below:

- thousands of tool calls through the SDK client against the in-memory server, where none may crash a
  tool (the SDK's bare "Error executing tool X" means an unexpected exception);
- raw JSON-RPC lines against the real server process, over stdio and over streamable HTTP: malformed
  lines, wrong types, wrong and missing ids, huge and deep values, lone surrogates, batches, as well as
  well-formed tool calls with hostile arguments. Every request that carries an id is answered (with its
  id, or null when none can be read), no answer is an internal error or a crashed tool, and the server's
  file descriptors (/proc/PID/fd) do not grow.

The seed is fixed and printed; HANZO_FUZZ_SEED and HANZO_FUZZ_LINES override it and the number of lines
per transport (5,000 each by default).
"""

from __future__ import annotations

import json
import os
import random
import selectors
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.anyio
Kit = Any

CALLS = 2000
SEED = int(os.environ.get("HANZO_FUZZ_SEED", "20261128"))
#: Raw lines per transport: 10,000 in all, about a minute on a loaded 2-core machine.
RAW_LINES = int(os.environ.get("HANZO_FUZZ_LINES", "5000"))
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


# -- raw JSON-RPC against the server process -------------------------------------------------------------


INITIALIZE = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "0"}}
OTHER_METHODS = ["ping", "tools/list", "resources/templates/list", "resources/list", "prompts/list", "no/such"]
SETUP_COMMAND = "ln -s / link-to-root; mkdir dir; echo hi > file.txt"


_FRESH = object()


@dataclass
class Case:
    """One line to send, and the answers it must get: for each, the ids it may carry (None: null)."""

    line: bytes
    answers: list[frozenset[object]]
    tool: str | None = None
    well_formed: bool = False
    """A valid request on every transport (HTTP refuses a BOM or a lone surrogate that stdio accepts)."""


class RawFuzzer:
    """Seeded raw JSON-RPC lines; each request gets a fresh integer id unless the case is about ids."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.next_id = 1000
        self.session_ids: list[str] = []

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _request(self, method: str, params: object, request_id: object = _FRESH) -> tuple[dict[str, Any], object]:
        request_id = self._id() if request_id is _FRESH else request_id
        return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}, request_id

    def _tool_call(self) -> tuple[dict[str, Any], object, str]:
        rng = self.rng
        if rng.random() < 0.03:  # a valid, cheap command now and then: spawning is the slow part
            tool, arguments = "run_command", {"command": rng.choice(CHEAP_COMMANDS), "timeout_s": 5}
            if self.session_ids and rng.random() < 0.5:
                arguments["session_id"] = rng.choice(self.session_ids)
        else:
            tool = rng.choice([*TOOLS, rng.choice(TOOLS) + "_", _string(rng)[:30]])
            arguments = _arguments(rng, self.session_ids)
        message, request_id = self._request("tools/call", {"name": tool, "arguments": arguments})
        return message, request_id, tool

    def case(self) -> Case:
        rng = self.rng
        roll = rng.random()
        if roll < 0.40:
            message, request_id, tool = self._tool_call()
            return Case(_dumps(message), [frozenset([request_id])], tool, well_formed=_is_json(message))
        if roll < 0.50:
            method = rng.choice(OTHER_METHODS)
            params: object = {}
            if rng.random() < 0.4:
                sid = rng.choice([*self.session_ids, "x" * 32])
                method, params = "resources/read", {"uri": f"sandbox://sessions/{sid}/files/{_string(rng)}"}
            message, request_id = self._request(method, params)
            return Case(_dumps(message), [frozenset([request_id])], well_formed=True)
        if roll < 0.58:  # the envelope is wrong
            message, request_id = self._request("tools/call", {"name": "capabilities", "arguments": {}})
            field, bad = rng.choice(
                [
                    ("params", [1, 2]),
                    ("params", "x"),
                    ("params", 7),
                    ("method", 123),
                    ("method", None),
                    ("jsonrpc", "1.0"),
                    ("jsonrpc", None),
                ]
            )
            if bad is None:
                del message[field]
            else:
                message[field] = bad
            return Case(_dumps(message), [frozenset([request_id])])
        if roll < 0.64:  # the id is wrong
            bad_id = rng.choice([{"a": 1}, [1], True, False, None, 1.5, -0.0, 2**80, -7, "", "i" * 10_000])
            message, _ = self._request("ping", {}, request_id=bad_id)
            valid = isinstance(bad_id, str) or (isinstance(bad_id, int) and not isinstance(bad_id, bool))
            ok_ids: frozenset[object] = (
                frozenset([bad_id]) if valid else frozenset([None, bad_id] if isinstance(bad_id, float) else [None])
            )
            return Case(_dumps(message), [ok_ids])
        if roll < 0.76:  # not JSON, or JSON that a strict parser refuses
            message, request_id = self._request("ping", {})
            text = _dumps(message)
            kind = rng.randrange(6)
            if kind == 0:
                line = text[: rng.randrange(1, len(text) - 1)]
            elif kind == 1:
                line = b"\x01" + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).replace(b"\n", b" ")
            elif kind == 2:
                line = text.replace(b'"params":{}', b'"params":{"x":NaN}')
            elif kind == 3:
                line = text.replace(b'"params":{}', b'"params":{"x":"\xff\xfe"}')
            elif kind == 4:
                line = text.replace(b"}", b",}", 1)
            else:
                line = b"{" * rng.randrange(1, 50)
            return Case(line, [frozenset([request_id, None])])
        if roll < 0.82:  # valid JSON with a twist: a BOM, a lone surrogate, deep nesting, a huge value
            kind = rng.randrange(4)
            if kind == 0:
                message, request_id = self._request("ping", {})
                return Case(b"\xef\xbb\xbf" + _dumps(message), [frozenset([request_id])])
            if kind == 1:
                tool = rng.choice(TOOLS)
                name = rng.choice(["command", "code", "cwd", "path", "stdin", "session_id"])
                value = rng.choice(["\ud800", "a\udcffb", "\udfff" * 3])
                message, request_id = self._request("tools/call", {"name": tool, "arguments": {name: value}})
                return Case(_dumps(message), [frozenset([request_id])], tool)
            if kind == 2:
                depth = rng.choice([10, 63, 65, 200, 1000, 5000])
                message, request_id = self._request("ping", {})
                line = _dumps(message).replace(b'"params":{}', b'"params":{"a":' + b"[" * depth + b"]" * depth + b"}")
                return Case(line, [frozenset([request_id])])
            size = rng.choice([100_000, 1_000_000, 3_000_000])
            tool = rng.choice(["run_command", "run_python"])
            key = "command" if tool == "run_command" else "code"
            message, request_id = self._request("tools/call", {"name": tool, "arguments": {key: "x" * size}})
            return Case(_dumps(message), [frozenset([request_id])], tool, well_formed=True)
        if roll < 0.88:  # a batch: one answer per request in it, or one null answer when it holds none
            items: list[Any] = []
            answers: list[frozenset[object]] = []
            for _ in range(rng.randrange(4)):
                if rng.random() < 0.7:
                    message, request_id = self._request("ping", {})
                    items.append(message)
                    answers.append(frozenset([request_id]))
                else:
                    items.append(rng.choice([{"jsonrpc": "2.0", "method": "notifications/x"}, 5, "s", None]))
            return Case(_dumps(items), answers or [frozenset([None])])
        if roll < 0.97:  # no answer is due: notifications and responses, valid or not
            line = _dumps(
                rng.choice(
                    [
                        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": self._id()}},
                        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "x"}},
                        {"jsonrpc": "2.0", "method": "notifications/" + _string(rng)[:20]},
                        {"jsonrpc": "2.0", "method": 5},
                        {"jsonrpc": "2.0", "id": self._id(), "result": {}},
                        {"jsonrpc": "2.0", "id": self._id(), "error": {"code": 1, "message": "x"}},
                        {"jsonrpc": "2.0", "id": 1, "result": [1]},
                    ]
                )
            )
            return Case(line, [])
        return Case(rng.choice([b"", b"   ", b"\r"]), [])


def _is_json(value: object) -> bool:
    """False when the value holds NaN or an infinity, which `json.dumps` writes but JSON has not."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


def _dumps(value: object) -> bytes:
    # ensure_ascii: a lone surrogate travels as its \\uXXXX escape, as a JSON client would send it
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode()


@dataclass
class Tally:
    answered: int = 0
    crashes: list[str] | None = None

    def __post_init__(self) -> None:
        self.crashes = []

    def check(self, case: Case, reply: dict[str, Any]) -> None:
        assert self.crashes is not None
        self.answered += 1
        error = reply.get("error")
        if isinstance(error, dict) and error.get("code") == -32603:
            self.crashes.append(f"internal error for {case.line[:200]!r}: {error}")
        result = reply.get("result")
        if case.tool is not None and isinstance(result, dict) and result.get("isError"):
            content = result.get("content") or [{}]
            text = str(content[0].get("text", "")).strip()
            if text == f"Error executing tool {case.tool}":
                self.crashes.append(f"tool crashed for {case.line[:200]!r}")


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


#: Each live session holds its sandbox's pidfd and control socket, and as root the lock of its uid.
_PER_SESSION = 3 if os.geteuid() == 0 else 2


def _pidfds(pid: int) -> int:
    """The pidfds the server holds: one per session sandbox (and pre-warmed one) alive."""
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{name}") == "anon_inode:[pidfd]"
        except OSError:
            continue
    return count


def _settled_session_fds(pid: int, before: int, pidfds_before: int, timeout: float = 20.0) -> tuple[int, int]:
    """(fds, sessions made since `before`) once in-flight work has wound down (bounded wait): the first
    reading where the fds beyond the live sessions' own are at most `before`, else the last one. A sandbox
    being made, or a workdir count walking its tree, holds descriptors for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        sessions = _pidfds(pid) - pidfds_before
        count = _fd_count(pid)
        if count - _PER_SESSION * sessions <= before or time.monotonic() >= deadline:
            return count, sessions
        time.sleep(0.1)


def _remember_session(fuzzer: RawFuzzer, reply: dict[str, Any]) -> None:
    result = reply.get("result")
    structured = result.get("structuredContent") if isinstance(result, dict) else None
    sid = structured.get("session_id") if isinstance(structured, dict) else None
    if isinstance(sid, str) and sid not in fuzzer.session_ids and len(fuzzer.session_ids) < 20:
        fuzzer.session_ids.append(sid)


def _config_file(kit: Kit, sessions_parent: Path, tmp_path: Path) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(kit.to_toml(kit.merged(kit.BASE_CONFIG, {"sessions": {"root": str(sessions_parent)}})))
    return config


class StdioWire:
    """The real `serve` process over pipes, read with a deadline on every line."""

    def __init__(self, kit: Kit, config: Path, tmp_path: Path) -> None:
        params = kit.stdio_params(config, tmp_path)
        self.log = (tmp_path / "server.log").open("wb")
        self.process = subprocess.Popen(
            [params.command, *params.args],
            env=params.env,
            cwd=params.cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        assert self.process.stdout is not None and self.process.stdin is not None
        self.stdin = self.process.stdin
        self.stdout_fd = self.process.stdout.fileno()  # read raw: select() cannot see a Python-side buffer
        self.buffer = bytearray()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.stdout_fd, selectors.EVENT_READ)

    def send(self, line: bytes) -> None:
        self.stdin.write(line + b"\n")
        self.stdin.flush()

    def receive(self, timeout: float = 60.0) -> dict[str, Any]:
        """The next answer (notifications from the server are skipped)."""
        while True:
            message = json.loads(self._line(timeout))
            if "id" in message or "method" not in message:
                return message  # type: ignore[no-any-return]

    def _line(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while (end := self.buffer.find(b"\n")) < 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.selector.select(remaining):
                raise AssertionError(f"no answer within {timeout} s")
            chunk = os.read(self.stdout_fd, 1 << 16)
            assert chunk, "the server closed stdout"
            self.buffer += chunk
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
        return line

    def close(self) -> int:
        self.stdin.close()
        try:
            return self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.log.close()


def test_raw_fuzz_over_stdio_answers_every_request(kit: Kit, sessions_parent: Path, tmp_path: Path) -> None:
    seed, lines = SEED, RAW_LINES
    print(f"raw stdio fuzz: seed {seed}, {lines} lines (HANZO_FUZZ_SEED, HANZO_FUZZ_LINES)")
    fuzzer, tally = RawFuzzer(random.Random(seed)), Tally()
    wire = StdioWire(kit, _config_file(kit, sessions_parent, tmp_path), tmp_path)
    try:
        wire.send(_dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INITIALIZE}))
        assert "result" in wire.receive()
        wire.send(_dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        setup, _ = fuzzer._request("tools/call", {"name": "run_command", "arguments": {"command": SETUP_COMMAND}})
        wire.send(_dumps(setup))
        _remember_session(fuzzer, wire.receive())
        before = _fd_count(wire.process.pid)
        pidfds_before = _pidfds(wire.process.pid)

        def send_case(case: Case) -> None:
            wire.send(case.line)
            for ids in case.answers:
                reply = wire.receive()
                assert reply.get("id") in ids, (case.line[:300], reply)
                tally.check(case, reply)
                _remember_session(fuzzer, reply)

        for _ in range(lines):
            send_case(fuzzer.case())
        # Nothing is left unanswered or answered twice: the next request gets the next answer.
        wire.send(_dumps({"jsonrpc": "2.0", "id": "last", "method": "ping"}))
        assert wire.receive() == {"jsonrpc": "2.0", "id": "last", "result": {}}
        after, sessions = _settled_session_fds(wire.process.pid, before, pidfds_before)
        assert wire.process.poll() is None
    finally:
        status = wire.close()
    print(f"answered {tally.answered}; server fds {before} -> {after} with {sessions} more live sessions")
    assert tally.crashes == []
    assert after - _PER_SESSION * sessions <= before, (
        f"the server's fds grew from {before} to {after} ({sessions} sessions)"
    )
    assert status == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _http_server(kit: Kit, config: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The real `serve --transport http` process; yields it and its endpoint URL once it answers."""
    port = _free_port()
    params = kit.stdio_params(config, tmp_path, "--transport", "http", "--port", str(port))
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [params.command, *params.args], env=params.env, cwd=params.cwd, stdin=subprocess.DEVNULL, stderr=log
        )
        try:
            url = f"http://127.0.0.1:{port}/mcp"
            deadline = time.monotonic() + 60
            while True:  # the process needs a moment to import and bind
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert process.poll() is None and time.monotonic() < deadline, "the HTTP server did not start"
                    time.sleep(0.1)
            yield process, url
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


HTTP_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


def _http_replies(response: httpx2.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a response, whether sent as JSON or as an event stream."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        # split on newlines only: str.splitlines() also splits inside the JSON at U+2028, U+2029, U+0085...
        lines = response.text.split("\n")
        return [json.loads(line[5:]) for line in lines if line.startswith("data:")]
    body = json.loads(response.content) if response.content else []
    return body if isinstance(body, list) else [body]  # a batch is answered with an array


def test_raw_fuzz_over_streamable_http_answers_every_request(kit: Kit, sessions_parent: Path, tmp_path: Path) -> None:
    seed, lines = SEED + 1, RAW_LINES
    print(f"raw HTTP fuzz: seed {seed}, {lines} requests (HANZO_FUZZ_SEED + 1, HANZO_FUZZ_LINES)")
    fuzzer, tally = RawFuzzer(random.Random(seed)), Tally()
    config = _config_file(kit, sessions_parent, tmp_path)
    with _http_server(kit, config, tmp_path) as (process, url), httpx2.Client(timeout=60) as http:
        opened = http.post(url, headers=HTTP_HEADERS, content=_dumps(_initialize(1)))
        assert opened.status_code == 200, opened.text
        headers = {**HTTP_HEADERS, "mcp-protocol-version": INITIALIZE["protocolVersion"]}
        if session := opened.headers.get("mcp-session-id"):
            headers["mcp-session-id"] = session
        http.post(url, headers=headers, content=_dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        setup, _ = fuzzer._request("tools/call", {"name": "run_command", "arguments": {"command": SETUP_COMMAND}})
        (first,) = _http_replies(http.post(url, headers=headers, content=_dumps(setup)))
        _remember_session(fuzzer, first)
        before = _fd_count(process.pid)
        pidfds_before = _pidfds(process.pid)
        for _ in range(lines):
            case = fuzzer.case()
            response = http.post(url, headers=headers, content=case.line)
            assert response.status_code < 500, (case.line[:300], response.status_code, response.text[:300])
            if not case.answers:
                assert response.status_code in (202, 400), (case.line[:300], response.status_code)
                continue
            allowed = frozenset().union(*case.answers) | {None}  # HTTP answers what it cannot parse with null
            replies = _http_replies(response)
            assert replies, (case.line[:300], response.status_code, response.text[:300])
            for reply in replies:
                assert reply.get("id") in allowed, (case.line[:300], reply)
                tally.check(case, reply)
                _remember_session(fuzzer, reply)
            if case.well_formed:  # a valid request is answered with its own id
                assert response.status_code == 200 and [r["id"] for r in replies] == list(case.answers[0])
        (last,) = _http_replies(
            http.post(url, headers=headers, content=_dumps({"jsonrpc": "2.0", "id": "last", "method": "ping"}))
        )
        assert last == {"jsonrpc": "2.0", "id": "last", "result": {}}
        after, sessions = _settled_session_fds(process.pid, before, pidfds_before)
        assert process.poll() is None
    print(f"answered {tally.answered}; server fds {before} -> {after}")
    assert tally.crashes == []
    grown = f"the server's fds grew from {before} to {after} ({sessions} sessions)"
    assert after - _PER_SESSION * sessions <= before, grown


def _initialize(request_id: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": INITIALIZE}
