"""`run_sandboxed` through the real Linux sandbox: output caps, stdin, cwd checks, timeouts, cancellation.

Workdirs look like session workdirs: mode 0700, owned by the uid commands run as (nobody when the tests
run as root, else the test user), under a 0711 parent. Waits are bounded by `anyio.fail_after` hang
guards; leftover processes are found by a unique marker in their argv (`sleep 300.<random>`).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from support.processes import kill_marker, marker_pids, unique_sleep

from hanzo_sandbox_mcp.config import OutputSettings
from hanzo_sandbox_mcp.errors import RequestError, SandboxUnavailable
from hanzo_sandbox_mcp.launch import LaunchReport
from hanzo_sandbox_mcp.launch_plan import LaunchPlan
from hanzo_sandbox_mcp.policy import SandboxPolicy
from hanzo_sandbox_mcp.protection import EffectiveProtection, LayerStatus
from hanzo_sandbox_mcp.results import ExecResult
from hanzo_sandbox_mcp.runner import run_sandboxed
from hanzo_sandbox_mcp.sandbox import Attachment

IS_ROOT = os.geteuid() == 0
COMMAND_UID = 65534 if IS_ROOT else os.getuid()
ENV = {"PATH": "/usr/bin:/bin"}
HANG_GUARD_S = 90.0

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(os.uname().sysname != "Linux", reason="runs the Linux sandbox"),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def sandbox() -> Any:
    from hanzo_sandbox_mcp.linux.sandbox import LinuxSandbox

    return LinuxSandbox()


@pytest.fixture(scope="module")
def work_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="hanzo-runner-test-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _own(path: Path) -> Path:
    if IS_ROOT:
        os.chown(path, COMMAND_UID, COMMAND_UID)
    return path


@pytest.fixture
def workdir(work_root: Path) -> Path:
    path = work_root / f"w-{uuid.uuid4().hex[:10]}"
    path.mkdir(mode=0o700)
    return _own(path)


async def _run(
    sandbox: Any,
    workdir: Path,
    argv: list[str],
    *,
    policy: SandboxPolicy | None = None,
    timeout_s: float = 30.0,
    **kwargs: Any,
) -> ExecResult:
    policy = (policy or SandboxPolicy()).with_workdir(workdir)
    kwargs.setdefault("env", ENV)
    with anyio.fail_after(timeout_s + HANG_GUARD_S):  # hang guard only: the runner's timeout fires first
        return await run_sandboxed(sandbox, policy, argv, timeout_s=timeout_s, **kwargs)


async def _wait_for(predicate: Any, timeout_s: float = 20.0) -> bool:
    """Poll (bounded) until `predicate()` is true."""
    with anyio.move_on_after(timeout_s):
        while not predicate():
            await anyio.sleep(0.05)
        return True
    return False


# --- a plain run ---------------------------------------------------------------------------------------


async def test_echo(sandbox: Any, workdir: Path) -> None:
    result = await _run(sandbox, workdir, ["sh", "-c", "echo hi; id -u"])
    assert result.exit_code == 0
    assert result.stdout == f"hi\n{COMMAND_UID}\n"
    assert result.stderr == ""
    assert result.error is None
    assert result.protection.sandbox == "linux"
    assert result.protection.uid == COMMAND_UID


async def test_resource_usage_is_reported_for_a_normal_exit(sandbox: Any, workdir: Path) -> None:
    result = await _run(sandbox, workdir, ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"])
    assert result.exit_code == 0
    usage = result.resource_usage
    assert usage is not None
    assert usage.peak_rss_kb > 0
    assert usage.cpu_user_s >= 0 and usage.cpu_sys_s >= 0
    assert usage.cpu_user_s + usage.cpu_sys_s > 0
    assert result.duration_ms > 0


async def test_tmpdir_in_the_workdir_is_usable(sandbox: Any, workdir: Path) -> None:
    result = await _run(sandbox, workdir, ["sh", "-c", 'echo "$TMPDIR"; echo x > "$TMPDIR/f"'])
    assert result.exit_code == 0, result
    assert result.stdout == f"{workdir}/.tmp\n"
    assert (workdir / ".tmp" / "f").read_text() == "x\n"


# --- output --------------------------------------------------------------------------------------------


async def test_a_10mb_flood_is_capped_with_head_tail_and_a_count(sandbox: Any, workdir: Path) -> None:
    script = (
        "printf START; head -c 10000000 /dev/zero | tr '\\000' x; printf END; "
        "printf ERR-START >&2; head -c 1000000 /dev/zero | tr '\\000' y >&2; printf ERR-END >&2"
    )
    output = OutputSettings(max_stdout_bytes=4096, max_stderr_bytes=1024)
    result = await _run(sandbox, workdir, ["sh", "-c", script], output=output)
    assert result.exit_code == 0
    out_total = len("START") + 10_000_000 + len("END")
    err_total = len("ERR-START") + 1_000_000 + len("ERR-END")
    assert result.stdout_truncated_bytes == out_total - 4096
    assert result.stderr_truncated_bytes == err_total - 1024
    assert result.stdout.startswith("START" + "x" * (2048 - 5))
    assert result.stdout.endswith("x" * (2048 - 3) + "END")
    assert f"\n[... {out_total - 4096} bytes truncated ...]\n" in result.stdout
    assert len(result.stdout) < 4096 + 100
    assert result.stderr.startswith("ERR-START") and result.stderr.endswith("ERR-END")


async def test_invalid_utf8_is_replaced(sandbox: Any, workdir: Path) -> None:
    result = await _run(sandbox, workdir, ["sh", "-c", "printf '\\377\\376ok\\n'; printf '\\300' >&2"])
    assert result.exit_code == 0
    assert result.stdout == "\ufffd\ufffdok\n"
    assert result.stderr == "\ufffd"


async def test_on_output_receives_every_chunk(sandbox: Any, workdir: Path) -> None:
    seen: list[tuple[str, bytes]] = []

    async def on_output(name: str, chunk: bytes) -> None:
        assert isinstance(chunk, bytes)
        seen.append((name, chunk))

    result = await _run(
        sandbox, workdir, ["sh", "-c", "printf out1; printf err1 >&2; printf out2"], on_output=on_output
    )
    assert b"".join(c for n, c in seen if n == "stdout") == b"out1out2"
    assert b"".join(c for n, c in seen if n == "stderr") == b"err1"
    assert {n for n, _ in seen} == {"stdout", "stderr"}
    assert result.stdout == "out1out2"


# --- stdin ---------------------------------------------------------------------------------------------


async def test_stdin_is_delivered(sandbox: Any, workdir: Path) -> None:
    data = b"".join(b"line %d\n" % i for i in range(30000))  # ~250 KB: more than a pipe buffer
    output = OutputSettings(max_stdout_bytes=512 * 1024)
    result = await _run(sandbox, workdir, ["cat"], stdin=data, output=output)
    assert result.exit_code == 0
    assert result.stdout_truncated_bytes == 0
    assert result.stdout.encode() == data


async def test_no_stdin_means_end_of_file(sandbox: Any, workdir: Path) -> None:
    result = await _run(sandbox, workdir, ["cat"])
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.timed_out is False


async def test_stdin_a_command_never_reads_is_not_an_error(sandbox: Any, workdir: Path) -> None:
    result = await _run(sandbox, workdir, ["sh", "-c", "echo done"], stdin=b"z" * (1 << 20))
    assert result.exit_code == 0
    assert result.stdout == "done\n"
    assert result.error is None
    assert result.timed_out is False


# --- cwd -----------------------------------------------------------------------------------------------


async def test_cwd_is_relative_to_the_workdir(sandbox: Any, workdir: Path) -> None:
    sub = workdir / "sub"
    (sub / "deeper").mkdir(parents=True)
    _own(sub)
    _own(sub / "deeper")
    result = await _run(sandbox, workdir, ["pwd"], cwd="sub/deeper")
    assert result.stdout == f"{workdir}/sub/deeper\n"
    result = await _run(sandbox, workdir, ["pwd"], cwd=Path("sub"))
    assert result.stdout == f"{workdir}/sub\n"


@pytest.mark.parametrize("cwd", ["..", "../..", "sub/../..", "/", "/tmp", "to-root", "to-root/etc"])
async def test_cwd_escapes_are_refused(sandbox: Any, workdir: Path, cwd: str) -> None:
    sub = workdir / "sub"
    sub.mkdir()
    (workdir / "to-root").symlink_to("/")
    with pytest.raises(RequestError):
        await _run(sandbox, workdir, ["touch", str(workdir / "ran")], cwd=cwd)
    assert not (workdir / "ran").exists()


async def test_a_missing_workdir_is_refused(sandbox: Any, workdir: Path) -> None:
    with pytest.raises(RequestError, match="does not exist"):
        await _run(sandbox, workdir / "gone", ["true"])


# --- argument checks -----------------------------------------------------------------------------------


async def test_nul_in_argv_is_refused(sandbox: Any, workdir: Path) -> None:
    with pytest.raises(RequestError, match="NUL"):
        await _run(sandbox, workdir, ["echo", "a\x00b"])


async def test_empty_argv_is_refused(sandbox: Any, workdir: Path) -> None:
    with pytest.raises(RequestError, match="empty command"):
        await _run(sandbox, workdir, [])


@pytest.mark.parametrize("timeout_s", [0.0, -1.0, math.nan, math.inf])
async def test_a_timeout_that_is_not_a_positive_number_is_refused(
    sandbox: Any, workdir: Path, timeout_s: float
) -> None:
    policy = SandboxPolicy().with_workdir(workdir)
    with anyio.fail_after(HANG_GUARD_S), pytest.raises(RequestError, match="timeout_s"):
        await run_sandboxed(sandbox, policy, ["true"], timeout_s=timeout_s, env=ENV)


async def test_command_not_found(sandbox: Any, workdir: Path) -> None:
    result = await _run(sandbox, workdir, ["no-such-command-hanzo"])
    assert result.exit_code == 127
    assert "no-such-command-hanzo: command not found" in result.stderr
    assert result.error is not None and "command not found" in result.error


async def test_a_file_that_cannot_be_executed(sandbox: Any, workdir: Path) -> None:
    script = workdir / "script.sh"
    script.write_text("#!/bin/sh\necho never\n")
    script.chmod(0o644)
    _own(script)
    result = await _run(sandbox, workdir, ["./script.sh"])
    assert result.exit_code == 126
    assert "cannot execute" in result.stderr
    assert "never" not in result.stdout


async def test_an_over_long_command_name_reports_why_it_did_not_run(sandbox: Any, workdir: Path) -> None:
    result = await _run(sandbox, workdir, ["x" * 5000])
    assert result.exit_code in (126, 127)
    assert result.error is not None


# --- timeout and cancellation kill the whole tree ------------------------------------------------------


async def test_timeout_kills_a_tree_whose_grandchild_holds_the_pipe(sandbox: Any, workdir: Path) -> None:
    daemon, child = unique_sleep(), unique_sleep()
    seen_daemon = False

    async def watch() -> None:
        nonlocal seen_daemon
        seen_daemon = await _wait_for(lambda: bool(marker_pids(daemon)))

    # The daemon leaves the session and the process group and keeps stdout open.
    script = f"(setsid sleep {daemon} &); sleep {child}"
    started = time.monotonic()
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            result = await _run(sandbox, workdir, ["sh", "-c", script], timeout_s=3.0)
        elapsed = time.monotonic() - started
        assert seen_daemon, "the double-forked daemon never started"
        assert result.timed_out is True
        assert result.exit_code is None
        assert result.signal == signal.SIGKILL
        assert elapsed < 3.0 + 30, f"took {elapsed:.1f} s"  # hang guard only
        assert await _wait_for(lambda: not marker_pids(daemon) and not marker_pids(child), 10.0), (
            "processes of the call survived its timeout"
        )
    finally:
        kill_marker(daemon, child)


async def test_cancellation_kills_the_tree(sandbox: Any, workdir: Path) -> None:
    marker = unique_sleep()
    ready = anyio.Event()

    async def on_output(name: str, chunk: bytes) -> None:
        if b"ready" in chunk:
            ready.set()

    outcome: list[object] = []

    async def call() -> None:
        try:
            outcome.append(
                await _run(
                    sandbox, workdir, ["sh", "-c", f"echo ready; sleep {marker}"], on_output=on_output, timeout_s=300.0
                )
            )
        except BaseException as exc:
            outcome.append(exc)
            raise

    try:
        with anyio.fail_after(HANG_GUARD_S):
            async with anyio.create_task_group() as group:
                group.start_soon(call)
                await ready.wait()
                assert await _wait_for(lambda: bool(marker_pids(marker))), "the sleep never started"
                group.cancel_scope.cancel()
        assert len(outcome) == 1
        assert isinstance(outcome[0], anyio.get_cancelled_exc_class())
        assert await _wait_for(lambda: not marker_pids(marker), 10.0), "the cancelled call left its sleep"
    finally:
        kill_marker(marker)


# --- strict policies -----------------------------------------------------------------------------------


class BrokenSeccomp:
    """The Linux sandbox with a corrupt seccomp program in its plans: the kernel refuses to load it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    def harden(self, argv: Any, policy: SandboxPolicy, *, env: Any = None) -> LaunchPlan:
        return self.inner.harden(argv, policy, env=env).replace(seccomp_bpf=b"\x00" * 3)

    def attach(self, pid: int, policy: SandboxPolicy) -> Attachment:
        return self.inner.attach(pid, policy)  # type: ignore[no-any-return]

    def effective(self, policy: SandboxPolicy) -> EffectiveProtection:
        return self.inner.effective(policy)  # type: ignore[no-any-return]

    def report(self, launch: LaunchReport, policy: SandboxPolicy) -> EffectiveProtection:
        return self.inner.report(launch, policy)  # type: ignore[no-any-return]

    def layers(self) -> tuple[LayerStatus, ...]:
        return self.inner.layers()  # type: ignore[no-any-return]


async def test_strict_refuses_to_run_when_a_layer_cannot_be_applied(sandbox: Any, workdir: Path) -> None:
    with pytest.raises(SandboxUnavailable) as caught:
        await _run(BrokenSeccomp(sandbox), workdir, ["touch", "ran"], policy=SandboxPolicy(strict=True))
    message = str(caught.value)
    assert "strict policy: the seccomp layer could not be applied" in message
    assert "the command did not run" in message
    assert not (workdir / "ran").exists()


async def test_without_strict_the_missing_layer_is_reported(sandbox: Any, workdir: Path) -> None:
    result = await _run(BrokenSeccomp(sandbox), workdir, ["touch", "ran"])
    assert result.exit_code == 0
    assert (workdir / "ran").exists()
    assert result.protection.seccomp is False
    assert any(m.startswith("seccomp: ") for m in result.protection.missing)
    assert result.protection.fs_isolated is True  # the other layers still fired


@pytest.fixture
def unreachable_dir() -> Iterator[Path]:
    """A directory the command's uid cannot search, owned by an id outside its user namespace."""
    if IS_ROOT:
        path = Path(tempfile.mkdtemp(prefix="hanzo-private-", dir="/var/tmp"))
        path.chmod(0o700)
        yield path
        shutil.rmtree(path, ignore_errors=True)
        return
    st = os.stat("/root")
    if st.st_uid != 0 or st.st_mode & 0o001:
        pytest.skip("needs a root-owned /root that others cannot search")
    yield Path("/root")


async def test_an_unreachable_extra_read_path_does_not_disable_landlock(
    sandbox: Any, workdir: Path, unreachable_dir: Path
) -> None:
    """Such a path gets no rule (as harmless as a missing one; fixed in 09b1242): Landlock stays on."""
    policy = SandboxPolicy(extra_fs_read=(unreachable_dir / "tools",))
    result = await _run(sandbox, workdir, ["true"], policy=policy)
    assert result.exit_code == 0
    assert result.protection.fs_isolated is True, result.protection.missing
    assert result.protection.landlock_abi is not None, result.protection.missing


# --- file descriptors and the quota -------------------------------------------------------------------

_FD_SHORTAGE_PROBE = """
import anyio, json, os, sys
from pathlib import Path
from hanzo_sandbox_mcp.errors import RequestError
from hanzo_sandbox_mcp.linux.sandbox import LinuxSandbox
from hanzo_sandbox_mcp.policy import SandboxPolicy
from hanzo_sandbox_mcp.runner import run_sandboxed

sandbox = LinuxSandbox()
policy = SandboxPolicy().with_workdir(Path(sys.argv[1]))
env = {"PATH": "/usr/bin:/bin"}

async def call():
    return await run_sandboxed(sandbox, policy, ["true"], timeout_s=30, env=env)

def fill():
    # every free descriptor, opened until EMFILE
    held = []
    try:
        while True:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        return held

def spare():
    # how many descriptors are still free (needs none itself)
    held = fill()
    for fd in held:
        os.close(fd)
    return len(held)

async def main():
    print(json.dumps({"warm": (await call()).exit_code}))
    for free in (2, 0, 2, 2):
        held = fill()
        for fd in held[len(held) - free :]:
            os.close(fd)
        del held[len(held) - free :]
        try:
            await call()
            outcome = "ran"
        except RequestError as exc:
            outcome = str(exc)
        left = spare()
        for fd in held:
            os.close(fd)
        print(json.dumps({"free": free, "outcome": outcome, "leaked": free - left}))

anyio.run(main)
"""


def test_an_fd_shortage_is_a_retryable_error_and_leaks_nothing(workdir: Path) -> None:
    """Issue 9: when the second os.pipe() failed, the first pair stayed open (10 -> 12 -> 14)."""
    import json
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        ["/bin/sh", "-c", 'ulimit -n 256 && exec "$0" -c "$1" "$2"', sys.executable, _FD_SHORTAGE_PROBE, str(workdir)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        check=False,
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert rows and rows[0] == {"warm": 0}, proc.stderr  # control: the same call runs with fds to spare
    assert len(rows) == 5, proc.stderr
    for row in rows[1:]:
        assert "out of file descriptors" in row["outcome"] and "retry" in row["outcome"], row
        assert row["leaked"] == 0, row


async def test_a_polled_quota_stops_the_call_and_says_so(sandbox: Any, workdir: Path) -> None:
    from hanzo_sandbox_mcp.quota import PolledQuota, QuotaLimits

    quota = PolledQuota(workdir, QuotaLimits(bytes=2 * 1024 * 1024, inodes=10_000), owned=False)
    try:
        script = "for i in $(seq 1 100); do head -c 1M /dev/zero > f$i; sleep 0.05; done; echo FINISHED"
        result = await _run(sandbox, workdir, ["sh", "-c", script], quota=quota, timeout_s=60)
    finally:
        await quota.close()
    assert result.quota_exceeded and result.quota_mode == "polled", result
    assert "FINISHED" not in result.stdout
    assert result.signal == signal.SIGKILL
    assert result.error is not None and "over its quota of 2 MiB" in result.error and "stopped" in result.error


async def test_a_call_that_frees_space_is_not_stopped_for_an_old_excess(sandbox: Any, workdir: Path) -> None:
    """Over the quota but shrinking: a clean-up call runs to its end."""
    from hanzo_sandbox_mcp.quota import PolledQuota, QuotaLimits

    (workdir / "big").write_bytes(b"x" * (3 * 1024 * 1024))
    quota = PolledQuota(workdir, QuotaLimits(bytes=2 * 1024 * 1024, inodes=10_000), owned=False)
    try:
        quota.begin()
        quota.end()
        with anyio.fail_after(20):
            while quota.counts == 0:
                await anyio.sleep(0.02)
        result = await _run(sandbox, workdir, ["sh", "-c", "sleep 0.5; rm big; sleep 0.3; echo CLEANED"], quota=quota)
    finally:
        await quota.close()
    assert "CLEANED" in result.stdout and not result.quota_exceeded, result
