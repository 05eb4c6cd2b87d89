"""The launcher's status protocol: `launcher_argv`, `LaunchReport.feed` and the launcher's `Reporter`."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hanzo_sandbox_mcp import launcher
from hanzo_sandbox_mcp.launch import LAUNCHER, LaunchReport, launcher_argv

# --- launcher_argv -------------------------------------------------------------------------------------


def test_launcher_argv_runs_the_packaged_launcher_isolated_and_without_site() -> None:
    assert launcher_argv(5, 9) == [sys.executable, "-I", "-S", str(LAUNCHER), "5", "9"]
    assert LAUNCHER.name == "launcher.py"
    assert LAUNCHER.parent == Path(launcher.__file__).parent
    assert LAUNCHER.is_file()


# --- feed: one event at a time -------------------------------------------------------------------------


def _fed(*lines: str) -> LaunchReport:
    report = LaunchReport()
    for line in lines:
        report.feed(line.encode())
    return report


def test_a_fresh_report_claims_nothing() -> None:
    report = LaunchReport()
    assert report.namespaces == []
    assert not (report.rootfs or report.proc or report.private_tmp or report.loopback)
    assert not (report.user_ns or report.rlimits or report.no_new_privs or report.seccomp or report.applied)
    assert report.uid is None
    assert report.landlock_abi is None
    assert report.exit is None
    assert report.errors == {}


def test_namespaces_event() -> None:
    report = _fed("{'event': 'namespaces', 'active': ['pid', 'net'], 'error': None}")
    assert report.namespaces == ["pid", "net"]
    assert report.namespace_error is None


def test_namespaces_event_with_an_error() -> None:
    report = _fed("{'event': 'namespaces', 'active': [], 'error': 'unshare(user) failed: EPERM'}")
    assert report.namespaces == []
    assert report.namespace_error == "unshare(user) failed: EPERM"


def test_setup_event() -> None:
    report = _fed(
        "{'event': 'setup', 'errors': {'loopback': 'EPERM'}, 'rootfs': True, 'proc': True, 'private_tmp': True, "
        "'loopback': False}"
    )
    assert (report.rootfs, report.proc, report.private_tmp, report.loopback) == (True, True, True, False)
    assert report.errors == {"loopback": "EPERM"}
    assert report.applied is False


def test_applied_event() -> None:
    report = _fed(
        "{'event': 'applied', 'errors': {}, 'uid': 65534, 'gid': 65533, 'user_ns': True, 'rlimits': True, "
        "'no_new_privs': True, 'landlock_abi': 7, 'seccomp': True}"
    )
    assert report.applied is True
    assert (report.uid, report.gid, report.landlock_abi) == (65534, 65533, 7)
    assert report.user_ns and report.rlimits and report.no_new_privs and report.seccomp


def test_applied_event_without_optional_layers_claims_none_of_them() -> None:
    report = _fed("{'event': 'applied', 'errors': {'landlock': 'ENOSYS'}, 'uid': 1000, 'gid': 1000}")
    assert report.applied is True
    assert report.landlock_abi is None
    assert not (report.user_ns or report.rlimits or report.no_new_privs or report.seccomp)
    assert report.errors == {"landlock": "ENOSYS"}


def test_abort_event() -> None:
    report = _fed(
        "{'event': 'abort', 'message': 'strict policy: the landlock layer could not be applied', 'strict': True}"
    )
    assert report.abort == "strict policy: the landlock layer could not be applied"
    assert report.abort_strict is True
    assert _fed("{'event': 'abort', 'message': 'cannot enter working directory /x'}").abort_strict is False


def test_exec_failed_event() -> None:
    report = _fed("{'event': 'exec_failed', 'message': 'nope: command not found (No such file or directory)'}")
    assert report.exec_failed == "nope: command not found (No such file or directory)"


def test_exit_event_keeps_every_field_but_the_event_name() -> None:
    report = _fed(
        "{'event': 'exit', 'status': 1792, 'exit_code': 7, 'signal': None, 'cpu_user_s': 0.5, "
        "'cpu_sys_s': 0.25, 'peak_rss_kb': 1234}"
    )
    assert report.exit == {
        "status": 1792,
        "exit_code": 7,
        "signal": None,
        "cpu_user_s": 0.5,
        "cpu_sys_s": 0.25,
        "peak_rss_kb": 1234,
    }


def test_errors_from_every_stage_are_merged_as_strings() -> None:
    report = _fed(
        "{'event': 'setup', 'errors': {'proc': 'EPERM'}, 'proc': False}",
        "{'event': 'applied', 'errors': {'seccomp': 22}, 'uid': 1}",
    )
    assert report.errors == {"proc": "EPERM", "seccomp": "22"}


def test_unknown_events_change_nothing_but_their_errors() -> None:
    report = _fed("{'event': 'from-the-future', 'uid': 0, 'applied': True}")
    assert report == LaunchReport()


# --- feed: garbage never crashes and never executes ----------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"not python",
        b"['event', 'exit']",
        b"{'event': 'applied', 'uid': 0",  # cut short
        b"\xff\xfe\x00",
        b"(" * 10000 + b")" * 10000,  # deeply nested: RecursionError or MemoryError inside the parser
    ],
    ids=["empty", "text", "list", "truncated", "binary", "nested"],
)
def test_garbage_lines_are_ignored(line: bytes) -> None:
    report = LaunchReport()
    report.feed(line)
    assert report == LaunchReport()


def test_errors_that_are_not_a_mapping_are_dropped_but_the_event_counts() -> None:
    report = _fed("{'event': 'setup', 'errors': ['not', 'a', 'dict'], 'proc': True}")
    assert report.proc is True
    assert report.errors == {}


def test_a_line_is_evaluated_as_a_literal_never_as_code(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    report = LaunchReport()
    report.feed(f"__import__('os').system('touch {target}')".encode())
    report.feed(f"{{'event': 'exit', 'x': open('{target}', 'w')}}".encode())
    assert not target.exists()
    assert report == LaunchReport()


def test_feed_all_splits_lines_and_skips_blank_ones() -> None:
    report = LaunchReport()
    report.feed_all(
        b"{'event': 'namespaces', 'active': ['pid'], 'error': None}\n\n   \n"
        b"garbage\n"
        b"{'event': 'exit', 'exit_code': 0}\n"
    )
    assert report.namespaces == ["pid"]
    assert report.exit == {"exit_code": 0}


# --- both ends together: the launcher's Reporter -> LaunchReport ---------------------------------------


@pytest.fixture
def status_pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        try:
            os.close(fd)
        except OSError:
            pass


def _drain(read_fd: int, write_fd: int) -> bytes:
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_reporter_lines_parse_back_into_the_report(status_pipe: tuple[int, int]) -> None:
    read_fd, write_fd = status_pipe
    reporter = launcher.Reporter(write_fd)
    reporter.send("namespaces", active=["pid", "mount"], error=None)
    reporter.send("setup", errors={}, rootfs=True, proc=True, private_tmp=True, loopback=False)
    reporter.send("applied", errors={"seccomp": "EINVAL: é"}, uid=65534, gid=65534, user_ns=True, landlock_abi=7)
    reporter.send("exit", status=0, exit_code=0, signal=None, cpu_user_s=0.0, cpu_sys_s=0.0, peak_rss_kb=10)
    data = _drain(read_fd, write_fd)
    assert data.count(b"\n") == 4
    report = LaunchReport()
    report.feed_all(data)
    assert report.namespaces == ["pid", "mount"]
    assert report.rootfs and report.proc and report.private_tmp and not report.loopback
    assert report.applied and report.uid == 65534 and report.user_ns and report.landlock_abi == 7
    assert report.errors == {"seccomp": "EINVAL: é"}
    assert report.exit is not None and report.exit["exit_code"] == 0


def test_reporter_survives_a_closed_pipe(status_pipe: tuple[int, int]) -> None:
    read_fd, write_fd = status_pipe
    os.close(read_fd)
    launcher.Reporter(write_fd).send("exit", exit_code=0)  # EPIPE (SIGPIPE is ignored by Python): no raise


def test_reporter_caps_a_line(status_pipe: tuple[int, int]) -> None:
    read_fd, write_fd = status_pipe
    launcher.Reporter(write_fd).send("exec_failed", message="x" * 10000)
    assert len(_drain(read_fd, write_fd)) <= 4000


def test_an_over_long_event_does_not_swallow_the_next_one(status_pipe: tuple[int, int]) -> None:
    read_fd, write_fd = status_pipe
    reporter = launcher.Reporter(write_fd)
    reporter.send("exec_failed", message="x" * 5000 + ": cannot execute (File name too long)")
    reporter.send("exit", status=32256, exit_code=126, signal=None)
    report = LaunchReport()
    report.feed_all(_drain(read_fd, write_fd))
    assert report.exit is not None and report.exit["exit_code"] == 126
