"""The same interaction tests over every transport (in memory, stdio, streamable HTTP, SSE)."""

from __future__ import annotations

import base64
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import ResourceLink
from support.hostile_names import HOSTILE_NAMES, MAKE_NAMES_CODE

from hanzo_sandbox_mcp.config import Settings
from hanzo_sandbox_mcp.filenames import unescape_name
from hanzo_sandbox_mcp.sandbox import NullSandbox
from hanzo_sandbox_mcp.server import build_server
from hanzo_sandbox_mcp.service import SandboxService
from hanzo_sandbox_mcp.version import package_version

pytestmark = pytest.mark.anyio

TOOLS = {"run_command", "run_python", "create_session", "close_session", "list_files", "capabilities"}
Connect = Any
Kit = Any


# -- listing ---------------------------------------------------------------------------------------------


async def test_tools_list_has_schemas_and_annotations(connect: Connect) -> None:
    async with connect() as conn:
        with anyio.fail_after(30):
            tools = {tool.name: tool for tool in (await conn.client.list_tools()).tools}
    assert set(tools) == TOOLS | {"start_process", "read_process", "write_process", "stop_process", "list_processes"}
    run = tools["run_command"]
    assert run.input_schema["required"] == ["command"]
    assert set(run.input_schema["properties"]) == {"command", "session_id", "cwd", "timeout_s", "stdin"}
    assert run.output_schema is not None
    out = run.output_schema["properties"]
    for field in (
        "exit_code",
        "signal",
        "stdout",
        "stderr",
        "stdout_truncated_bytes",
        "stderr_truncated_bytes",
        "timed_out",
        "duration_ms",
        "session_id",
        "protection",
        "resource_usage",
    ):
        assert field in out, field
    assert run.annotations is not None
    assert run.annotations.read_only_hint is False
    assert run.annotations.open_world_hint is False  # the default network mode is loopback
    assert "session_id" in (run.description or "") and "deleted" in (run.description or "")
    caps = tools["capabilities"].annotations
    assert caps is not None and caps.read_only_hint is True and caps.idempotent_hint is True
    assert set(tools["run_python"].input_schema["properties"]) == {"code", "session_id", "timeout_s", "stdin"}
    assert tools["close_session"].input_schema["required"] == ["session_id"]


async def test_open_world_hint_follows_the_network_mode(connect: Connect) -> None:
    async with connect(policy={"network": "full"}) as conn:
        with anyio.fail_after(30):
            tools = {tool.name: tool for tool in (await conn.client.list_tools()).tools}
    for name in ("run_command", "run_python"):
        annotations = tools[name].annotations
        assert annotations is not None and annotations.open_world_hint is True


# -- each tool -------------------------------------------------------------------------------------------


async def test_run_command_returns_output_exit_code_and_protection(connect: Connect, kit: Kit) -> None:
    async with connect() as conn:
        result = await kit.ok(conn, "run_command", command="echo out; echo err >&2; exit 7")
    assert (result["stdout"], result["stderr"], result["exit_code"]) == ("out\n", "err\n", 7)
    assert result["timed_out"] is False
    protection = result["protection"]
    assert {"fs_isolated", "network_isolated", "rlimits_applied"} <= set(protection)
    assert len(result["session_id"]) == 32


async def test_run_python_runs_code_and_shows_traceback_lines(connect: Connect, kit: Kit) -> None:
    async with connect() as conn:
        result = await kit.ok(conn, "run_python", code="import sys\nprint(sys.version_info[0])\nraise SystemExit(3)")
        assert (result["stdout"], result["exit_code"]) == ("3\n", 3)
        failing = await kit.ok(conn, "run_python", code="a = 1\nb = [][a]\n", session_id=result["session_id"])
    assert "line 2" in failing["stderr"] and "IndexError" in failing["stderr"]


async def test_stdin_and_cwd(connect: Connect, kit: Kit) -> None:
    async with connect() as conn:
        first = await kit.ok(conn, "run_command", command="mkdir -p sub/dir")
        sid = first["session_id"]
        piped = await kit.ok(conn, "run_command", command="wc -c", stdin="12345", session_id=sid)
        where = await kit.ok(conn, "run_command", command="pwd", cwd="sub/dir", session_id=sid)
    assert piped["stdout"].strip() == "5"
    assert where["stdout"].strip().endswith("/sub/dir")


async def test_files_persist_across_calls_in_one_session(connect: Connect, kit: Kit) -> None:
    async with connect() as conn:
        first = await kit.ok(conn, "run_command", command="echo kept > state.txt")
        sid = first["session_id"]
        py = await kit.ok(conn, "run_python", code="print(open('state.txt').read().strip())", session_id=sid)
        listing = await kit.call(conn, "list_files", {"session_id": sid})
    assert py["stdout"] == "kept\n" and py["session_id"] == sid
    assert not listing.is_error
    links = [b for b in listing.content if isinstance(b, ResourceLink)]
    assert [str(link.uri) for link in links] == [f"sandbox://sessions/{sid}/files/state.txt"]


async def test_implicit_session_per_transport(connect: Connect, kit: Kit) -> None:
    async with connect() as conn:
        first = await kit.ok(conn, "run_command", command="echo x > f")
        second = await kit.ok(conn, "run_command", command="cat f")
    if conn.implicit == "default":
        assert first["session_id"] == second["session_id"] and second["stdout"] == "x\n"
    else:
        assert first["session_id"] != second["session_id"] and second["exit_code"] != 0


async def test_create_and_close_session(connect: Connect, kit: Kit) -> None:
    async with connect() as conn:
        info = await kit.ok(conn, "create_session")
        sid = info["session_id"]
        assert info["rules"]["idle_ttl_s"] > 0 and "deleted" in info["rules"]["retention"]
        await kit.ok(conn, "run_command", command="touch f", session_id=sid)
        closed = await kit.ok(conn, "close_session", session_id=sid)
        assert closed == {"session_id": sid, "closed": True}
        message = await kit.error(conn, "run_command", command="ls", session_id=sid)
        assert "closed" in message and "create_session" in message
        await kit.error(conn, "close_session", session_id=sid)


async def test_capabilities(connect: Connect, kit: Kit) -> None:
    async with connect() as conn:
        caps = await kit.ok(conn, "capabilities")
    assert caps["platform"] and caps["sandbox"]
    assert {layer["layer"] for layer in caps["layers"]} >= {"env_scrub", "landlock", "seccomp"}
    assert all(layer["detail"] for layer in caps["layers"])
    assert {"fs_isolated", "network_isolated", "rlimits_applied"} <= set(caps["protection"])
    assert caps["network"] == "loopback"
    assert caps["limits"]["max_timeout_s"] == 120.0 and caps["limits"]["workdir_quota_mb"] > 0
    assert caps["sessions"]["idle_ttl_s"] > 0
    assert caps["python"]["path"] == "/usr/bin/python3"


async def test_files_read_back_as_resources(connect: Connect, kit: Kit) -> None:
    async with connect() as conn:
        first = await kit.ok(conn, "run_command", command="printf 'hello' > a.txt; printf '\\377\\000' > b.bin")
        sid = first["session_id"]
        with anyio.fail_after(30):
            text = await conn.client.read_resource(f"sandbox://sessions/{sid}/files/a.txt")
            blob = await conn.client.read_resource(f"sandbox://sessions/{sid}/files/b.bin")
    assert text.contents[0].text == "hello"  # type: ignore[union-attr]
    assert blob.contents[0].blob == "/wA="  # type: ignore[union-attr]


#: Names the SDK's own path checks would refuse too, though legal here: a drive-like prefix, backslashes.
NAMES = [*HOSTILE_NAMES, b"sp ace?#", b"C:x", b"a\\..\\b"]


async def test_any_bytes_name_round_trips_through_listing_resources_and_cwd(connect: Connect, kit: Kit) -> None:
    async with connect() as conn:
        made = await kit.ok(conn, "run_python", code=MAKE_NAMES_CODE, stdin=repr(NAMES))
        sid = made["session_id"]
        top = await kit.ok(conn, "list_files", session_id=sid)
        listed = {e["name"]: e for e in top["entries"] if e["type"] == "directory" and e["name"] != ".tmp"}
        assert {unescape_name(name) for name in listed} == set(NAMES)
        assert {"%FF", "%ED%A0%80", "%2541", "a%", "new%0Aline"} <= set(listed)
        for entry in listed.values():
            raw = unescape_name(entry["name"])
            inner = await kit.call(conn, "list_files", {"session_id": sid, "path": entry["path"]})
            assert not inner.is_error, kit.text_of(inner)
            (link,) = [b for b in inner.content if isinstance(b, ResourceLink)]
            with anyio.fail_after(30):
                read = await conn.client.read_resource(str(link.uri))
            content = read.contents[0]
            data = content.text.encode() if hasattr(content, "text") else base64.b64decode(content.blob)  # type: ignore[union-attr]
            assert data == raw, (entry, link.uri)
            where = await kit.ok(conn, "run_command", command="cat inner", session_id=sid, cwd=entry["path"])
            assert where["stdout"] == raw.decode("utf-8", "replace")


async def test_server_info_carries_the_package_version(connect: Connect) -> None:
    async with connect() as conn:
        info = conn.client.server_info
    assert info is not None and info.name == "hanzo-sandbox-mcp"
    assert info.version == package_version() and info.version[0].isdigit()


@pytest.mark.parametrize("path", ["passwd", "root/etc/passwd", "..%2F..%2Fetc%2Fpasswd", "../../etc/passwd"])
async def test_resources_never_follow_links_or_dotdot(connect: Connect, path: str, kit: Kit) -> None:
    async with connect() as conn:
        first = await kit.ok(conn, "run_command", command="ln -s /etc/passwd passwd; ln -s / root")
        sid = first["session_id"]
        with anyio.fail_after(30), pytest.raises(MCPError):
            await conn.client.read_resource(f"sandbox://sessions/{sid}/files/{path}")
        await kit.alive(conn)


# -- isolation, expiry, timeout, truncation --------------------------------------------------------------


async def test_a_session_cannot_read_another_sessions_files(connect: Connect, kit: Kit) -> None:
    async with connect() as conn:
        a = await kit.ok(conn, "create_session")
        b = await kit.ok(conn, "create_session")
        await kit.ok(conn, "run_command", command="echo TOP-SECRET-A > secret.txt", session_id=a["session_id"])
        peek = await kit.ok(conn, "run_command", command=f"cat {a['workdir']}/secret.txt", session_id=b["session_id"])
        listing = await kit.ok(conn, "run_command", command=f"ls {a['workdir']}", session_id=b["session_id"])
    assert "TOP-SECRET-A" not in peek["stdout"] and peek["exit_code"] != 0
    assert "secret.txt" not in listing["stdout"]


async def test_sessions_expire_after_the_idle_ttl(connect: Connect, kit: Kit) -> None:
    async with connect(sessions={"idle_ttl_s": 0.2}) as conn:
        info = await kit.ok(conn, "create_session")
        workdir = anyio.Path(info["workdir"])
        # Expiry is the server's clock: wait (bounded) until the sweeper removes the workdir.
        with anyio.fail_after(30):
            while await workdir.exists():
                await anyio.sleep(0.05)
        message = await kit.error(conn, "run_command", command="true", session_id=info["session_id"])
    assert "expired" in message


async def test_timeout_is_an_error_result_with_partial_output(connect: Connect, kit: Kit) -> None:
    marker = kit.unique_marker()
    async with connect() as conn:
        arguments = {"command": f"echo partial; sleep {marker}", "timeout_s": 2}
        result = await kit.call(conn, "run_command", arguments)
        assert result.is_error
        assert "timed out" in kit.text_of(result) and "timeout_s" in kit.text_of(result)
        structured = result.structured_content
        assert structured is not None
        assert structured["timed_out"] is True and structured["stdout"] == "partial\n"
        assert kit.marker_pids(marker) == []
        await kit.alive(conn)


async def test_a_required_but_unavailable_sandbox_is_a_tool_error(kit: Kit) -> None:
    settings = Settings.model_validate(kit.merged(kit.BASE_CONFIG, {"mode": "on"}))
    async with SandboxService(settings, sandbox=NullSandbox()) as service, Client(build_server(service)) as client:
        with anyio.fail_after(30):
            result = await client.call_tool("run_command", {"command": "true"})
    assert result.is_error and "HANZO_SANDBOX=on" in kit.text_of(result)


async def test_a_timeout_above_the_maximum_is_refused(connect: Connect, kit: Kit) -> None:
    async with connect() as conn:
        message = await kit.error(conn, "run_command", command="true", timeout_s=121)
    assert "maximum of 120" in message


async def test_output_is_truncated_and_counted(connect: Connect, kit: Kit) -> None:
    async with connect(output={"max_stdout_bytes": 1024, "max_stderr_bytes": 512}) as conn:
        result = await kit.ok(
            conn, "run_command", command="head -c 100000 /dev/zero | tr '\\0' a; head -c 5000 /dev/zero >&2"
        )
    assert result["stdout_truncated_bytes"] == 100000 - 1024
    assert result["stderr_truncated_bytes"] == 5000 - 512
    assert result["stdout"].startswith("a" * 100)


# -- cancellation and progress ---------------------------------------------------------------------------


async def test_cancellation_kills_the_process_tree(connect: Connect, kit: Kit) -> None:
    marker = kit.unique_marker()
    async with connect() as conn:
        started = anyio.Event()

        async def progress(_done: float, _total: float | None, _message: str | None) -> None:
            started.set()

        # A tree: the shell, a background sleep and a foreground one, all with the marker.
        command = f"sleep {marker} & echo started; sleep {marker}; wait"
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:

                async def run() -> None:
                    await conn.client.call_tool("run_command", {"command": command}, progress_callback=progress)

                group.start_soon(run)
                await started.wait()
                await kit.wait_until(lambda: len(kit.marker_pids(marker)) >= 2)
                group.cancel_scope.cancel()
        await kit.wait_until(lambda: kit.marker_pids(marker) == [])
        await kit.alive(conn)


async def test_progress_notifications_carry_the_output_tail(connect: Connect) -> None:
    messages: list[tuple[float, str | None]] = []

    async def progress(done: float, _total: float | None, message: str | None) -> None:
        messages.append((done, message))

    async with connect() as conn:
        with anyio.fail_after(60):
            result = await conn.client.call_tool(
                "run_command", {"command": "echo first-line; echo second-line"}, progress_callback=progress
            )
    assert not result.is_error
    # The first chunk is always reported at once; later ones at most every 0.25 s.
    assert messages and "first-line" in (messages[0][1] or "")
    assert [done for done, _ in messages] == sorted(done for done, _ in messages)


# -- bad input -------------------------------------------------------------------------------------------


BAD_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("run_command", {}, "command"),
    ("run_command", {"command": 123}, "command"),
    ("run_command", {"command": ["ls"]}, "command"),
    ("run_command", {"command": "ls", "timeout_s": "soon"}, "timeout_s"),
    ("run_command", {"command": "ls", "timeout_s": -1}, "timeout_s"),
    ("run_command", {"command": "ls", "timeout_s": True}, "timeout_s"),
    ("run_command", {"command": "ls", "timeout_s": "1.5"}, "timeout_s"),
    ("run_python", {"code": "pass", "timeout_s": False}, "timeout_s"),
    ("run_command", {"command": "echo a\x00b"}, "NUL"),
    ("run_command", {"command": "x" * 70_000}, "limit"),
    ("run_command", {"command": "ls", "session_id": "../../etc"}, "session"),
    ("run_command", {"command": "ls", "session_id": "A" * 32}, "unknown session"),
    ("run_command", {"command": "ls", "session_id": ""}, "session"),
    ("run_command", {"command": "ls", "cwd": "../.."}, ".."),
    ("run_command", {"command": "ls", "cwd": "/etc"}, "outside"),
    ("run_command", {"command": "ls", "cwd": "link-to-root"}, "symbolic link"),
    ("run_command", {"command": "ls", "cwd": "a\x00"}, "NUL"),
    ("run_python", {}, "code"),
    ("run_python", {"code": "print(1)\x00"}, "NUL"),
    ("close_session", {}, "session_id"),
    ("close_session", {"session_id": "not-a-handle"}, "session"),
    ("list_files", {"path": "../"}, ".."),
    ("list_files", {"path": "link-to-root"}, "symbolic link"),
    ("no_such_tool", {}, "no_such_tool"),
]


async def test_bad_input_gets_clear_errors_and_the_server_stays_up(connect: Connect, kit: Kit) -> None:
    async with connect() as conn:
        first = await kit.ok(conn, "run_command", command="ln -s / link-to-root")
        for tool, arguments, expected in BAD_CALLS:
            if "cwd" in arguments or tool == "list_files":
                arguments = {**arguments, "session_id": first["session_id"]}
            message = await kit.error(conn, tool, **arguments)
            assert expected.lower() in message.lower(), (tool, arguments, message)
        await kit.alive(conn)


async def test_an_oversized_argument_is_not_echoed_whole(connect: Connect, kit: Kit) -> None:
    async with connect() as conn:
        message = await kit.error(conn, "run_command", command="true", cwd="../" + "x" * 100_000)
        sid = (await kit.ok(conn, "create_session"))["session_id"]
        listing = await kit.error(conn, "list_files", session_id=sid, path="/etc/" + "x" * 100_000)
        unknown = await kit.error(conn, "t" * 100_000)
        with anyio.fail_after(30), pytest.raises(MCPError) as resource:
            await conn.client.read_resource("sandbox://nowhere/" + "u" * 100_000)
    assert len(message) < 1000 and "100003 characters" in message
    assert len(listing) < 1000 and "100005 characters" in listing
    assert len(unknown) < 1000 and "Unknown tool" in unknown and "100000 characters" in unknown
    assert len(str(resource.value)) < 1000 and "characters)" in str(resource.value)


async def test_workdirs_are_gone_after_the_server_stops(connect: Connect, kit: Kit) -> None:
    async with connect() as conn:
        for _ in range(3):
            await kit.ok(conn, "create_session")
        await kit.ok(conn, "run_command", command="mkdir -p a/b && touch a/b/c")
        parent = conn.sessions_parent
        assert kit.leftover_workdirs(parent)
    await kit.wait_until(lambda: kit.leftover_workdirs(parent) == [])
