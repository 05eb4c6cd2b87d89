"""The stdio server process: logs only on stderr, and SIGTERM or stdin EOF mid-call leave no process and no
workdir behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
