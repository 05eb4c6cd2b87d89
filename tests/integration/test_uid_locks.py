"""Session uids across processes: real `python -c` holders on the same lock directory, real flock, SIGKILL.

Each holder stands for another server on the host: it makes its own `UidAllocator` on the lock directory,
waits for "go" on stdin (so that several start acquiring at the same moment), takes ids, prints them, and
holds them until its stdin closes or it is killed.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hanzo_sandbox_mcp.linux.uids import UidAllocator, UidsExhausted

START = 2_000_000_000
REPO_ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 30.0

HOLDER = """
import sys
from pathlib import Path
from hanzo_sandbox_mcp.linux.uids import UidAllocator, UidsExhausted
allocator = UidAllocator(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
wanted = int(sys.argv[4])  # -1: every id it can get
print("ready", flush=True)
sys.stdin.readline()
leases = []
while wanted < 0 or len(leases) < wanted:
    try:
        leases.append(allocator.acquire())
    except UidsExhausted:
        break
print(" ".join(str(lease.uid) for lease in leases), flush=True)
sys.stdin.read()
"""


def _line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], WAIT_S)
    assert readable, "the holder printed nothing in time"
    return process.stdout.readline().strip()


@contextmanager
def _holders(count: int, lock_dir: Path, wanted: list[int]) -> Iterator[list[subprocess.Popen[str]]]:
    """Started holders, each past its imports and waiting for "go"; killed and reaped on the way out."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(START), str(count), str(lock_dir), str(number)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for number in wanted
    ]
    try:
        for process in processes:
            assert _line(process) == "ready"
        yield processes
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=WAIT_S)
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()


def _go(processes: list[subprocess.Popen[str]]) -> list[set[int]]:
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    return [{int(uid) for uid in _line(process).split()} for process in processes]


def test_servers_acquiring_at_once_never_share_a_uid(tmp_path: Path) -> None:
    count = 64
    with _holders(count, tmp_path, [-1] * 4) as processes:
        taken = _go(processes)
        assert sum(len(uids) for uids in taken) == count  # disjoint ...
        assert set().union(*taken) == set(range(START, START + count))  # ... and together the whole range
        with pytest.raises(UidsExhausted):
            UidAllocator(START, count, tmp_path).acquire()


def test_this_server_gets_only_the_uids_another_one_does_not_hold(tmp_path: Path) -> None:
    count = 8
    with _holders(count, tmp_path, [5]) as processes:
        (theirs,) = _go(processes)
        allocator = UidAllocator(START, count, tmp_path)
        ours = [allocator.acquire() for _ in range(count - 5)]
        assert {lease.uid for lease in ours} == set(range(START, START + count)) - theirs
        with pytest.raises(UidsExhausted):
            allocator.acquire()


def test_the_uids_of_a_sigkilled_server_become_free(tmp_path: Path) -> None:
    count = 4
    allocator = UidAllocator(START, count, tmp_path)
    with _holders(count, tmp_path, [count]) as processes:
        (theirs,) = _go(processes)
        assert len(theirs) == count
        # Control: while the holder lives, every id is taken.
        with pytest.raises(UidsExhausted):
            allocator.acquire()
        holder = processes[0]
        holder.send_signal(signal.SIGKILL)
        assert holder.wait(timeout=WAIT_S) == -signal.SIGKILL
        leases = [allocator.acquire() for _ in range(count)]
        assert {lease.uid for lease in leases} == theirs
        for lease in leases:
            lease.release()
