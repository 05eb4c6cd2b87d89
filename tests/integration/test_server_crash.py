"""A killed server leaves nothing behind: its watchdog removes its workdirs, or the next server does."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from mcp import Client

from hanzo_sandbox_mcp.reaper import ROOT_PREFIX

pytestmark = pytest.mark.anyio
Kit = Any
#: How the client's transport reports a server that died under it.
_TRANSPORT_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, RuntimeError)


def _config(kit: Kit, sessions_parent: Path, tmp_path: Path, name: str) -> Path:
    config = tmp_path / f"{name}.toml"
    config.write_text(kit.to_toml(kit.merged(kit.BASE_CONFIG, {"sessions": {"root": str(sessions_parent)}})))
    return config


def _roots(sessions_parent: Path) -> set[Path]:
    return {p for p in sessions_parent.iterdir() if p.name.startswith(ROOT_PREFIX)}


def _processes(*needles: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if all(any(needle in arg for arg in cmdline) for needle in needles) and proc.pid != os.getpid():
            found.append(proc)
    return found


def _sigkill(proc: psutil.Process) -> None:
    """SIGKILL and wait until it is dead (a zombie counts: its parent, not us, would reap it)."""
    proc.send_signal(signal.SIGKILL)
    for _ in range(500):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.02)
    raise AssertionError(f"{proc} survived SIGKILL")


async def _make_files(client: Client) -> str:
    result = await client.call_tool("run_command", {"command": "mkdir -p a/b && echo kept > a/b/notes && pwd"})
    assert not result.is_error, result
    assert result.structured_content is not None
    return str(result.structured_content["stdout"]).strip()


def _sessions_root(workdir: Path) -> Path:
    """The sessions root a workdir is in: its parent, or (a root server) the parent of its filesystem."""
    return next(path for path in workdir.parents if path.name.startswith(ROOT_PREFIX))


async def test_sigkill_of_the_server_removes_its_workdirs(kit: Kit, sessions_parent: Path, tmp_path: Path) -> None:
    config = _config(kit, sessions_parent, tmp_path, "killed")
    with anyio.fail_after(90):
        try:
            async with Client(kit.stdio_params(config, tmp_path)) as client:
                workdir = Path(await _make_files(client))
                assert (workdir / "a" / "b" / "notes").exists()
                servers = _processes("serve", str(config))
                assert len(servers) == 1, servers
                _sigkill(servers[0])
        except* _TRANSPORT_GONE:
            pass
        await kit.wait_until(lambda: not workdir.exists() and not _roots(sessions_parent))


async def test_the_next_server_removes_what_a_dead_server_and_watchdog_left(
    kit: Kit, sessions_parent: Path, tmp_path: Path
) -> None:
    live_config = _config(kit, sessions_parent, tmp_path, "live")
    dead_config = _config(kit, sessions_parent, tmp_path, "dead")
    next_config = _config(kit, sessions_parent, tmp_path, "next")
    with anyio.fail_after(120):
        async with Client(kit.stdio_params(live_config, tmp_path)) as live:
            live_workdir = Path(await _make_files(live))
            try:
                async with Client(kit.stdio_params(dead_config, tmp_path)) as doomed:
                    dead_workdir = Path(await _make_files(doomed))
                    # The whole machine went down: the watchdog dies with the server.
                    watchdogs = _processes("reaper.py", "watch", str(_sessions_root(dead_workdir)))
                    servers = _processes("serve", str(dead_config))
                    assert len(watchdogs) == 1 and len(servers) == 1, (watchdogs, servers)
                    _sigkill(watchdogs[0])
                    _sigkill(servers[0])
            except* _TRANSPORT_GONE:
                pass
            dead_root = _sessions_root(dead_workdir)
            # Control: with its server and watchdog gone, nothing else removes the dead root.
            assert (dead_workdir / "a" / "b" / "notes").exists()
            async with Client(kit.stdio_params(next_config, tmp_path)) as following:
                await kit.wait_until(lambda: not dead_root.exists())
                result = await following.call_tool("run_command", {"command": "true"})
                assert not result.is_error
            # The live server's files were never touched.
            assert (live_workdir / "a" / "b" / "notes").read_text() == "kept\n"
            result = await live.call_tool("run_command", {"command": "cat a/b/notes"})
            assert result.structured_content is not None and result.structured_content["stdout"] == "kept\n"
