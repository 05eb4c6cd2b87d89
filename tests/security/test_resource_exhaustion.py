"""Resource exhaustion: fork bombs, memory, file size, fds, CPU, private /tmp size, the workdir quota,
and output floods.

Every limit is paired with a positive control under it (a few forks, 64 MiB, a 1 MiB file, 500 fds) so a
failure is the limit's doing. Time bounds here are hang guards only, never pass/fail criteria for speed.
"""

from __future__ import annotations

import subprocess
import time

from _security_support import (
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


def _rlimits_fired(result: object) -> None:
    assert_protection(result, rlimits_applied=True)


def test_sandbox_contains_fork_bomb(sandbox_run):
    marker = unique_sleep(7)
    # dash has no `:` function names; `f` is the classic bomb. The marker rides in every fork's cmdline.
    cmd = f"f(){{ f|f& }}; f; sleep {marker} # fork-bomb"
    started = time.monotonic()
    try:
        result = sandbox_run(cmd, timeout_s=5)
        elapsed = time.monotonic() - started
        assert elapsed < 60, f"the call took {elapsed:.0f}s to return (hang guard)"
        assert result.timed_out or result.exit_code is not None, result
        # The host still forks fine afterwards.
        assert subprocess.run(["true"], check=False).returncode == 0
        left = wait_marker_gone(marker, timeout=15)
        assert left == [], f"fork-bomb processes survived the call: {left}"
        _rlimits_fired(result)
        limit_hit = "fork" in result.stderr.lower() or "resource temporarily unavailable" in result.stderr.lower()
        assert limit_hit or result.timed_out, result
    finally:
        kill_marker(marker)


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


def test_sandbox_stops_call_exceeding_workdir_quota(sandbox_run):
    result = sandbox_run(
        "for i in $(seq 1 60); do head -c 1M /dev/zero > f$i; sleep 0.1; done; echo FINISHED",
        policy_overrides={"workdir_quota_mb": 5},
        timeout_s=60,
    )
    assert result.quota_exceeded, result
    assert "FINISHED" not in result.stdout, result
    assert result.error and "quota" in result.error, result


def test_writing_under_workdir_quota_works_positive_control(sandbox_run):
    result = sandbox_run("head -c 1M /dev/zero > f && sleep 1.2 && echo DONE", policy_overrides={"workdir_quota_mb": 5})
    assert "DONE" in result.stdout and not result.quota_exceeded, result


def test_sandbox_bounds_quota_overshoot_of_fast_allocation(sandbox_run, workdir):
    """fallocate reserves disk instantly, and a quota that is polled lets a command allocate whatever it
    manages between two polls. Files just under the per-file size cap dodge RLIMIT_FSIZE. With a 5 MiB
    quota the workdir must not end far beyond it (here: 10x, 50 MiB) and the call must be reported stopped."""
    from hanzo_sandbox_mcp.workdir import directory_usage_bytes

    result = sandbox_run(
        py(
            "import os\n"
            "for i in range(3000):\n"
            "    fd = os.open(f'f{i}', os.O_CREAT | os.O_WRONLY, 0o600)\n"
            "    try: os.posix_fallocate(fd, 0, 4 << 20)\n"
            "    except OSError as e: print('ERR', i, e); break\n"
            "    finally: os.close(fd)\n"
            "print('DONE')"
        ),
        policy_overrides={"workdir_quota_mb": 5},
        timeout_s=60,
    )
    used = directory_usage_bytes(workdir)
    assert used <= 50 * MiB, f"the workdir reached {used / MiB:.0f} MiB under a 5 MiB quota (stdout={result.stdout!r})"
    if used > 5 * MiB:
        assert result.quota_exceeded, f"{used / MiB:.0f} MiB used under a 5 MiB quota, not reported: {result}"


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
