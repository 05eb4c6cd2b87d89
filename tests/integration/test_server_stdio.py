"""The stdio server process: logs only on stderr, and SIGTERM or stdin EOF mid-call leave no process and no
workdir behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from mcp import Client

pytestmark = pytest.mark.anyio
Kit = Any


def _config(kit: Kit, sessions_parent: Path, tmp_path: Path) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(kit.to_toml(kit.merged(kit.BASE_CONFIG, {"sessions": {"root": str(sessions_parent)}})))
    return config


def _server_pids(config: Path) -> list[int]:
    """The server process, found by its unique --config path."""
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if str(config) in (proc.info["cmdline"] or []) and proc.info["pid"] != os.getpid():
                pids.append(proc.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids


async def test_sigterm_mid_call_kills_the_command_and_deletes_workdirs(
    kit: Kit, sessions_parent: Path, tmp_path: Path
) -> None:
    config = _config(kit, sessions_parent, tmp_path)
    marker = kit.unique_marker()
    started = anyio.Event()

    async def progress(_done: float, _total: float | None, _message: str | None) -> None:
        started.set()

    async def run(client: Client) -> None:
        try:
            await client.call_tool(
                "run_command", {"command": f"echo started; sleep {marker}"}, progress_callback=progress
            )
        except Exception:  # the server died mid-call: the transport reports it in its own way
            pass

    with anyio.fail_after(90):
        try:
            async with Client(kit.stdio_params(config, tmp_path)) as client, anyio.create_task_group() as group:
                group.start_soon(run, client)
                await started.wait()
                assert kit.marker_pids(marker) and kit.leftover_workdirs(sessions_parent)
                (pid,) = _server_pids(config)
                os.kill(pid, signal.SIGTERM)
                await kit.wait_until(lambda: not psutil.pid_exists(pid) or _zombie(pid))
                group.cancel_scope.cancel()
        except Exception:
            pass  # closing a client whose server is gone may raise; the server's cleanup is what counts
    await kit.wait_until(lambda: kit.marker_pids(marker) == [])
    assert kit.leftover_workdirs(sessions_parent) == []


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _send(process: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
    assert process.stdin is not None
    process.stdin.write(json.dumps(message).encode() + b"\n")
    process.stdin.flush()


async def _receive(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    assert process.stdout is not None
    line = await anyio.to_thread.run_sync(process.stdout.readline)
    assert line, "the server closed stdout"
    return json.loads(line)  # type: ignore[no-any-return]


async def test_stdin_eof_mid_call_kills_the_command_and_deletes_workdirs(
    kit: Kit, sessions_parent: Path, tmp_path: Path
) -> None:
    config = _config(kit, sessions_parent, tmp_path)
    params = kit.stdio_params(config, tmp_path)
    marker = kit.unique_marker()
    process = subprocess.Popen(
        [params.command, *params.args], env=params.env, cwd=params.cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        with anyio.fail_after(60):
            # A handshake-era client speaking raw JSON-RPC, which hangs up while its call runs.
            _send(process, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INITIALIZE})
            assert (await _receive(process))["id"] == 1
            _send(process, {"jsonrpc": "2.0", "method": "notifications/initialized"})
            call = {"name": "run_command", "arguments": {"command": f"echo started; sleep {marker}"}}
            _send(
                process,
                {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "tools/call",
                    "params": {**call, "_meta": {"progressToken": "p"}},
                },
            )
            while (await _receive(process)).get("method") != "notifications/progress":
                pass
            assert kit.marker_pids(marker) and kit.leftover_workdirs(sessions_parent)
            assert process.stdin is not None
            process.stdin.close()
            while process.poll() is None:
                await anyio.sleep(0.05)
        assert process.returncode == 0
        await kit.wait_until(lambda: kit.marker_pids(marker) == [])
        assert kit.leftover_workdirs(sessions_parent) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


INITIALIZE = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}


async def test_stdout_carries_only_protocol_messages(kit: Kit, sessions_parent: Path, tmp_path: Path) -> None:
    # The command writes to its own stdout and the server logs: only JSON-RPC may reach the client's pipe.
    config = _config(kit, sessions_parent, tmp_path)
    config.write_text(config.read_text().replace('log_level = "WARNING"', 'log_level = "DEBUG"'))
    with anyio.fail_after(60):
        async with Client(kit.stdio_params(config, tmp_path)) as client:
            result = await client.call_tool("run_command", {"command": "echo to-stdout; echo to-stderr >&2"})
            assert not result.is_error
            assert result.structured_content is not None
            assert result.structured_content["stdout"] == "to-stdout\n"


def test_serve_module_runs_without_a_config_file(tmp_path: Path, kit: Kit) -> None:
    # `python -m hanzo_sandbox_mcp serve` with defaults only: starts, and exits 0 at EOF.
    completed = subprocess.run(
        [sys.executable, "-m", "hanzo_sandbox_mcp", "serve"],
        env=kit.child_env(tmp_path),
        cwd=kit.REPO_ROOT,
        input=b"",
        capture_output=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == b""


# -- malformed input: every request that carries an id is answered -------------------------------------


@contextmanager
def _raw_server(kit: Kit, sessions_parent: Path, tmp_path: Path, **config: Any) -> Iterator[subprocess.Popen[bytes]]:
    """The stdio server process spoken to in raw JSON-RPC; stdin is closed (EOF) and the process reaped at exit."""
    path = tmp_path / "config.toml"
    path.write_text(kit.to_toml(kit.merged(kit.BASE_CONFIG, {"sessions": {"root": str(sessions_parent)}}, config)))
    params = kit.stdio_params(path, tmp_path)
    process = subprocess.Popen(
        [params.command, *params.args], env=params.env, cwd=params.cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        yield process
    finally:
        _stop(process)


def _send_raw(process: subprocess.Popen[bytes], line: bytes) -> None:
    assert process.stdin is not None
    process.stdin.write(line + b"\n")
    process.stdin.flush()


async def _handshake(process: subprocess.Popen[bytes]) -> None:
    _send(process, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INITIALIZE})
    assert "result" in await _receive(process)
    _send(process, {"jsonrpc": "2.0", "method": "notifications/initialized"})


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None and not process.stdin.closed:
        process.stdin.close()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _call(request_id: object, name: str, arguments: object) -> bytes:
    message = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }
    return json.dumps(message).encode()


DEEP = b"[" * 1000 + b"]" * 1000
#: (line, the id of the answer, its JSON-RPC error code or None for a result)
MALFORMED: list[tuple[bytes, object, int | None]] = [
    (b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":[1,2]}', 2, -32600),
    (b'{"jsonrpc":"2.0","id":3,"method":"ping","params":{"a":' + DEEP + b"}}", 3, -32700),
    (b'\xef\xbb\xbf{"jsonrpc":"2.0","id":4,"method":"ping"}', 4, None),
    (b'{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}', None, -32600),
    (b'{"jsonrpc":"2.0","id":5.5,"method":"ping"}', 5.5, -32600),
    (b'{"jsonrpc":"2.0","id":null,"method":"ping"}', None, -32600),
    (b'{"jsonrpc":"2.0","id":6,"method":"ping"', 6, -32700),
    (b"\xff\xfe", None, -32700),
    (b'"just a string"', None, -32600),
]


async def test_every_malformed_request_gets_an_answer_with_its_id(
    kit: Kit, sessions_parent: Path, tmp_path: Path
) -> None:
    with _raw_server(kit, sessions_parent, tmp_path) as process, anyio.fail_after(60):
        await _handshake(process)
        for line, request_id, code in MALFORMED:
            _send_raw(process, line)
            reply = await _receive(process)
            assert reply["id"] == request_id, (line[:80], reply)
            assert (reply["error"]["code"] if code is not None else None) == code, (line[:80], reply)
        _send_raw(process, b'[{"jsonrpc":"2.0","id":7,"method":"ping"},{"jsonrpc":"2.0","id":8,"method":"ping"}]')
        batch = [await _receive(process), await _receive(process)]
        assert [(r["id"], r["error"]["code"]) for r in batch] == [(7, -32600), (8, -32600)]
        # A lone surrogate in any string argument reaches the server's own checks: a clear tool error.
        for request_id, arguments in enumerate(
            [
                {"command": "echo \ud800"},
                {"command": "ls", "cwd": "\udcff"},
                {"command": "ls", "session_id": "\ud800"},
            ],
            start=10,
        ):
            _send_raw(process, _call(request_id, "run_command", arguments))
            reply = await _receive(process)
            assert reply["id"] == request_id and reply["result"]["isError"] is True, reply
            text = reply["result"]["content"][0]["text"]
            assert "Unicode" in text or "session" in text, text
        _send_raw(process, _call(20, "no_such_tool\ud800", {}))
        unknown = await _receive(process)
        assert unknown["id"] == 20 and unknown["result"]["isError"] is True
        _send_raw(process, _call(21, "run_command", {"command": "echo still-serving"}))
        final = await _receive(process)
        assert final["result"]["structuredContent"]["stdout"] == "still-serving\n"
    assert process.returncode == 0


async def test_a_request_before_initialize_is_told_to_initialize(
    kit: Kit, sessions_parent: Path, tmp_path: Path
) -> None:
    with _raw_server(kit, sessions_parent, tmp_path) as process, anyio.fail_after(60):
        _send(process, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        reply = await _receive(process)
    assert reply["id"] == 1 and reply["error"]["code"] == -32602
    assert "initialize" in reply["error"]["message"] and reply["error"]["data"]


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


async def test_an_overlong_line_is_discarded_as_it_streams_and_answered(
    kit: Kit, sessions_parent: Path, tmp_path: Path
) -> None:
    cap = 1024 * 1024
    size = 128 * 1024 * 1024
    with _raw_server(kit, sessions_parent, tmp_path, stdio={"max_line_bytes": cap}) as process, anyio.fail_after(120):
        await _handshake(process)
        _send(process, {"jsonrpc": "2.0", "id": 1, "method": "ping"})
        await _receive(process)
        before = _peak_rss_kb(process.pid)
        head = b'{"jsonrpc":"2.0","id":"big","method":"tools/call",'
        head += b'"params":{"name":"run_command","arguments":{"command":"'
        assert process.stdin is not None
        process.stdin.write(head)
        block = b"x" * (1024 * 1024)
        for _ in range(size // len(block)):
            process.stdin.write(block)
        _send_raw(process, b'"}}}')
        reply = await _receive(process)
        after = _peak_rss_kb(process.pid)
        _send(process, {"jsonrpc": "2.0", "id": 2, "method": "ping"})
        pong = await _receive(process)
    assert reply["id"] == "big" and reply["error"]["code"] == -32600 and "max_line_bytes" in reply["error"]["message"]
    assert pong == {"jsonrpc": "2.0", "id": 2, "result": {}}
    # The line was 128 MiB; the server held at most the 1 MiB cap plus a chunk of it (the SDK's reader: all of it).
    assert after - before < 16 * 1024, (before, after)


async def test_the_largest_legal_request_fits_the_default_line_cap(
    kit: Kit, sessions_parent: Path, tmp_path: Path
) -> None:
    # 4 MiB of stdin made of control characters: 24 MiB once JSON-escaped (each is sent as \u0001).
    stdin = "\x01" * (4 * 1024 * 1024)
    async with kit.connect_to("stdio", sessions_parent, tmp_path, {}) as conn:
        result = await kit.ok(conn, "run_command", command="wc -c", stdin=stdin)
    assert result["stdout"].strip() == str(len(stdin))


def test_serve_with_stdin_closed_is_one_clear_error(tmp_path: Path, kit: Kit) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "hanzo_sandbox_mcp", "serve"],
        env=kit.child_env(tmp_path),
        cwd=kit.REPO_ROOT,
        preexec_fn=lambda: os.close(0),  # the child starts with no fd 0 at all
        capture_output=True,
        timeout=60,
    )
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.decode().strip().endswith("needs an open stdin and stdout (fd 0 or 1 is closed)")
    assert b"Traceback" not in completed.stderr
