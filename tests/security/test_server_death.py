"""SIGKILL of the server takes its sandboxes with it: no command outlives the server that started it.

The real server (`python -m hanzo_sandbox_mcp serve` over stdio, spoken to in raw JSON-RPC) runs a long
`sleep` with a unique marker; the server is then SIGKILLed, which leaves it no chance to clean up. The
launcher's supervisor has a parent-death signal, the init dies with the supervisor and the pid namespace
with its init, so every process of the sandbox must be gone (a bounded wait, no timing assertion).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from support.processes import kill_marker, marker_pids, unique_sleep, wait_marker_gone

REPO_ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 30.0

pytestmark = pytest.mark.skipif(os.uname().sysname != "Linux", reason="the Linux launcher")


def _send(stdin: IO[bytes], message: dict[str, Any]) -> None:
    stdin.write(json.dumps(message).encode() + b"\n")
    stdin.flush()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "PYTHONPATH": str(REPO_ROOT),
        "LANG": "C.UTF-8",
    }
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hanzo_sandbox_mcp", "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            cwd=str(REPO_ROOT),
        )
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=DEADLINE_S)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def _initialize(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    _send(
        proc.stdin,
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "test-server-death", "version": "0"},
            },
        },
    )
    reply = json.loads(proc.stdout.readline())  # the server answers initialize at once (bounded by the fixture)
    assert reply.get("id") == 1 and "result" in reply, reply
    _send(proc.stdin, {"jsonrpc": "2.0", "method": "notifications/initialized"})


def test_sigkill_of_the_server_kills_every_process_of_its_sandbox(server: subprocess.Popen[bytes]) -> None:
    marker = unique_sleep()
    try:
        _initialize(server)
        assert server.stdin is not None
        command = f"sleep {marker} & sleep {marker}"  # a background child too: the whole tree must go
        call = {"name": "run_command", "arguments": {"command": command, "timeout_s": 600}}
        _send(server.stdin, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call})
        deadline = time.monotonic() + DEADLINE_S
        while len(marker_pids(marker)) < 2:  # precondition: both sleeps run in the sandbox
            assert server.poll() is None, "the server exited before the command started"
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.05)
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=DEADLINE_S)
        assert not wait_marker_gone(marker, timeout=DEADLINE_S), "the sandbox outlived the SIGKILLed server"
    finally:
        kill_marker(marker)
