"""SandboxService without MCP: argument checks, sessions, files, python choice, result size, audit, limits."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from support.hostile_names import HOSTILE_NAMES, MAKE_NAMES_CODE

from hanzo_sandbox_mcp.clients import ANONYMOUS, LOCAL
from hanzo_sandbox_mcp.config import ExecSettings, SessionSettings, Settings
from hanzo_sandbox_mcp.errors import RequestError, SandboxUnavailable, SessionNotFound
from hanzo_sandbox_mcp.filenames import unescape_name
from hanzo_sandbox_mcp.protection import EffectiveProtection
from hanzo_sandbox_mcp.results import ExecResult
from hanzo_sandbox_mcp.sandbox import NullSandbox, Sandbox, detect
from hanzo_sandbox_mcp.service import (
    MAX_COMMAND_BYTES,
    RESULT_BUDGET_BYTES,
    OnOutput,
    RunResult,
    SandboxService,
    choose_python,
    fit_result,
    wire_size,
)
from hanzo_sandbox_mcp.sessions import new_session_id

pytestmark = pytest.mark.anyio

SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return detect()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _settings(**updates: Any) -> Settings:
    # Python in the sandbox: Debian's, which every uid can execute (a pyenv one under /root is not).
    exec_settings = {"python": SYSTEM_PYTHON, **updates.pop("exec", {})}
    return Settings(exec=ExecSettings(**exec_settings), **updates)


@pytest.fixture
async def service(sandbox: Sandbox) -> AsyncIterator[SandboxService]:
    async with SandboxService(_settings(), sandbox=sandbox) as svc:
        yield svc


# -- running commands ------------------------------------------------------------------------------------


async def test_a_command_returns_its_output_status_and_session(service: SandboxService) -> None:
    result = await service.run_command("echo out; echo err >&2; exit 3")
    assert (result.stdout, result.stderr, result.exit_code) == ("out\n", "err\n", 3)
    assert result.failure() is None  # a non-zero exit is data, not a failure
    assert result.session_id in service.sessions
    assert result.protection.sandbox == service.sandbox.name


async def test_files_persist_within_a_session(service: SandboxService) -> None:
    first = await service.run_command("echo remembered > notes.txt")
    again = await service.run_command("cat notes.txt", session_id=first.session_id)
    assert again.stdout == "remembered\n"


async def test_default_sessions_reuse_one_workdir(service: SandboxService) -> None:
    first = await service.run_command("echo 1 > f")
    second = await service.run_command("cat f")
    assert first.session_id == second.session_id and second.stdout == "1\n"


async def test_a_client_without_a_protocol_session_gets_a_fresh_workdir_each_call(sandbox: Sandbox) -> None:
    async with SandboxService(_settings(), sandbox=sandbox, implicit_session="protocol_session") as svc:
        first = await svc.run_command("echo 1 > f", client=ANONYMOUS)
        second = await svc.run_command("cat f", client=ANONYMOUS)
        with pytest.raises(RequestError, match="pass session_id"):
            await svc.list_files(client=ANONYMOUS)
    assert first.session_id != second.session_id
    assert second.exit_code != 0


async def test_two_sessions_cannot_see_each_others_files(service: SandboxService) -> None:
    a = await service.create_session()
    b = await service.create_session()
    await service.run_command("echo secret-a > secret.txt", session_id=a.session_id)
    peek = await service.run_command(f"cat {a.workdir}/secret.txt", session_id=b.session_id)
    assert "secret-a" not in peek.stdout
    assert peek.exit_code != 0


async def test_stdin_reaches_the_command(service: SandboxService) -> None:
    result = await service.run_command("tr a-z A-Z", stdin="hello")
    assert result.stdout == "HELLO"


async def test_cwd_is_relative_to_the_workdir(service: SandboxService) -> None:
    first = await service.run_command("mkdir -p a/b")
    result = await service.run_command("pwd", session_id=first.session_id, cwd="a/b")
    assert result.stdout.strip().endswith("/a/b")


@pytest.mark.parametrize(
    ("cwd", "message"),
    [
        ("../..", "'..'"),
        ("/etc", "outside the session workdir"),
        ("missing", "does not exist"),
        ("root-link", "symbolic link"),
        ("a\x00b", "NUL"),
    ],
)
async def test_cwd_escapes_are_refused(service: SandboxService, cwd: str, message: str) -> None:
    first = await service.run_command("ln -s / root-link")
    with pytest.raises(RequestError, match=message):
        await service.run_command("pwd", session_id=first.session_id, cwd=cwd)


@pytest.mark.parametrize(
    ("command", "message"),
    [("", "empty"), ("   ", "empty"), ("echo a\x00b", "NUL"), ("x" * (MAX_COMMAND_BYTES + 1), "limit")],
)
async def test_unusable_commands_are_refused(service: SandboxService, command: str, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        await service.run_command(command)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), 10_000, True, "1.5"])
async def test_unusable_timeouts_are_refused(service: SandboxService, timeout: float) -> None:
    with pytest.raises(RequestError, match="timeout_s"):
        await service.run_command("true", timeout_s=timeout)


async def test_a_timeout_is_reported_in_the_result_with_its_partial_output(service: SandboxService) -> None:
    result = await service.run_command("echo before; exec sleep 30", timeout_s=2)
    assert result.timed_out and result.stdout == "before\n"
    failure = result.failure()
    assert failure is not None and "timed out" in failure and "timeout_s" in failure


async def test_a_required_sandbox_that_enforces_nothing_refuses_to_run() -> None:
    settings = _settings(mode="on")
    async with SandboxService(settings, sandbox=NullSandbox()) as svc:
        with pytest.raises(SandboxUnavailable, match="HANZO_SANDBOX=on"):
            await svc.run_command("true")


async def test_malformed_and_unknown_session_ids_are_refused(service: SandboxService) -> None:
    with pytest.raises(SessionNotFound, match="not a session handle"):
        await service.run_command("true", session_id="../../etc")
    with pytest.raises(SessionNotFound, match="unknown session"):
        await service.run_command("true", session_id=new_session_id())


async def test_closed_sessions_lose_their_files(service: SandboxService) -> None:
    info = await service.create_session()
    await service.run_command("touch f", session_id=info.session_id)
    closed = await service.close_session(info.session_id)
    assert closed.closed and not Path(info.workdir).exists()
    with pytest.raises(SessionNotFound, match="closed"):
        await service.run_command("true", session_id=info.session_id)


async def test_sessions_expire_after_the_idle_ttl(sandbox: Sandbox) -> None:
    clock = FakeClock()
    settings = _settings(sessions=SessionSettings(idle_ttl_s=30))
    async with SandboxService(settings, sandbox=sandbox, clock=clock) as svc:
        info = await svc.create_session()
        clock.now += 31
        with pytest.raises(SessionNotFound, match="expired after 30 s"):
            await svc.run_command("true", session_id=info.session_id)
        assert not Path(info.workdir).exists()


async def test_shutdown_deletes_every_workdir(sandbox: Sandbox) -> None:
    async with SandboxService(_settings(), sandbox=sandbox) as svc:
        root = svc.sessions.root
        await svc.run_command("mkdir -p deep/er && touch deep/er/f")
    assert not root.exists()


# -- run_python ------------------------------------------------------------------------------------------


async def test_python_tracebacks_show_line_numbers(service: SandboxService) -> None:
    result = await service.run_python("x = 1\ny = 0\nprint(x / y)\n")
    assert result.exit_code == 1
    assert "line 3" in result.stderr and "ZeroDivisionError" in result.stderr
    assert "print(x / y)" in result.stderr


async def test_python_imports_modules_saved_in_the_workdir(service: SandboxService) -> None:
    first = await service.run_command("echo 'VALUE = 42' > helper.py")
    result = await service.run_python("import helper\nprint(helper.VALUE)", session_id=first.session_id)
    assert result.stdout == "42\n"


async def test_python_script_is_removed_after_the_call(service: SandboxService) -> None:
    result = await service.run_python("print('hi')")
    listing = await service.list_files(result.session_id)
    assert not [e for e in listing.entries if e.name.startswith(".hanzo_run_")]


async def test_python_never_writes_through_a_planted_link(service: SandboxService, tmp_path: Path) -> None:
    first = await service.run_command("ln -s /tmp/hanzo-target .hanzo_run_1.py; ln -s /etc/x .hanzo_run_2.py")
    result = await service.run_python("print('ran')", session_id=first.session_id)
    assert result.stdout == "ran\n"
    assert not Path("/etc/x").exists()


def test_python_choice_prefers_the_configured_interpreter() -> None:
    choice = choose_python("/opt/py/bin/python3", (65534, 65534))
    assert choice.path == "/opt/py/bin/python3" and "configured" in choice.reason


def test_python_choice_is_the_servers_own_when_reachable() -> None:
    choice = choose_python(None, (os.geteuid(), os.getegid()))
    assert choice.path == os.path.realpath(sys.executable)


def test_python_choice_falls_back_when_the_command_uid_cannot_reach_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = tmp_path / "private"
    (private / "bin").mkdir(parents=True)
    fake = private / "bin" / "python3"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    private.chmod(0o700)
    monkeypatch.setattr(sys, "executable", str(fake))
    other = 65533 if os.geteuid() != 65533 else 65532
    choice = choose_python(None, (other, other))
    assert choice.path == SYSTEM_PYTHON
    assert "not reachable" in choice.reason


# -- files -----------------------------------------------------------------------------------------------


async def test_list_and_read_files_back(service: SandboxService) -> None:
    first = await service.run_command("mkdir d && printf hi > d/t.txt && printf '\\000\\001' > bin")
    listing = await service.list_files(first.session_id)
    kinds = {e.name: e.type for e in listing.entries}
    assert kinds["d"] == "directory" and kinds["bin"] == "file"
    sub = await service.list_files(first.session_id, "d")
    assert [e.path for e in sub.entries] == ["d/t.txt"]
    text = await service.read_file(first.session_id, "d/t.txt")
    assert text.text() == "hi"
    binary = await service.read_file(first.session_id, "bin")
    assert binary.text() is None and binary.data == b"\x00\x01"


@pytest.mark.parametrize("path", ["passwd-link", "root-link/etc/passwd", "../../../etc/passwd", "/etc/passwd"])
async def test_reading_never_follows_links_or_dotdot_out(service: SandboxService, path: str) -> None:
    first = await service.run_command("ln -s /etc/passwd passwd-link; ln -s / root-link")
    with pytest.raises(RequestError):
        await service.read_file(first.session_id, path)


async def test_listing_reports_links_without_following_them(service: SandboxService) -> None:
    first = await service.run_command("ln -s / root-link")
    listing = await service.list_files(first.session_id)
    assert {e.name: e.type for e in listing.entries}["root-link"] == "symlink"
    with pytest.raises(RequestError, match="symbolic link"):
        await service.list_files(first.session_id, "root-link")


async def test_large_files_are_refused_with_a_hint(service: SandboxService) -> None:
    first = await service.run_command("head -c 2000 /dev/zero > big")
    with pytest.raises(RequestError, match="head -c"):
        await service.read_file(first.session_id, "big", max_bytes=1000)


async def test_a_fifo_cannot_hang_a_read(service: SandboxService) -> None:
    first = await service.run_command("mkfifo pipe")
    with anyio.fail_after(10), pytest.raises(RequestError, match="not a regular file"):
        await service.read_file(first.session_id, "pipe")


async def test_any_bytes_name_lists_and_passes_back_to_every_entry_point(service: SandboxService) -> None:
    made = await service.run_python(MAKE_NAMES_CODE, stdin=repr(HOSTILE_NAMES))
    assert made.exit_code == 0, made.stderr
    sid = made.session_id
    listing = await service.list_files(sid)
    listing.model_dump_json()  # every name serializes (a PydanticSerializationError before)
    listed = {e.name: e for e in listing.entries if e.type == "directory" and e.name != ".tmp"}
    assert set(listed) == {"%FF", "%ED%A0%80", "%2541", "a%", "new%0Aline", "%1B]0;title%07"}
    assert not listed["a%"].escaped and listed["%FF"].escaped
    for raw in HOSTILE_NAMES:
        entry = next(e for e in listed.values() if unescape_name(e.name) == raw)
        inner = await service.list_files(sid, entry.path)
        assert [e.path for e in inner.entries] == [f"{entry.path}/inner"] and inner.path == entry.path
        content = await service.read_file(sid, inner.entries[0].path)
        assert content.data == raw and content.path == inner.entries[0].path
        where = await service.run_command("cat inner", session_id=sid, cwd=entry.path)
        assert (where.exit_code, where.stdout) == (0, raw.decode("utf-8", "replace"))


@pytest.mark.parametrize(("path", "message"), [("%2E%2E", "'..'"), ("a%2Fb", "'/' or NUL"), ("a%00", "'/' or NUL")])
async def test_escapes_cannot_smuggle_dotdot_slash_or_nul(service: SandboxService, path: str, message: str) -> None:
    first = await service.run_command("mkdir a")
    with pytest.raises(RequestError, match=message):
        await service.list_files(first.session_id, path)
    with pytest.raises(RequestError, match=message):
        await service.run_command("true", session_id=first.session_id, cwd=path)


async def test_an_oversized_path_is_not_echoed_whole(service: SandboxService) -> None:
    first = await service.run_command("true")
    for call in (
        service.run_command("true", session_id=first.session_id, cwd="x" * 100_000),
        service.list_files(first.session_id, "../" + "y" * 100_000),
        service.read_file(first.session_id, "/etc/" + "z" * 100_000),
    ):
        with pytest.raises(RequestError) as caught:
            await call
        assert len(str(caught.value)) < 400 and "characters)" in str(caught.value)


async def test_a_call_closed_while_queued_is_told_it_never_ran(sandbox: Sandbox) -> None:
    settings = _settings(exec={"max_concurrent_calls_per_session": 1})
    async with SandboxService(settings, sandbox=sandbox) as svc:
        info = await svc.create_session()
        started, on_output = await _gates(svc, info.session_id, "gate")
        errors: list[str] = []

        async def call(command: str, on: Any = None) -> None:
            try:
                await svc.run_command(command, session_id=info.session_id, on_output=on)
            except SessionNotFound as exc:
                errors.append(str(exc))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(call, "echo started; cat gate", on_output)
                await started.wait()
                group.start_soon(call, "echo queued")
                session = svc.sessions._sessions[info.session_id]
                while session.limiter.statistics().tasks_waiting < 1:
                    await anyio.sleep(0.01)
                await svc.close_session(info.session_id)
    assert len(errors) == 2
    ran, queued = sorted(errors, key=lambda e: "never ran" in e)
    assert "never ran" in queued and "killed" not in queued
    assert "killed" in ran


# -- result size -----------------------------------------------------------------------------------------


def _result(stdout: str, stderr: str = "") -> RunResult:
    base = ExecResult(
        exit_code=0,
        stdout=stdout,
        stderr=stderr,
        duration_ms=1.0,
        quota_mode="polled",
        protection=EffectiveProtection(
            fs_isolated=False, network_isolated=False, rlimits_applied=False, sandbox="null", network="full"
        ),
    )
    return RunResult.of(base, new_session_id())


def test_fit_result_keeps_small_results_intact() -> None:
    small = _result("hello")
    assert fit_result(small) is small


def test_fit_result_shrinks_escape_heavy_output_under_the_budget() -> None:
    # 512 KiB of control bytes: each becomes \u0001 in JSON and \\u0001 in the text copy.
    huge = _result("\x01" * (512 * 1024), "e" * 1000)
    fitted = fit_result(huge)
    assert wire_size(fitted) <= RESULT_BUDGET_BYTES
    assert fitted.stdout_truncated_bytes > 0
    assert fitted.stdout.startswith("\x01") and fitted.stdout.endswith("\x01")  # head and tail kept
    assert "bytes cut to fit" in fitted.stdout


def test_run_result_carries_every_exec_result_field() -> None:
    assert set(ExecResult.model_fields) < set(RunResult.model_fields)
    assert set(RunResult.model_fields) - set(ExecResult.model_fields) == {"session_id", "processes"}


# -- capabilities, audit, limits -------------------------------------------------------------------------


async def test_capabilities_report_the_sandbox_limits_and_python(service: SandboxService) -> None:
    caps = await service.capabilities()
    assert caps.sandbox == service.sandbox.name
    assert caps.layers and caps.protection.sandbox == caps.sandbox
    assert caps.python.path == SYSTEM_PYTHON
    assert caps.limits.max_timeout_s == service.settings.exec.max_timeout_s
    assert caps.limits.workdir_quota_mb == service.settings.policy.workdir_quota_mb
    assert caps.sessions.idle_ttl_s == service.settings.sessions.idle_ttl_s


async def test_audit_log_records_calls_without_secrets(sandbox: Sandbox, tmp_path: Path) -> None:
    log = tmp_path / "audit" / "calls.jsonl"
    os.environ["HANZO_TEST_SECRET_VALUE"] = "s3cr3t-value"
    try:
        async with SandboxService(_settings(audit_log=log), sandbox=sandbox) as svc:
            result = await svc.run_command("echo " + "y" * 10_000)
            with pytest.raises(RequestError):
                await svc.run_command("true", cwd="../x", session_id=result.session_id)
    finally:
        del os.environ["HANZO_TEST_SECRET_VALUE"]
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    text = log.read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == 1
    record = records[0]
    assert record["tool"] == "run_command" and record["exit_code"] == 0
    assert len(record["command"]) == 4096 and record["command_truncated"]
    assert record["protection"]["sandbox"] == sandbox.name
    assert result.session_id not in text and "s3cr3t-value" not in text


async def test_calls_queue_for_the_global_limit_and_one_slow_call_does_not_block_others(
    sandbox: Sandbox,
) -> None:
    settings = _settings(exec={"max_concurrent_calls": 2, "max_concurrent_calls_per_session": 2})
    async with SandboxService(settings, sandbox=sandbox) as svc:
        slow = await svc.create_session()
        started, on_output = await _gates(svc, slow.session_id, "gate1", "gate2")
        results: list[RunResult] = []

        async def slow_call(gate: str) -> None:
            command = f"echo started; cat {gate}"
            results.append(await svc.run_command(command, session_id=slow.session_id, on_output=on_output))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(slow_call, "gate1")
                await started.wait()
                # Another session runs to completion while the slow call still holds its slot.
                quick = await svc.run_command("echo quick")
                assert quick.stdout == "quick\n" and not results
                # With both slots taken, a third call queues instead of failing.
                group.start_soon(slow_call, "gate2")
                while svc.admission.running < 2:
                    await anyio.sleep(0.01)
                group.start_soon(svc.run_command, "echo queued")
                while svc.admission.waiting_for(LOCAL.key) < 1:
                    await anyio.sleep(0.01)
                # Open the gates of both slow calls.
                for gate in ("gate1", "gate2"):
                    await anyio.to_thread.run_sync(_write_fifo, Path(slow.workdir) / gate, b"go\n")
        assert [r.stdout for r in results] == ["started\ngo\n", "started\ngo\n"]


async def _gates(svc: SandboxService, session_id: str, *names: str) -> tuple[anyio.Event, OnOutput]:
    """FIFOs in the workdir that hold a `cat` until written, and an output callback that says a call started."""
    await svc.run_command("mkfifo " + " ".join(names), session_id=session_id)
    started = anyio.Event()

    async def on_output(_stream: str, _chunk: bytes) -> None:
        started.set()

    return started, on_output


def _write_fifo(path: Path, data: bytes) -> None:
    with open(path, "wb") as fifo:
        fifo.write(data)
