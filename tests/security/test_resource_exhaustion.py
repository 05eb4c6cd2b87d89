"""Resource exhaustion: fork bombs, memory, file size, fds, CPU, private /tmp size, the workdir quota
(in both quota modes), and output floods.

Every limit is paired with a positive control under it (a few forks, 64 MiB, a 1 MiB file, 500 fds) so a
failure is the limit's doing. Time bounds here are hang guards only, never pass/fail criteria for speed.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from _quota_support import MODES, quota_workdir, run_with_quota
from _security_support import (
    IS_ROOT,
    NOBODY,
    SANDBOX_PYTHON,
    assert_protection,
    json_lines,
    kill_marker,
    py,
    unique_sleep,
    wait_marker_gone,
)
from _security_support import (
    marker_pids as _marker_pids,
)

MiB = 1024 * 1024
PROC_CAP = 24
#: Forks until one fails, holding every child (each blocks on a pipe until the parent exits): prints how
#: many forks succeeded and the errno of the one that failed (0: all `target` forks succeeded).
FORK_PROBE = """
import json, os, resource, sys
target, cap = int(sys.argv[1]), int(sys.argv[2])
if cap:
    resource.setrlimit(resource.RLIMIT_NPROC, (cap, resource.getrlimit(resource.RLIMIT_NPROC)[1]))
r, w = os.pipe()
forked, err = 0, 0
for _ in range(target):
    try:
        pid = os.fork()
    except OSError as exc:
        err = exc.errno
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    forked += 1
print(json.dumps({"forked": forked, "errno": err}))
"""


def _rlimits_fired(result: object) -> None:
    assert_protection(result, rlimits_applied=True)


def test_sandbox_contains_fork_bomb(sandbox_run):
    marker = unique_sleep(7)
    # dash has no `:` function names; `f` is the classic bomb. The marker rides in every fork's cmdline.
    cmd = f"f(){{ f|f& }}; f; sleep {marker} # fork-bomb"
    started = time.monotonic()
    try:
        result = sandbox_run(cmd, timeout_s=5, policy_overrides={"max_procs": PROC_CAP})
        elapsed = time.monotonic() - started
        assert elapsed < 60, f"the call took {elapsed:.0f}s to return (hang guard)"
        # The host still forks fine afterwards.
        assert subprocess.run(["true"], check=False).returncode == 0
        left = wait_marker_gone(marker, timeout=15)
        assert left == [], f"fork-bomb processes survived the call: {left}"
        _rlimits_fired(result)
        # The process limit, not only the timeout, stopped it: the shell reports forks that failed.
        assert "fork" in result.stderr.lower() or "resource temporarily unavailable" in result.stderr.lower(), result
    finally:
        kill_marker(marker)


def test_process_limit_makes_fork_fail_with_eagain_below_the_cap(sandbox_run):
    """RLIMIT_NPROC: fork fails with EAGAIN before the command holds `max_procs` processes."""
    result = sandbox_run(py(FORK_PROBE, "200", "0"), policy_overrides={"max_procs": PROC_CAP})
    rows = json_lines(result.stdout)
    assert rows, result
    assert rows[0]["errno"] == 11, rows  # EAGAIN
    assert rows[0]["forked"] < PROC_CAP, rows
    _rlimits_fired(result)


def test_same_fork_loop_unsandboxed_forks_past_the_cap_positive_control():
    """The probe, on the host as the command's uid, with a higher cap of its own: it forks past PROC_CAP."""
    kwargs = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if IS_ROOT else {}
    proc = subprocess.run(
        [SANDBOX_PYTHON, "-I", "-S", "-c", FORK_PROBE, str(2 * PROC_CAP), str(8 * PROC_CAP)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )
    rows = json_lines(proc.stdout)
    assert rows == [{"forked": 2 * PROC_CAP, "errno": 0}], (proc.stdout, proc.stderr)


def test_small_fork_count_works_positive_control(sandbox_run):
    result = sandbox_run("for i in 1 2 3 4 5 6 7 8; do (true) & done; wait; echo FORKS-OK")
    assert "FORKS-OK" in result.stdout, result


def test_sandbox_caps_memory_allocation(sandbox_run):
    """8 GiB in one process fails under the default 2048 MiB address-space cap; 64 MiB works."""
    result = sandbox_run(
        py(
            "small = bytearray(64 << 20); print('SMALL-OK', len(small))\n"
            "try:\n  big = bytearray(8 << 30); print('BIG-OK')\n"
            "except MemoryError: print('MEMORY-ERROR')"
        )
    )
    assert "SMALL-OK" in result.stdout, result
    assert "BIG-OK" not in result.stdout
    assert "MEMORY-ERROR" in result.stdout, result
    _rlimits_fired(result)


def test_sandbox_caps_file_size(sandbox_run, workdir):
    """A 300 MiB write stops at the 256 MiB file-size limit: SIGXFSZ kills `head` (shell status 153), or,
    where SIGXFSZ is ignored, the write fails with EFBIG ("File too large")."""
    result = sandbox_run(
        "head -c 1M /dev/zero > small && echo SMALL-OK; head -c 300M /dev/zero > big; echo rc=$?; ls -l big",
        timeout_s=120,
    )
    assert "SMALL-OK" in result.stdout, result
    sigxfsz = "rc=153" in result.stdout  # 128 + SIGXFSZ (25)
    efbig = "rc=1" in result.stdout and "File too large" in result.stderr
    assert sigxfsz or efbig, result
    size = (workdir / "big").stat().st_size
    assert size <= 256 * MiB, size
    _rlimits_fired(result)


def test_sandbox_caps_file_size_with_efbig(sandbox_run, workdir):
    """With SIGXFSZ ignored, the write past the limit fails with EFBIG instead."""
    result = sandbox_run(
        py(
            "import os, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "fd = os.open('big', os.O_WRONLY | os.O_CREAT, 0o600)\n"
            "os.lseek(fd, 256 * 1024 * 1024 - 1, 0); os.write(fd, b'x'); print('AT-LIMIT-OK')\n"
            "try:\n  os.write(fd, b'y'); print('PAST-LIMIT-OK')\n"
            "except OSError as e: print('ERR', e.errno, e.strerror)"
        )
    )
    assert "AT-LIMIT-OK" in result.stdout, result
    assert "PAST-LIMIT-OK" not in result.stdout
    assert "ERR 27 File too large" in result.stdout, result
    _rlimits_fired(result)


def test_sandbox_caps_open_file_descriptors(sandbox_run):
    result = sandbox_run(
        py(
            "import os, json\nfds = []\n"
            "try:\n  for _ in range(5000): fds.append(os.open('/dev/null', os.O_RDONLY))\n"
            "  print(json.dumps({'opened': len(fds), 'errno': 0}))\n"
            "except OSError as e: print(json.dumps({'opened': len(fds), 'errno': e.errno}))"
        )
    )
    rows = json_lines(result.stdout)
    assert rows, result
    assert rows[0]["errno"] == 24, rows  # EMFILE
    assert 500 <= rows[0]["opened"] < 5000, rows  # positive control: hundreds did open
    _rlimits_fired(result)


def test_sandbox_caps_cpu_time(sandbox_run):
    """A busy loop is stopped by RLIMIT_CPU (SIGXCPU, then SIGKILL) long before the wall-clock timeout."""
    result = sandbox_run(
        py("while True: pass"),
        timeout_s=60,
        policy_overrides={"max_cpu_secs": 1},
    )
    assert not result.timed_out, result
    assert result.signal in (24, 9) or result.exit_code in (128 + 24, 128 + 9, 152, 137), result
    _rlimits_fired(result)


def test_sandbox_caps_private_tmp_size(sandbox_run):
    result = sandbox_run(
        "head -c 1M /dev/zero > /tmp/small && echo SMALL-OK; head -c 20M /dev/zero > /tmp/fill; "
        "echo rc=$?; head -c 20M /dev/zero > /dev/shm/fill; echo shm-rc=$?",
        policy_overrides={"tmp_size_mb": 8},
    )
    assert "SMALL-OK" in result.stdout, result
    assert "rc=0" not in result.stdout.replace("shm-rc", "")
    assert "shm-rc=0" not in result.stdout
    assert "No space left on device" in result.stderr, result
    assert_protection(result, private_tmp=True)


FILL_60_MIB = "for i in $(seq 1 60); do head -c 1M /dev/zero > f$i; sleep 0.1; done; echo FINISHED"


def test_polled_quota_stops_a_call_exceeding_it(sandbox_run):
    result = sandbox_run(FILL_60_MIB, policy_overrides={"workdir_quota_mb": 5}, timeout_s=60)
    assert result.quota_exceeded and result.quota_mode == "polled", result
    assert "FINISHED" not in result.stdout, result
    assert result.error and "quota" in result.error, result


def test_filesystem_quota_refuses_writes_past_it_and_lets_the_command_go_on(sandbox, work_root):
    with quota_workdir("filesystem", work_root, quota_mb=5) as quota:
        result = run_with_quota(sandbox, FILL_60_MIB, quota)
    assert result.quota_exceeded and result.quota_mode == "filesystem", result
    assert "FINISHED" in result.stdout and result.exit_code == 0, result  # not stopped
    assert "No space left on device" in result.stderr, result
    assert result.error and "full" in result.error, result


@pytest.mark.parametrize("mode", MODES)
def test_writing_under_workdir_quota_works_positive_control(sandbox, work_root, mode):
    with quota_workdir(mode, work_root, quota_mb=5) as quota:
        result = run_with_quota(sandbox, "head -c 1M /dev/zero > f && sleep 1.2 && echo DONE", quota)
    assert "DONE" in result.stdout and not result.quota_exceeded and result.quota_mode == mode, result


#: fallocate is refused by seccomp, so glibc's posix_fallocate writes one byte per block instead: about as
#: fast as a command can fill a disk. Files just under the per-file cap dodge RLIMIT_FSIZE.
FAST_ALLOCATION = py(
    "import os\n"
    "for i in range(3000):\n"
    "    fd = os.open(f'f{i}', os.O_CREAT | os.O_WRONLY, 0o600)\n"
    "    try: os.posix_fallocate(fd, 0, 4 << 20)\n"
    "    except OSError as e: print('ERR', i, e.errno); break\n"
    "    finally: os.close(fd)\n"
    "print('DONE')"
)


def test_filesystem_quota_has_no_overshoot_at_all(sandbox, work_root):
    from hanzo_sandbox_mcp.treewalk import tree_usage

    with quota_workdir("filesystem", work_root, quota_mb=5) as quota:
        result = run_with_quota(sandbox, FAST_ALLOCATION, quota)
        used = tree_usage(quota.path).bytes
        vfs = os.statvfs(quota.path)
    assert "ERR" in result.stdout and " 28" in result.stdout, result  # ENOSPC
    assert used <= 5 * MiB, f"{used / MiB:.2f} MiB stored under a 5 MiB quota"
    assert (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize <= 5 * MiB + 2 * MiB  # data plus ext4's own metadata
    assert result.quota_exceeded, result


def test_polled_quota_bounds_the_overshoot_of_fast_allocation(sandbox_run, workdir):
    """A count, then a pause of 10x its duration (at least 50 ms): the command fills the disk for at most
    two pauses plus a count before the kill, which measured up to 37 MiB here with both cores busy. The
    bound says the count keeps up at all; in filesystem mode the overshoot is zero (above)."""
    from hanzo_sandbox_mcp.treewalk import tree_usage

    result = sandbox_run(FAST_ALLOCATION, policy_overrides={"workdir_quota_mb": 5}, timeout_s=60)
    used = tree_usage(workdir).bytes
    assert used <= 100 * MiB, f"the workdir reached {used / MiB:.0f} MiB under a 5 MiB quota ({result.stdout!r})"
    assert result.quota_exceeded and "DONE" not in result.stdout, result


def test_sandbox_caps_output_flood(sandbox_run):
    """100 MiB on stdout: the result carries at most the cap and counts the dropped bytes."""
    result = sandbox_run("head -c 100M /dev/zero | tr '\\0' 'x'; echo END >&2", timeout_s=60)
    marker_slack = 100  # "[... N bytes truncated ...]" between head and tail
    assert len(result.stdout.encode()) <= 256 * 1024 + marker_slack, len(result.stdout)
    assert "bytes truncated" in result.stdout
    assert result.stdout_truncated_bytes >= 100 * MiB - 256 * 1024, result.stdout_truncated_bytes
    assert "END" in result.stderr


def test_total_memory_across_processes_is_reported_uncapped_without_cgroups(sandbox_run):
    """RLIMIT_AS is per process: 64 processes x 2 GiB is not a cap. Without a cgroup the report must say
    so (cgroup_limits False, a `missing` entry); with one, cgroup_limits is True."""
    result = sandbox_run("true")
    prot = result.protection
    if prot.cgroup_limits:
        return
    assert any("cgroup" in m for m in prot.missing), prot.missing


def test_marker_helper_finds_live_processes():
    """Self-check of the leftover scan used above (a scan that never finds anything proves nothing)."""
    marker = unique_sleep(9)
    proc = subprocess.Popen(["sleep", marker])
    try:
        deadline = time.monotonic() + 5
        while not _marker_pids(marker) and time.monotonic() < deadline:
            time.sleep(0.02)  # until the child has exec'd sleep
        assert _marker_pids(marker) == [proc.pid]
    finally:
        proc.kill()
        proc.wait()
    assert wait_marker_gone(marker, timeout=5) == []
