"""Processes that try to outlive their call: background jobs, setsid daemons, pipe-holding grandchildren,
TERM-ignoring trees, and a client that cancels.

After each call no process carrying the test's unique marker may remain on the host (a bounded poll of
/proc), and the call must return (generous hang guards only; speed is not what is tested).
"""

from __future__ import annotations

import time

import anyio
import pytest
from _security_support import (
    OUTPUT_CAP,
    kill_marker,
    marker_pids,
    unique_sleep,
    wait_marker_gone,
)

HANG_GUARD_S = 15


@pytest.fixture
def marker():
    value = unique_sleep(300)
    yield value
    kill_marker(value)  # cleanup only; the tests assert nothing was left


def _timed(run, *args, **kwargs):
    started = time.monotonic()
    result = run(*args, **kwargs)
    return result, time.monotonic() - started


def test_timeout_kills_background_grandchild(sandbox_run, marker):
    result, elapsed = _timed(sandbox_run, f"sleep {marker} & wait", timeout_s=1)
    assert elapsed < HANG_GUARD_S, f"returned after {elapsed:.1f}s"
    assert result.timed_out, result
    assert wait_marker_gone(marker) == [], "the background sleep survived the timeout"


def test_timeout_kills_setsid_double_forked_daemon(sandbox_run, marker):
    """setsid + double fork escapes process groups and psutil's children(); the pid namespace does not."""
    result, elapsed = _timed(
        sandbox_run,
        f"setsid sh -c 'sleep {marker}' </dev/null >/dev/null 2>&1 & sleep 60",
        timeout_s=1,
    )
    assert elapsed < HANG_GUARD_S, f"returned after {elapsed:.1f}s"
    assert result.timed_out
    assert wait_marker_gone(marker) == [], "the setsid daemon survived the timeout"


def test_daemon_left_by_finished_command_is_killed(sandbox_run, marker):
    """The command exits at once, leaving a detached daemon: the call returns and the daemon dies."""
    result, elapsed = _timed(
        sandbox_run,
        f"setsid sh -c 'sleep {marker}' </dev/null >/dev/null 2>&1 & echo started",
        timeout_s=60,
    )
    assert elapsed < HANG_GUARD_S, f"returned after {elapsed:.1f}s"
    assert not result.timed_out and result.exit_code == 0, result
    assert "started" in result.stdout
    assert wait_marker_gone(marker) == [], "a daemon outlived the call that started it"


def test_grandchild_holding_stdout_does_not_block_the_call(sandbox_run, marker):
    """`(sleep &)` keeps the output pipe open; the call must return when the main command exits."""
    result, elapsed = _timed(sandbox_run, f"(sleep {marker} &) ; echo done", timeout_s=60)
    assert elapsed < HANG_GUARD_S, f"returned after {elapsed:.1f}s (waited for the pipe-holding grandchild?)"
    assert not result.timed_out, result
    assert result.exit_code == 0 and "done" in result.stdout, result
    assert wait_marker_gone(marker) == [], "the pipe-holding grandchild survived"


def test_timeout_kills_tree_that_ignores_sigterm(sandbox_run, marker):
    result, elapsed = _timed(
        sandbox_run, f"trap '' TERM INT HUP; sh -c \"trap '' TERM; sleep {marker}\" & wait; wait", timeout_s=1
    )
    assert elapsed < HANG_GUARD_S
    assert result.timed_out
    assert wait_marker_gone(marker) == []


def test_client_cancellation_kills_the_tree(sandbox, workdir, marker):
    """A client cancel arrives as anyio cancellation: the runner must kill the tree before re-raising."""
    from hanzo_sandbox_mcp import runner
    from hanzo_sandbox_mcp.config import OutputSettings
    from hanzo_sandbox_mcp.policy import SandboxPolicy

    policy = SandboxPolicy().with_workdir(workdir)

    async def go() -> bool:
        with anyio.move_on_after(1.5) as scope:
            await runner.run_sandboxed(
                sandbox,
                policy,
                ["/bin/sh", "-c", f"setsid sh -c 'sleep {marker}' & sleep {marker} & wait"],
                timeout_s=120,
                output=OutputSettings(max_stdout_bytes=OUTPUT_CAP, max_stderr_bytes=OUTPUT_CAP),
            )
        return scope.cancelled_caught

    started = time.monotonic()
    cancelled = anyio.run(go)
    assert time.monotonic() - started < HANG_GUARD_S
    assert cancelled, "the call finished on its own instead of being cancelled"
    assert wait_marker_gone(marker) == [], "processes survived a cancelled call"


def test_marker_is_visible_while_the_call_runs_positive_control(sandbox_run, marker):
    """The leftover scan can see sandboxed processes at all (otherwise 'none left' proves nothing)."""
    seen: list[int] = []

    async def watch() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not seen:
            seen.extend(marker_pids(marker))
            await anyio.sleep(0.05)

    import threading

    thread = threading.Thread(target=lambda: anyio.run(watch))
    thread.start()
    result = sandbox_run(f"sleep {marker} & sleep 1; kill $!", timeout_s=30)
    thread.join()
    assert seen, f"the scan never saw the sandboxed sleep: {result}"
    assert wait_marker_gone(marker) == []


def test_command_starts_with_default_signal_dispositions(sandbox_run):
    """The launcher is Python, which ignores SIGPIPE and SIGXFSZ; exec keeps ignored signals ignored, so
    the command must get them reset (as subprocess's restore_signals does), or `yes | head` spins on EPIPE
    and SIGXFSZ never stops a runaway writer."""
    result = sandbox_run("grep -E '^Sig(Ign|Blk)' /proc/self/status; yes | head -1")
    assert result.exit_code == 0, result
    fields = dict(line.split(":\t") for line in result.stdout.splitlines() if ":\t" in line)
    assert fields.get("SigIgn", "").strip() == "0000000000000000", f"signals ignored at exec: {fields}"
    assert fields.get("SigBlk", "").strip() == "0000000000000000", f"signals blocked at exec: {fields}"
    assert "Broken pipe" not in result.stderr
