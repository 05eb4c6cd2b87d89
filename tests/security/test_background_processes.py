"""Background processes (`start_process`): they outlive their call inside their session's sandbox, are
read, written and stopped through the library API, stay within their caps, and die with their session.

Every test drives `SandboxService` on the real launcher and kernel, with real programs. Each isolation
claim has its positive control in the same test (the session's own later call reaches what another
session must not).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from _security_support import SANDBOX_PYTHON
from support.processes import kill_marker, marker_pids, unique_sleep, wait_marker_gone

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(os.uname().sysname != "Linux", reason="Linux sandbox")]

_FETCH = (
    "import sys, time, urllib.request\n"
    "for _ in range(100):\n"
    "    try:\n"
    "        print(urllib.request.urlopen('http://127.0.0.1:%s/', timeout=2).status); break\n"
    "    except OSError as exc:\n"
    "        err = exc; time.sleep(0.1)\n"
    "else:\n"
    "    sys.exit(f'unreachable: {err}')\n"
)


def _settings(root: Path, quota_mode: str = "auto", **processes: Any) -> Any:
    from hanzo_sandbox_mcp.config import ExecSettings, ProcessSettings, SessionSettings, Settings
    from hanzo_sandbox_mcp.policy import SandboxPolicy

    return Settings(
        exec=ExecSettings(python=SANDBOX_PYTHON),
        sessions=SessionSettings(root=root, pool_size=0, quota_mode=quota_mode),
        policy=SandboxPolicy(workdir_quota_mb=64),
        processes=ProcessSettings(**processes),
    )


@pytest.fixture
def sessions_root(work_root: Path) -> Path:
    path = Path(tempfile.mkdtemp(prefix="sessions-", dir=work_root))
    path.chmod(0o711)
    return path


@asynccontextmanager
async def _service(root: Path, quota_mode: str = "auto", **processes: Any) -> AsyncIterator[Any]:
    from hanzo_sandbox_mcp.service import SandboxService

    async with SandboxService(_settings(root, quota_mode, **processes)) as service:
        yield service


async def _read_until(service: Any, process_id: str, needle: str, timeout: float = 20.0) -> str:
    """stdout of the process until it holds `needle` (bounded), read with wait_s (no busy loop)."""
    seen = ""
    with anyio.fail_after(timeout):
        while needle not in seen:
            out = await service.read_process(process_id, wait_s=5)
            seen += out.stdout.text
            if out.process.state == "exited" and needle not in seen:
                raise AssertionError(f"exited before printing {needle!r}: {out}")
    return seen


async def test_background_server_is_reachable_from_its_session_and_from_no_other(sessions_root: Path) -> None:
    port = 8000 + os.getpid() % 1000
    async with _service(sessions_root) as service:
        one = (await service.create_session()).session_id
        two = (await service.create_session()).session_id
        started = await service.start_process(
            f"exec {SANDBOX_PYTHON} -m http.server {port} --bind 127.0.0.1", session_id=one
        )
        assert started.process.state == "running" and started.process.pid is not None
        assert started.protection.network_isolated
        mine = await service.run_command(f'{SANDBOX_PYTHON} -c "{_FETCH % port}"', session_id=one)
        assert mine.exit_code == 0 and mine.stdout.strip() == "200", mine  # control: the session reaches it
        assert [p.process_id for p in mine.processes] == [started.process.process_id]
        other = await service.run_command(
            f"{SANDBOX_PYTHON} -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/', "
            'timeout=2)"',
            session_id=two,
        )
        assert other.exit_code != 0 and "refused" in other.stderr, other
        assert other.processes == ()


async def test_a_later_call_of_the_session_kills_a_background_process_by_pid(sessions_root: Path) -> None:
    marker = unique_sleep()
    async with _service(sessions_root) as service:
        started = await service.start_process(f"sleep {marker}")
        # Control: it runs, on the host (start_process returns once the wrapper reported its pid, a moment
        # before the exec'd command shows its own command line).
        with anyio.fail_after(10):
            while not marker_pids(marker):
                await anyio.sleep(0.01)
        killed = await service.run_command(f"kill {started.process.pid}", session_id=started.process.session_id)
        assert killed.exit_code == 0, killed
        with anyio.fail_after(20):
            out = await service.read_process(started.process.process_id, wait_s=10)
            while out.process.state == "running":
                out = await service.read_process(started.process.process_id, wait_s=10)
        assert out.process.signal == 15 and out.process.stopped_by is None
        assert wait_marker_gone(marker) == []


async def test_python_repl_fed_through_write_process_answers(sessions_root: Path) -> None:
    async with _service(sessions_root) as service:
        started = await service.start_process(f"{SANDBOX_PYTHON} -i -q -u")
        pid = started.process.process_id
        written = await service.write_process(pid, "print(6 * 7)\n")
        assert written.written_bytes == len("print(6 * 7)\n") and not written.stdin_closed
        assert "42" in await _read_until(service, pid, "42")
        await service.write_process(pid, "print('second', 2 ** 10)\n")
        assert "second 1024" in await _read_until(service, pid, "second 1024")
        closed = await service.write_process(pid, "", close_stdin=True)
        assert closed.stdin_closed
        with anyio.fail_after(20):
            out = await service.read_process(pid, wait_s=10)
            while out.process.state == "running":
                out = await service.read_process(pid, wait_s=10)
        assert out.process.exit_code == 0  # end of file ends the REPL


async def test_stop_process_kills_a_process_that_ignores_sigterm(sessions_root: Path) -> None:
    marker = unique_sleep()
    try:
        async with _service(sessions_root, stop_grace_s=1.0) as service:
            started = await service.start_process(f"trap '' TERM; echo ready; sleep {marker}; echo survived")
            pid = started.process.process_id
            await _read_until(service, pid, "ready")
            with anyio.fail_after(30):
                stopped = await service.stop_process(pid)
            assert stopped.process.state == "exited"
            assert stopped.process.signal == 9  # SIGTERM was ignored: the tree was killed
            assert stopped.process.stopped_by == "stop_process (SIGTERM)"
            assert "survived" not in stopped.stdout.text
            assert wait_marker_gone(marker) == []
    finally:
        kill_marker(marker)


async def test_stop_process_delivers_the_signal_asked_for(sessions_root: Path) -> None:
    async with _service(sessions_root) as service:
        started = await service.start_process("trap 'echo got-int; exit 3' INT; echo ready; while :; do sleep 1; done")
        pid = started.process.process_id
        await _read_until(service, pid, "ready")
        with anyio.fail_after(30):
            stopped = await service.stop_process(pid, signal="INT")
        assert stopped.process.exit_code == 3 and "got-int" in stopped.stdout.text


async def test_caps_are_reached_with_errors_naming_them(sessions_root: Path) -> None:
    from hanzo_sandbox_mcp.errors import SessionLimitReached

    async with _service(sessions_root, max_per_session=2, max_total=3) as service:
        one = (await service.create_session()).session_id
        two = (await service.create_session()).session_id
        for _ in range(2):
            await service.start_process("sleep 300", session_id=one)
        with pytest.raises(SessionLimitReached, match=r"processes\.max_per_session"):
            await service.start_process("sleep 300", session_id=one)
        await service.start_process("sleep 300", session_id=two)
        with pytest.raises(SessionLimitReached, match=r"processes\.max_total"):
            await service.start_process("sleep 300", session_id=two)


async def test_output_past_the_buffer_is_dropped_and_counted(sessions_root: Path) -> None:
    async with _service(sessions_root, buffer_bytes=4096) as service:
        started = await service.start_process("head -c 100000 /dev/zero | tr '\\0' a; echo; echo end")
        pid = started.process.process_id
        with anyio.fail_after(20):
            process = service.processes.get(pid, None)
            await process.ended.wait()
        out = await service.read_process(pid)
        assert out.stdout.dropped_bytes == 100005 - 4096 and out.stdout.text.endswith("end\n")
        assert out.stdout.offset == 100005 - 4096 and not out.stdout.more


async def test_process_ids_are_bound_to_their_session(sessions_root: Path) -> None:
    from hanzo_sandbox_mcp.errors import RequestError

    async with _service(sessions_root) as service:
        one = (await service.create_session()).session_id
        two = (await service.create_session()).session_id
        started = await service.start_process("sleep 300", session_id=one)
        pid = started.process.process_id
        assert (await service.read_process(pid, session_id=one)).process.state == "running"  # control
        with pytest.raises(RequestError, match="does not belong to session"):
            await service.read_process(pid, session_id=two)
        assert (await service.list_processes(two)).processes == ()
        with pytest.raises(RequestError, match="never issued"):
            await service.read_process("A" * 32)


async def test_a_running_process_keeps_its_session_from_idle_expiry(sessions_root: Path) -> None:
    from hanzo_sandbox_mcp.config import ProcessSettings, SessionSettings
    from hanzo_sandbox_mcp.service import SandboxService

    settings = _settings(sessions_root).model_copy(
        update={"sessions": SessionSettings(root=sessions_root, pool_size=0, idle_ttl_s=1.0)}
    )
    now = [0.0]
    async with SandboxService(settings, clock=lambda: now[0]) as service:
        assert service.settings.processes == ProcessSettings()
        idle = (await service.create_session()).session_id
        held = await service.start_process("sleep 300")
        now[0] += 10
        expired = await service.sessions.expire_idle()
        assert idle in expired  # control: an idle session without a process expires
        assert held.process.session_id not in expired


async def test_close_session_and_shutdown_leave_no_process_on_the_host(sessions_root: Path) -> None:
    from hanzo_sandbox_mcp.errors import RequestError

    closed_marker, shutdown_marker = unique_sleep(), unique_sleep()
    try:
        async with _service(sessions_root) as service:
            started = await service.start_process(f"sleep {closed_marker} & sleep {closed_marker}")
            assert marker_pids(closed_marker)  # control: they run
            await service.close_session(started.process.session_id)
            assert wait_marker_gone(closed_marker) == []
            with pytest.raises(RequestError, match="its session ended"):
                await service.read_process(started.process.process_id)
            await service.start_process(f"setsid sleep {shutdown_marker}; sleep {shutdown_marker}")
            with anyio.fail_after(10):
                while not marker_pids(shutdown_marker):
                    await anyio.sleep(0.05)
        assert wait_marker_gone(shutdown_marker) == []
    finally:
        kill_marker(closed_marker, shutdown_marker)


async def test_a_process_is_stopped_at_its_lifetime(sessions_root: Path) -> None:
    async with _service(sessions_root, max_lifetime_s=1.0, stop_grace_s=1.0) as service:
        started = await service.start_process("sleep 300")
        with anyio.fail_after(20):
            out = await service.read_process(started.process.process_id, wait_s=10)
            while out.process.state == "running":
                out = await service.read_process(started.process.process_id, wait_s=10)
        assert out.process.signal == 15 and out.process.stopped_by == "it reached its lifetime of 1 s"


async def test_the_polled_quota_stops_a_background_process_that_overfills_the_workdir(sessions_root: Path) -> None:
    marker = unique_sleep()
    try:
        async with _service(sessions_root, "polled") as service:
            small = await service.start_process(f"head -c 1M /dev/zero > small && echo wrote && sleep {marker}")
            await _read_until(service, small.process.process_id, "wrote")
            assert (await service.read_process(small.process.process_id)).process.state == "running"  # control
            await service.stop_process(small.process.process_id, signal="KILL")
            big = await service.start_process("for f in a b c; do head -c 30M /dev/zero > $f; done; sleep 300")
            with anyio.fail_after(30):
                out = await service.read_process(big.process.process_id, wait_s=10)
                while out.process.state == "running":
                    out = await service.read_process(big.process.process_id, wait_s=10)
            assert out.process.stopped_by == "the session's disk quota" and out.process.signal == 9, out
    finally:
        kill_marker(marker)


def test_ring_buffer_keeps_the_tail_with_offsets() -> None:
    from hanzo_sandbox_mcp.processes import RingBuffer

    ring = RingBuffer(8)
    ring.feed(b"0123")
    assert ring.read(0, 100, final=False) == (0, b"0123", 0)
    ring.feed(b"456789ab")
    assert ring.read(4, 100, final=False) == (4, b"456789ab", 0)
    ring.feed(b"cd")
    assert ring.read(4, 100, final=False) == (6, b"6789abcd", 2)
    ring.feed("é".encode())  # a character must not be split by a read while the process runs
    assert ring.read(14, 1, final=False) == (14, b"", 0)
    assert ring.read(14, 2, final=False) == (14, "é".encode(), 0)
