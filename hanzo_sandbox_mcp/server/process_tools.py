"""The background-process tools (`start_process`, `read_process`, `write_process`, `stop_process`,
`list_processes`): a thin layer over `SandboxService`, registered by `build_server` (app.py).

A process id is a capability: the tools return one only to the caller that started the process or named
its session, and each takes an optional `session_id` that the id must belong to.
"""

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations
from pydantic import Field

from ..clients import ClientId
from ..process_results import ProcessList, ProcessOutput, ProcessStarted, ProcessWrite
from ..service import SandboxService

__all__ = ["register_process_tools"]

ProcessIdArg = Annotated[str, Field(description="The process_id that start_process or list_processes returned.")]
OwnerArg = Annotated[
    str | None, Field(description="The session the process must belong to (optional; a mismatch is an error).")
]


def register_process_tools(
    server: MCPServer,
    service: SandboxService,
    client_of: Callable[[Context], ClientId],
    tool_errors: Callable[[], AbstractAsyncContextManager[None]],
    session_arg_text: str,
    *,
    open_world: bool,
) -> None:
    settings = service.settings.processes
    caps_text = (
        f"At most {settings.max_per_session} background processes per session and {settings.max_total} in all "
        f"(an exited one counts until its output is read); each keeps the last {settings.buffer_bytes} bytes "
        f"of stdout and of stderr, and is stopped after {settings.max_lifetime_s:g} s. It dies with its session."
    )

    def read_only(*, idempotent: bool) -> ToolAnnotations:
        return ToolAnnotations(
            read_only_hint=True, destructive_hint=False, idempotent_hint=idempotent, open_world_hint=False
        )

    def acting(*, destructive: bool) -> ToolAnnotations:
        return ToolAnnotations(
            read_only_hint=False, destructive_hint=destructive, idempotent_hint=False, open_world_hint=open_world
        )

    @server.tool(
        title="Start a background process",
        description=(
            "Start a shell command (/bin/sh -c) that keeps running after this call returns, in the session's "
            "sandbox: a dev server (later calls of the same session reach it on localhost; no other session "
            "can), a watcher, a REPL fed with write_process, a long build. Returns at once with its "
            "process_id and its pid inside the session (a later `kill PID` of the same session reaches it). "
            f"Read its output with read_process, stop it with stop_process. {caps_text}"
        ),
        annotations=acting(destructive=True),
    )
    async def start_process(
        ctx: Context,
        command: Annotated[str, Field(description="The shell command (run with /bin/sh -c).")],
        session_id: Annotated[str | None, Field(description=session_arg_text)] = None,
        cwd: Annotated[
            str | None,
            Field(description="Directory to start in, relative to the session workdir (default: the workdir)."),
        ] = None,
        stdin: Annotated[
            str | None, Field(description="Text written to its standard input first (which stays open).")
        ] = None,
    ) -> ProcessStarted:
        async with tool_errors():
            return await service.start_process(
                command, session_id=session_id, cwd=cwd, stdin=stdin, client=client_of(ctx)
            )

    @server.tool(
        title="Read a background process",
        description=(
            "Return a background process's state (running or exited, with its exit code or signal) and the "
            "stdout and stderr it wrote since the last read, each with the offset it starts at and the bytes "
            "dropped when it wrote faster than its buffer holds. With wait_s, wait up to that long (60 s at "
            "most) for new output or for its exit: poll with it rather than in a loop."
        ),
        annotations=read_only(idempotent=False),
    )
    async def read_process(
        process_id: ProcessIdArg,
        session_id: OwnerArg = None,
        wait_s: Annotated[
            float | None, Field(strict=True, description="Seconds to wait for output or exit (0-60).")
        ] = None,
    ) -> ProcessOutput:
        async with tool_errors():
            return await service.read_process(process_id, session_id=session_id, wait_s=wait_s)

    @server.tool(
        title="Write to a background process",
        description=(
            "Write text to a background process's standard input (a REPL, a prompt); with close_stdin, then "
            "close it so the process reads end of file. Waits a few seconds at most for it to read."
        ),
        annotations=acting(destructive=False),
    )
    async def write_process(
        process_id: ProcessIdArg,
        text: Annotated[str, Field(description="Text to write (include the newline a line-reader waits for).")],
        session_id: OwnerArg = None,
        close_stdin: Annotated[bool, Field(description="Close its standard input after writing.")] = False,
    ) -> ProcessWrite:
        async with tool_errors():
            return await service.write_process(process_id, text, session_id=session_id, close_stdin=close_stdin)

    @server.tool(
        title="Stop a background process",
        description=(
            f"Send a background process SIGTERM (or the signal given), wait {settings.stop_grace_s:g} s, then "
            "kill its whole process tree. Returns its final state and the output not read yet."
        ),
        annotations=acting(destructive=True),
    )
    async def stop_process(
        process_id: ProcessIdArg,
        session_id: OwnerArg = None,
        signal: Annotated[
            str | None, Field(description="TERM (default), INT, HUP, QUIT, KILL, USR1, USR2, STOP or CONT.")
        ] = None,
    ) -> ProcessOutput:
        async with tool_errors():
            return await service.stop_process(process_id, session_id=session_id, signal=signal)

    @server.tool(
        title="List background processes",
        description="List a session's background processes with their state, command and age.",
        annotations=read_only(idempotent=True),
    )
    async def list_processes(
        ctx: Context, session_id: Annotated[str | None, Field(description=session_arg_text)] = None
    ) -> ProcessList:
        async with tool_errors():
            return await service.list_processes(session_id, client=client_of(ctx))
