"""The launcher's status protocol: `launcher_argv`, `seal`, the strict `LaunchReport.feed` and the `Reporter`.

Lines are written here in the parser's own syntax (Python literals, as the launcher's `repr` makes them), so a
rejected line is rejected by the schema, the token or the order, never by a syntax the parser does not read.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hanzo_sandbox_mcp import launcher
from hanzo_sandbox_mcp.launch import LAUNCHER, MAX_STATUS_LINE, LaunchReport, launcher_argv, seal
from hanzo_sandbox_mcp.launch_plan import LaunchPlan

TOKEN = "5f1c0ffee0ddba11" * 2
PLAN = LaunchPlan(
    argv=("true",),
    env={},
    cwd="/w",
    uid=65534,
    gid=65534,
    rlimits={"nofile": 256, "core": 0},
    no_new_privs=True,
    seccomp_bpf=b"\x06\x00\x00\x00\x00\x00\xff\x7f",
    status_token=TOKEN,
)

# One well-formed event of each kind, in protocol order, as the launcher writes them.
NAMESPACES = {"event": "namespaces", "active": ["pid", "mount"], "error": None}
SETUP = {
    "event": "setup",
    "errors": {},
    "rootfs": True,
    "proc": True,
    "private_tmp": True,
    "loopback": False,
    "scoped": True,
    "proxy": False,
}
APPLIED = {
    "event": "applied",
    "errors": {},
    "user_ns": True,
    "landlock_abi": 7,
    "uids": [65534, 65534, 65534],
    "gids": [65534, 65534, 65534],
    "groups": [],
    "no_new_privs": 1,
    "seccomp_mode": 2,
    "seccomp_filters": 1,
    "caps": {"inh": 0, "prm": 0, "eff": 0, "bnd": 0, "amb": 0},
    "rlimits": {"nofile": [256, 256], "core": [0, 0]},
}
EXIT = {
    "event": "exit",
    "status": 7 << 8,
    "exit_code": 7,
    "signal": None,
    "cpu_user_s": 0.5,
    "cpu_sys_s": 0.25,
    "peak_rss_kb": 1234,
}


def line(event: dict[str, Any], token: str | None = TOKEN) -> bytes:
    """A status line exactly as the launcher's Reporter writes it (repr of a dict, token first)."""
    body = event if token is None else {"token": token, **event}
    return repr(body).encode()


def fed(*events: dict[str, Any], plan: LaunchPlan | None = PLAN) -> LaunchReport:
    report = LaunchReport(plan=plan)
    for event in events:
        assert report.feed(line(event, plan.status_token if plan else "")), event
    return report


def full_report() -> LaunchReport:
    return fed(NAMESPACES, SETUP, APPLIED, EXIT)


# --- launcher_argv and seal ----------------------------------------------------------------------------


def test_launcher_argv_runs_the_packaged_launcher_isolated_and_without_site() -> None:
    assert launcher_argv("session", 5, 9) == [sys.executable, "-I", "-S", str(LAUNCHER), "session", "5", "9"]
    assert LAUNCHER.name == "launcher.py"
    assert LAUNCHER.parent == Path(launcher.__file__).parent
    assert LAUNCHER.is_file()


def test_seal_gives_every_call_its_own_token() -> None:
    first, report = seal(PLAN.replace(status_token=""))
    second, _ = seal(PLAN.replace(status_token=""))
    assert len(first.status_token) == 32 and first.status_token != second.status_token
    assert report.plan == first
    assert first.parent_pid == os.getpid()  # the launcher's parent: its death kills the sandbox
    assert first.replace(status_token="", parent_pid=None) == PLAN.replace(status_token="")  # nothing else


# --- the events, one at a time -------------------------------------------------------------------------


def test_a_fresh_report_claims_nothing() -> None:
    report = LaunchReport(plan=PLAN)
    assert report.namespaces == []
    assert not (report.rootfs or report.proc or report.private_tmp or report.loopback)
    assert not (report.user_ns or report.rlimits or report.no_new_privs or report.seccomp or report.applied)
    assert report.uid is None and report.groups is None and not report.capabilities_empty
    assert report.landlock_abi is None
    assert report.exit is None
    assert report.errors == {}


def test_every_event_in_order_fills_its_fields() -> None:
    report = full_report()
    assert report.namespaces == ["pid", "mount"] and report.namespace_error is None
    assert (report.rootfs, report.proc, report.private_tmp, report.loopback) == (True, True, True, False)
    assert report.applied and report.user_ns
    assert (report.uid, report.gid, report.groups) == (65534, 65534, ())
    assert report.no_new_privs and report.seccomp and report.rlimits and report.capabilities_empty
    assert report.landlock_abi == 7
    assert report.exit == {k: v for k, v in EXIT.items() if k != "event"}
    assert report.errors == {} and report.rejected == 0


def test_namespaces_event_with_an_error() -> None:
    report = fed({**NAMESPACES, "active": [], "error": "unshare(user) failed: EPERM"})
    assert report.namespaces == []
    assert report.namespace_error == "unshare(user) failed: EPERM"


def test_abort_after_a_stage_then_exit() -> None:
    report = fed(NAMESPACES, SETUP, {"event": "abort", "message": "cannot enter working directory /x", "strict": False})
    assert report.abort == "cannot enter working directory /x" and not report.abort_strict
    assert report.feed(line(EXIT))
    assert not report.applied


def test_a_strict_abort() -> None:
    report = fed(NAMESPACES, {"event": "abort", "message": "strict policy: the rootfs layer failed", "strict": True})
    assert report.abort_strict is True


def test_exec_failed_event() -> None:
    report = fed(NAMESPACES, SETUP, APPLIED, {"event": "exec_failed", "message": "nope: command not found"}, EXIT)
    assert report.exec_failed == "nope: command not found"


def test_the_abort_of_an_unreadable_plan_needs_no_token_and_ends_the_report() -> None:
    report = LaunchReport(plan=PLAN)
    assert report.feed(line({"event": "abort", "message": "unreadable launch plan: EOF", "strict": False}, ""))
    assert report.abort == "unreadable launch plan: EOF"
    for event in (NAMESPACES, EXIT):
        assert not report.feed(line(event))
    assert report.exit is None and report.rejected == 2


def test_an_unsealed_abort_can_never_be_strict_nor_come_late() -> None:
    report = LaunchReport(plan=PLAN)
    assert not report.feed(line({"event": "abort", "message": "strict policy: x", "strict": True}, ""))
    assert report.feed(line(NAMESPACES))
    assert not report.feed(line({"event": "abort", "message": "forged", "strict": False}, ""))
    assert report.abort is None and report.rejected == 2


# --- the readings are judged, not echoed -----------------------------------------------------------------


def test_ids_are_those_read_back_not_the_plans() -> None:
    report = fed(NAMESPACES, SETUP, {**APPLIED, "uids": [0, 0, 0], "gids": [0, 0, 0]})
    assert (report.uid, report.gid) == (0, 0)
    assert report.errors["uid_drop"].startswith("requested, but the read-back shows it is not in force")


@pytest.mark.parametrize(
    ("uids", "expected"),
    [([1000, 0, 1000], None), ([None, None, None], None), ([1000, 1000, None], 1000), ([None, 1000, 1000], None)],
    ids=["effective-differs", "unmapped", "saved-unknown", "real-unmapped"],
)
def test_a_uid_is_reported_only_when_real_and_effective_agree(uids: list[int | None], expected: int | None) -> None:
    assert fed(NAMESPACES, SETUP, {**APPLIED, "uids": uids}).uid == expected


def test_groups_the_namespace_cannot_map_are_not_guessed() -> None:
    assert fed(NAMESPACES, SETUP, {**APPLIED, "groups": [1000, None]}).groups is None
    assert fed(NAMESPACES, SETUP, {**APPLIED, "groups": [27, 1000]}).groups == (27, 1000)


@pytest.mark.parametrize(
    ("changes", "layer"),
    [
        ({"no_new_privs": 0}, "no_new_privs"),
        ({"no_new_privs": None}, "no_new_privs"),
        ({"seccomp_mode": 0, "seccomp_filters": 0}, "seccomp"),
        ({"seccomp_mode": 2, "seccomp_filters": 0}, "seccomp"),  # a filter from outside, not ours
        ({"rlimits": {"nofile": [256, 4096], "core": [0, 0]}}, "rlimits"),  # hard limit left open
        ({"rlimits": {"nofile": [1024, 1024], "core": [0, 0]}}, "rlimits"),  # looser than planned
        ({"rlimits": {"nofile": [-1, -1], "core": [0, 0]}}, "rlimits"),  # unlimited
        ({"rlimits": {"core": [0, 0]}}, "rlimits"),  # not read back at all
    ],
    ids=["nnp-off", "nnp-unknown", "no-seccomp", "foreign-filter", "hard-open", "looser", "unlimited", "missing"],
)
def test_a_layer_whose_read_back_disagrees_is_not_in_force_and_says_why(changes: dict[str, Any], layer: str) -> None:
    report = fed(NAMESPACES, SETUP, {**APPLIED, **changes})
    assert getattr(report, layer) is False
    assert report.errors[layer].startswith("requested, but the read-back shows it is not in force (")


def test_a_limit_clamped_below_the_plan_is_in_force() -> None:
    report = fed(NAMESPACES, SETUP, {**APPLIED, "rlimits": {"nofile": [128, 128], "core": [0, 0]}})
    assert report.rlimits and "rlimits" not in report.errors


def test_the_launchers_own_error_is_kept_over_the_read_back_reason() -> None:
    report = fed(NAMESPACES, SETUP, {**APPLIED, "errors": {"seccomp": "EINVAL"}, "seccomp_mode": 0})
    assert report.errors["seccomp"] == "EINVAL"


def test_capabilities_are_empty_only_when_nothing_can_come_back() -> None:
    caps = APPLIED["caps"]
    assert not fed(NAMESPACES, SETUP, {**APPLIED, "caps": {**caps, "bnd": 1 << 21}}).capabilities_empty
    assert not fed(NAMESPACES, SETUP, {**APPLIED, "caps": None}).capabilities_empty
    # Held before exec in the command's own user namespace, cleared by exec: still empty afterwards.
    assert fed(NAMESPACES, SETUP, {**APPLIED, "caps": {**caps, "prm": 0x1FF, "eff": 0x1FF}}).capabilities_empty


def test_without_a_plan_no_limit_can_be_judged() -> None:
    assert fed(NAMESPACES, SETUP, APPLIED, plan=None).rlimits is False


# --- forged, garbled and out-of-order lines change nothing ------------------------------------------------


def _snapshot(report: LaunchReport) -> dict[str, Any]:
    return {k: v for k, v in vars(report).items() if k != "rejected"}


FORGED_EXIT = {**EXIT, "exit_code": 0, "status": 0}
FORGED_APPLIED = {**APPLIED, "landlock_abi": 99, "uids": [0, 0, 0]}


@pytest.mark.parametrize(
    "raw",
    [
        line(FORGED_EXIT, token=None),
        line(FORGED_EXIT, token=""),
        line(FORGED_EXIT, token="0" * 32),
        line(FORGED_EXIT, token=TOKEN[:-1]),
        line({**FORGED_EXIT, "token": 1}, token=None),
        line(FORGED_APPLIED, token=None),
    ],
    ids=["no-token", "empty-token", "wrong-token", "short-token", "int-token", "applied-no-token"],
)
def test_a_line_without_this_calls_token_is_rejected(raw: bytes) -> None:
    report = fed(NAMESPACES, SETUP)
    before = _snapshot(report)
    assert report.feed(raw) is False
    assert _snapshot(report) == before and report.rejected == 1
    # Positive control: the very same event with the token is accepted and does change the report.
    assert report.feed(line(EXIT if b"exit" in raw else APPLIED))


@pytest.mark.parametrize(
    "event",
    [
        {**EXIT, "exit_code": True},  # a bool is not an int
        {**EXIT, "cpu_user_s": 0},  # an int is not a float
        {**EXIT, "extra": 1},
        {k: v for k, v in EXIT.items() if k != "signal"},
        {**APPLIED, "landlock_abi": "7"},
        {**APPLIED, "no_new_privs": True},
        {**APPLIED, "uids": [0, 0]},
        {**APPLIED, "uids": (0, 0, 0)},  # a tuple where the launcher writes a list
        {**APPLIED, "caps": {"inh": 0}},
        {**APPLIED, "caps": {**APPLIED["caps"], "eff": -1}},
        {**APPLIED, "rlimits": {"stack": [1, 1]}},
        {**APPLIED, "errors": {"anything": "x"}},
        {**APPLIED, "errors": {"seccomp": 22}},
        {"event": "from-the-future", "uid": 0},
    ],
    ids=[
        "bool-as-int",
        "int-as-float",
        "extra-key",
        "missing-key",
        "str-abi",
        "bool-nnp",
        "short-uids",
        "tuple-uids",
        "partial-caps",
        "negative-caps",
        "unknown-rlimit",
        "unknown-error-key",
        "non-str-error",
        "unknown-event",
    ],
)
def test_a_sealed_line_off_the_schema_is_rejected(event: dict[str, Any]) -> None:
    report = fed(NAMESPACES, SETUP)
    before = _snapshot(report)
    assert report.feed(line(event)) is False
    assert _snapshot(report) == before


def test_events_come_once_and_in_order() -> None:
    report = full_report()
    before = _snapshot(report)
    for event in (NAMESPACES, SETUP, FORGED_APPLIED, FORGED_EXIT):  # replays after the end
        assert not report.feed(line(event))
    assert _snapshot(report) == before
    early = LaunchReport(plan=PLAN)
    for event in (FORGED_EXIT, APPLIED, SETUP):  # nothing may come before `namespaces`
        assert not early.feed(line(event))
    assert early.rejected == 3 and not early.applied and early.exit is None


def test_applied_cannot_follow_an_abort() -> None:
    report = fed(NAMESPACES, SETUP, {"event": "abort", "message": "cannot enter working directory", "strict": False})
    assert not report.feed(line(FORGED_APPLIED))
    assert not report.applied and report.landlock_abi is None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not python",
        b"['event', 'exit']",
        line(EXIT)[:-5],  # cut short
        b"\xff\xfe\x00",
        b"(" * 10000 + b")" * 10000,
        line({**EXIT, "pad": "x" * MAX_STATUS_LINE}),
    ],
    ids=["empty", "text", "list", "truncated", "binary", "nested", "too-long"],
)
def test_garbage_lines_are_rejected(raw: bytes) -> None:
    report = fed(NAMESPACES, SETUP)
    before = _snapshot(report)
    assert report.feed(raw) is False
    assert _snapshot(report) == before


def test_a_line_is_evaluated_as_a_literal_never_as_code(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    report = LaunchReport(plan=PLAN)
    report.feed(f"__import__('os').system('touch {target}')".encode())
    report.feed(
        f"{{'token': {TOKEN!r}, 'event': 'namespaces', 'active': open('{target}', 'w'), 'error': None}}".encode()
    )
    assert not target.exists()
    assert report.rejected == 2 and report.namespaces == []


def test_feed_all_splits_lines_and_skips_blank_ones() -> None:
    report = LaunchReport(plan=PLAN)
    report.feed_all(line(NAMESPACES) + b"\n\n   \ngarbage\n" + line(SETUP) + b"\n")
    assert report.namespaces == ["pid", "mount"] and report.rootfs
    assert report.rejected == 1


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


def _send(reporter: launcher.Reporter, event: dict[str, Any]) -> None:
    reporter.send(event["event"], **{k: v for k, v in event.items() if k != "event"})


def test_reporter_lines_parse_back_into_the_report(status_pipe: tuple[int, int]) -> None:
    read_fd, write_fd = status_pipe
    reporter = launcher.Reporter(write_fd, TOKEN)
    for event in (NAMESPACES, SETUP, {**APPLIED, "errors": {"landlock": "EINVAL: é"}}, EXIT):
        _send(reporter, event)
    data = _drain(read_fd, write_fd)
    assert data.count(b"\n") == 4
    report = LaunchReport(plan=PLAN)
    report.feed_all(data)
    assert report.rejected == 0
    assert report.namespaces == ["pid", "mount"] and report.applied and report.uid == 65534
    assert report.errors == {"landlock": "EINVAL: é"}
    assert report.exit is not None and report.exit["exit_code"] == 7


def test_reporter_survives_a_closed_pipe(status_pipe: tuple[int, int]) -> None:
    read_fd, write_fd = status_pipe
    os.close(read_fd)
    _send(launcher.Reporter(write_fd, TOKEN), EXIT)  # EPIPE (SIGPIPE is ignored by Python): no raise


def test_reporter_caps_a_line(status_pipe: tuple[int, int]) -> None:
    read_fd, write_fd = status_pipe
    launcher.Reporter(write_fd, TOKEN).send("exec_failed", message="x" * 10000)
    assert len(_drain(read_fd, write_fd)) <= 4000


def test_an_over_long_event_does_not_swallow_the_next_one(status_pipe: tuple[int, int]) -> None:
    read_fd, write_fd = status_pipe
    reporter = launcher.Reporter(write_fd, TOKEN)
    for event in (NAMESPACES, SETUP, APPLIED):
        _send(reporter, event)
    reporter.send("exec_failed", message="x" * 5000 + ": cannot execute (File name too long)")
    _send(reporter, {**EXIT, "exit_code": 126})
    report = LaunchReport(plan=PLAN)
    report.feed_all(_drain(read_fd, write_fd))
    assert report.rejected == 0
    assert report.exec_failed is not None and report.exec_failed.endswith("...")
    assert report.exit is not None and report.exit["exit_code"] == 126
