"""Warm session sandboxes: what a session keeps between its calls, what it never shares, and what never
outlives a call, a dead sandbox or the session itself.

Every test drives the library API (`SandboxService`) on the real launcher and kernel. Each isolation claim
comes with its positive control in the same test: the state that another session must not see is first
seen by its own session, so a test cannot pass because nothing was there to see.
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
from support.controls import run_as
from support.processes import marker_pids, unique_sleep, wait_marker_gone

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(os.uname().sysname != "Linux", reason="Linux sandbox")]

IS_ROOT = os.geteuid() == 0


def _settings(root: Path, **sessions: Any) -> Any:
    from hanzo_sandbox_mcp.config import ExecSettings, SessionSettings, Settings
    from hanzo_sandbox_mcp.policy import SandboxPolicy

    return Settings(
        exec=ExecSettings(python=SANDBOX_PYTHON),
        sessions=SessionSettings(root=root, **sessions),
        policy=SandboxPolicy(workdir_quota_mb=64),
    )


@pytest.fixture
def sessions_root(work_root: Path) -> Path:
    path = Path(tempfile.mkdtemp(prefix="sessions-", dir=work_root))
    path.chmod(0o711)
    return path


@asynccontextmanager
async def _service(root: Path, **sessions: Any) -> AsyncIterator[Any]:
    from hanzo_sandbox_mcp.service import SandboxService

    async with SandboxService(_settings(root, **sessions)) as service:
        yield service


async def _run(service: Any, command: str, session_id: str | None = None, **kwargs: Any) -> Any:
    result = await service.run_command(command, session_id=session_id, **kwargs)
    assert result.error is None or "timed out" in (result.failure() or ""), result
    return result


# --- what a session keeps, and never shares --------------------------------------------------------------


async def test_session_tmp_persists_across_its_calls_and_no_other_session_sees_it(sessions_root: Path) -> None:
    async with _service(sessions_root, pool_size=0) as service:
        one = (await service.create_session()).session_id
        two = (await service.create_session()).session_id
        await _run(service, "echo kept > /tmp/mark && echo shm > /dev/shm/mark", one)
        again = await _run(service, "cat /tmp/mark /dev/shm/mark", one)
        assert again.stdout == "kept\nshm\n"  # control: the session's own next call sees its files
        other = await service.run_command("cat /tmp/mark /dev/shm/mark", session_id=two)
        assert other.exit_code != 0 and other.stdout == ""
        assert "No such file" in other.stderr


async def test_each_session_has_its_own_network_namespace(sessions_root: Path) -> None:
    async with _service(sessions_root, pool_size=0) as service:
        one = (await service.create_session()).session_id
        two = (await service.create_session()).session_id
        first = (await _run(service, "readlink /proc/self/ns/net", one)).stdout
        second = (await _run(service, "readlink /proc/self/ns/net", one)).stdout
        other = (await _run(service, "readlink /proc/self/ns/net", two)).stdout
        assert first.startswith("net:[") and first == second  # the session's loopback lasts between calls
        assert other != first
        assert os.readlink("/proc/self/ns/net") + "\n" not in (first, other)


async def test_a_daemon_started_by_a_call_is_dead_when_the_call_returns(sessions_root: Path) -> None:
    marker = unique_sleep()
    async with _service(sessions_root, pool_size=0) as service:
        session = (await service.create_session()).session_id
        # Double fork into a new session: neither the process group nor the parent link reaches it.
        result = await _run(
            service,
            f"setsid sh -c 'sleep {marker} & exit 0' </dev/null >/dev/null 2>&1; pgrep -f 'sleep {marker}'",
            session,
        )
        assert result.stdout.strip(), "control: the daemon was running while its call did"
        assert not wait_marker_gone(marker), "the daemon outlived the call that started it"
        assert (await _run(service, "echo alive", session)).stdout == "alive\n"  # the session itself lives on


async def test_a_killed_session_sandbox_is_replaced_with_the_workdir_intact(sessions_root: Path) -> None:
    async with _service(sessions_root, pool_size=0) as service:
        session_id = (await service.create_session()).session_id
        first = await _run(service, "echo data > kept.txt; echo tmp > /tmp/t; readlink /proc/self/ns/net", session_id)
        assert first.sandbox_restarted is None
        session = await service.sessions.get(session_id)
        sandbox = session.sandbox.current
        sandbox.kill()  # from outside, as the OOM killer or an operator would
        with anyio.fail_after(10):
            while sandbox.alive:
                await anyio.sleep(0.01)
        after = await _run(service, "cat kept.txt; ls -A /tmp; readlink /proc/self/ns/net", session_id)
        assert after.exit_code == 0
        lines = after.stdout.splitlines()
        assert lines[0] == "data"  # the workdir survived
        assert "t" not in lines[1:-1]  # /tmp was lost, as the result says
        assert lines[-1] != first.stdout.splitlines()[-1]  # a new sandbox
        assert after.sandbox_restarted and "died" in after.sandbox_restarted
        assert (await _run(service, "true", session_id)).sandbox_restarted is None


async def test_the_pool_serves_a_new_session_and_refills(sessions_root: Path) -> None:
    async with _service(sessions_root, pool_size=2) as service:
        sessions = service.sessions
        with anyio.fail_after(30):
            while sessions.pooled < 2:
                await anyio.sleep(0.02)
        ready = [home.sandbox for home in sessions._pool]
        info = await service.create_session()
        session = await sessions.get(info.session_id)
        assert session.sandbox.current is ready[0]  # the pre-warmed sandbox, not a new one
        assert sessions.pooled == 1
        result = await _run(service, "echo warm", info.session_id)
        assert result.stdout == "warm\n" and result.sandbox_restarted is None
        with anyio.fail_after(30):
            while sessions.pooled < 2:
                await anyio.sleep(0.02)
        assert all(home.sandbox not in ready[:1] for home in sessions._pool)


@pytest.mark.skipif(not IS_ROOT, reason="per-session uids need a root server; a non-root server has one uid")
async def test_each_session_runs_as_its_own_uid_as_root(sessions_root: Path, tmp_path: Path) -> None:
    async with _service(sessions_root, pool_size=0, uid_lock_dir=tmp_path / "uids") as service:
        first, last = service.sessions.uid_range
        ids = []
        for _ in range(3):
            session_id = (await service.create_session()).session_id
            result = await _run(service, "id -u; id -g; stat -c '%u %a' .", session_id)
            uid, gid, owner = result.stdout.splitlines()
            assert uid == gid and owner == f"{uid} 700"  # the workdir is the session uid's alone
            assert first <= int(uid) <= last and result.protection.uid == int(uid)
            ids.append(int(uid))
        assert len(set(ids)) == 3
        caps = await service.capabilities()
        assert caps.command_uid is None and caps.session_uids == (first, last)


@pytest.mark.skipif(not IS_ROOT, reason="per-session uids need a root server; a non-root server has one uid")
async def test_one_session_cannot_read_another_sessions_workdir_by_uid_alone(
    sessions_root: Path, tmp_path: Path
) -> None:
    """DAC between sessions: with the private root and Landlock out of the way (reading the other workdir
    through its host path from an unsandboxed process of the first session's uid), the 0700 workdir of
    another uid still refuses; the same read as the owner's uid succeeds (the control)."""
    async with _service(sessions_root, pool_size=0, uid_lock_dir=tmp_path / "uids") as service:
        one = (await service.create_session()).session_id
        two = (await service.create_session()).session_id
        await _run(service, "echo secret > s.txt", two)
        uid_one = (await _run(service, "id -u", one)).protection.uid
        uid_two = (await _run(service, "id -u", two)).protection.uid
        target = (await service.sessions.get(two)).workdir / "s.txt"
        assert run_as(["cat", str(target)], uid_two).stdout == "secret\n"
        denied = run_as(["cat", str(target)], uid_one)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr


# --- nothing leaks --------------------------------------------------------------------------------------


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _mounts_below(root: Path) -> int:
    with open("/proc/self/mountinfo") as info:
        return sum(1 for line in info if line.split()[4].startswith(str(root) + "/"))


async def test_nothing_leaks_after_1000_calls_with_timeouts_and_cancels(sessions_root: Path) -> None:
    marker = unique_sleep()
    async with _service(sessions_root, pool_size=1) as service:
        sessions = [(await service.create_session()).session_id for _ in range(3)]
        await _run(service, "true", sessions[0])
        with anyio.fail_after(30):
            while service.sessions.pooled < 1:
                await anyio.sleep(0.02)
        fds, mounts = _fds(), _mounts_below(sessions_root)
        outcomes = {"ran": 0, "timed_out": 0, "cancelled": 0}

        async def one(index: int) -> None:
            session_id = sessions[index % 3]
            if index % 10 == 3:  # a timeout, with a daemon and a TERM-ignoring child left behind
                command = f"trap '' TERM; (setsid sleep {marker} &); sleep {marker}"
                result = await service.run_command(command, session_id=session_id, timeout_s=0.2)
                assert result.timed_out
                outcomes["timed_out"] += 1
            elif index % 10 == 7:  # cancelled by the client while running
                with anyio.move_on_after(0.05):
                    await service.run_command(f"sleep {marker}", session_id=session_id)
                    raise AssertionError("the call outlived its cancel")
                outcomes["cancelled"] += 1
            else:
                result = await service.run_command(f"echo {index}", session_id=session_id)
                assert result.stdout == f"{index}\n", result
                outcomes["ran"] += 1

        for start in range(0, 1000, 10):
            async with anyio.create_task_group() as group:
                for index in range(start, start + 10):
                    group.start_soon(one, index)
        assert outcomes == {"ran": 800, "timed_out": 100, "cancelled": 100}
        assert not wait_marker_gone(marker), "a process of a timed-out or cancelled call is still running"
        # A workdir count still walking its tree holds descriptors for a moment: wait for it (bounded).
        with anyio.move_on_after(10):
            while _fds() > fds:
                await anyio.sleep(0.05)
        assert _fds() <= fds, f"the server's descriptors grew from {fds} to {_fds()}"
        assert _mounts_below(sessions_root) == mounts
        workdirs = [p for p in service.sessions.root.iterdir() if p.name not in ("images", ".server.lock")]
        assert len(workdirs) == 3 + service.sessions.pooled, workdirs
    assert not marker_pids(marker)
    assert not any(sessions_root.iterdir()), "the server left files behind at shutdown"
    if IS_ROOT:
        assert _mounts_below(sessions_root) == 0


async def test_shutdown_leaves_no_process_of_any_session_or_of_the_pool(sessions_root: Path) -> None:
    marker = unique_sleep()
    async with _service(sessions_root, pool_size=2) as service:
        ids = [(await service.create_session()).session_id for _ in range(3)]
        for session_id in ids:
            await _run(service, "true", session_id)
        with anyio.fail_after(30):
            while service.sessions.pooled < 2:
                await anyio.sleep(0.02)
        supervisors = [(await service.sessions.get(i)).sandbox.current.pid for i in ids]
        supervisors += [home.sandbox.pid for home in service.sessions._pool]
        for pid in supervisors:
            os.kill(pid, 0)  # control: each session's sandbox is running
        with anyio.move_on_after(0.5):
            await service.run_command(f"sleep {marker}", session_id=ids[0])
    assert not wait_marker_gone(marker)
    for pid in supervisors:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
