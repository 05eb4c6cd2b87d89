"""The MCP tools: a thin layer that maps `SandboxService` onto `MCPServer`.

Tools: `run_command`, `run_python`, `create_session`, `close_session`, `list_files`, `capabilities`, the
background-process tools (process_tools.py: `start_process`, `read_process`, `write_process`,
`stop_process`, `list_processes`), and
the resource template `sandbox://sessions/{session_id}/files/{+path}` for reading files back.

What is an error, decided once for every tool:

- A command that ran is a normal result whatever its exit status: a non-zero `exit_code` is data the
  model reads, not a tool failure.
- Failures the model can act on are tool results with `isError: true` and a message that says what to
  do: unusable arguments (wrong type, NUL bytes, oversized, `cwd` outside the workdir), an unknown,
  closed or expired session, all sessions busy, a timeout, an exceeded disk quota, a layer the policy
  requires that is unavailable. A timed-out (or quota-stopped) call still carries its partial output:
  such a result has `isError: true`, the message first, and the full `RunResult` as structured content
  and as a JSON text block (clients skip output-schema validation for error results).
- Protocol misuse (malformed requests, unknown methods, an unreadable resource URI) is a JSON-RPC error,
  answered by the SDK.

Each call is attributed to its client (`clients.py`), which decides what a call without `session_id`
uses and which share of the server's call slots it waits for.

Progress: when a `tools/call` request carries a progress token, output is streamed as progress
notifications, at most one every 0.25 s, each with the tail of the output as its message. Cancelling the
request kills the command's whole process tree at once (the runner does it on cancellation).
"""

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import quote

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.server.mcpserver.resources import ResourceSecurity
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult, ContentBlock, ResourceLink, TextContent, ToolAnnotations
from pydantic import Field

from ..clients import ClientId, client_of_request
from ..errors import HanzoSandboxError, SessionNotFound
from ..filenames import ECHO_CHARS, quoted
from ..policy import NetworkMode
from ..service import (
    MAX_READ_BYTES,
    Capabilities,
    FileListing,
    RunResult,
    SandboxService,
    SessionClosed,
    SessionInfo,
)
from ..version import package_version
from .process_tools import register_process_tools

__all__ = ["FILES_URI_TEMPLATE", "PROGRESS_INTERVAL_S", "SERVER_NAME", "build_server", "file_uri"]

_log = logging.getLogger("hanzo_sandbox_mcp.server")

SERVER_NAME = "hanzo-sandbox-mcp"
FILES_URI_TEMPLATE = "sandbox://sessions/{session_id}/files/{+path}"
PROGRESS_INTERVAL_S = 0.25
#: MCP tool names are at most 128 characters: a longer one names no tool.
_MAX_TOOL_NAME = 128
#: Longest JSON-RPC error message (or data) passed on whole; the SDK's can quote a 100 KB URI.
_MAX_ERROR_CHARS = 2 * ECHO_CHARS
_PROGRESS_TAIL_CHARS = 1024

SessionArg = Annotated[
    str | None,
    Field(
        description="The session_id from an earlier result, to reuse that session's workdir and files. "
        "Omit it to use the implicit session (see the tool description)."
    ),
]
TimeoutArg = Annotated[
    float | None,
    # strict: a JSON number only; lax mode would turn `true` into 1 s and "1.5" into 1.5 s.
    Field(strict=True, description="Wall-clock limit in seconds; the process tree is killed when it expires."),
]
StdinArg = Annotated[str | None, Field(description="Text written to the command's standard input.")]


def file_uri(session_id: str, path: str) -> str:
    """The resource URI of a workdir file, from its path as listings show it (escaped, see `filenames`).

    The SDK percent-decodes `{+path}` once before the handler sees it, so the listed path is
    percent-encoded once here: `%FF` (the byte 0xFF) travels as `%25FF`, a space as `%20`, `?` and `#`
    (which would end the path) as `%3F` and `%23`.
    """
    return f"sandbox://sessions/{session_id}/files/{quote(path, safe='/')}"


def build_server(service: SandboxService) -> MCPServer:
    """An `MCPServer` exposing `service` (which must be entered by whoever runs the server)."""
    settings = service.settings
    rules = service.session_rules()
    limits = settings.exec
    network = settings.policy.network
    open_world = network is NetworkMode.FULL

    def client_of(ctx: Context) -> ClientId:
        return client_of_request(ctx.request_context, service.client_left)

    sessions_text = rules.retention  # says what a call without session_id uses, too
    errors_text = (
        "A non-zero exit_code is not an error: the command ran and its status is data. The call fails "
        "(isError) for unusable arguments, an unknown or expired session, a timeout (the partial output "
        "is still in the structured result), an exceeded disk quota, or a required sandbox layer that is "
        "unavailable; the message says what to do."
    )
    output_text = (
        f"stdout and stderr are capped at {settings.output.max_stdout_bytes} and "
        f"{settings.output.max_stderr_bytes} bytes (the middle of longer output is cut; "
        "stdout_truncated_bytes/stderr_truncated_bytes count it). `protection` reports which isolation "
        "layers were really in force for the call."
    )
    timeout_text = (
        f"timeout_s defaults to {limits.default_timeout_s:g} s; at most {limits.max_timeout_s:g} s is accepted."
    )
    network_text = {
        NetworkMode.NONE: "Commands have no network access.",
        NetworkMode.LOOPBACK: "Commands have a private loopback only: no internet, no host services.",
        NetworkMode.FULL: "Commands have full network access.",
        NetworkMode.ALLOWLIST: "Commands reach only the allowed domains and ports, through an egress proxy that "
        "HTTP_PROXY/HTTPS_PROXY/ALL_PROXY point at (pip, npm, git, curl use it); refused destinations are listed "
        "in network_denied.",
    }[network]

    server = MCPServer(
        SERVER_NAME,
        title="Sandboxed shell and Python",
        version=package_version(),
        instructions=(
            "Runs shell commands and Python code inside an OS-level sandbox, each session in its own "
            f"working directory. {sessions_text} Call capabilities to see which protections are in force."
        ),
        log_level=settings.log_level,
    )

    # Supported seam (Server.middleware): the SDK's pre-initialize refusal says only "Invalid request
    # parameters", and its "Unknown tool"/"Unknown resource" errors repeat a 100 KB name or URI whole.
    server.middleware.extend([_short_echoes, _explain_uninitialized])

    run_rules = f"{sessions_text} {timeout_text} {network_text} {output_text} {errors_text}"
    run_annotations = ToolAnnotations(
        read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=open_world
    )

    @server.tool(
        title="Run a shell command in the sandbox",
        description=(
            "Run a shell command with /bin/sh -c inside an OS sandbox, in the session's working directory "
            f"(or cwd, a directory relative to it; never outside it). {run_rules}"
        ),
        annotations=run_annotations,
    )
    async def run_command(
        ctx: Context,
        command: Annotated[str, Field(description="The shell command (run with /bin/sh -c).")],
        session_id: SessionArg = None,
        cwd: Annotated[
            str | None,
            Field(description="Directory to start in, relative to the session workdir (default: the workdir)."),
        ] = None,
        timeout_s: TimeoutArg = None,
        stdin: StdinArg = None,
    ) -> Annotated[CallToolResult, RunResult]:
        async with _tool_errors():
            result = await service.run_command(
                command,
                session_id=session_id,
                cwd=cwd,
                timeout_s=timeout_s,
                stdin=stdin,
                on_output=_ProgressStreamer(ctx),
                client=client_of(ctx),
            )
        return _run_result(result)

    python = service.python_choice()

    @server.tool(
        title="Run Python code in the sandbox",
        description=(
            f"Run Python code with {python.path} inside an OS sandbox, in the session's working directory. "
            "The code is saved to a temporary .hanzo_run_<n>.py file at the top of the workdir (tracebacks "
            "show its line numbers; removed afterwards) and run as a script, so modules saved in the "
            f"workdir import. Print what you want to see. {run_rules}"
        ),
        annotations=run_annotations,
    )
    async def run_python(
        ctx: Context,
        code: Annotated[str, Field(description="Python source code, run as a script.")],
        session_id: SessionArg = None,
        timeout_s: TimeoutArg = None,
        stdin: StdinArg = None,
    ) -> Annotated[CallToolResult, RunResult]:
        async with _tool_errors():
            result = await service.run_python(
                code,
                session_id=session_id,
                timeout_s=timeout_s,
                stdin=stdin,
                on_output=_ProgressStreamer(ctx),
                client=client_of(ctx),
            )
        return _run_result(result)

    @server.tool(
        title="Create a session",
        description=(
            f"Open a new session with an empty private working directory and return its session_id. {rules.retention}"
        ),
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
        ),
    )
    async def create_session(ctx: Context) -> SessionInfo:
        async with _tool_errors():
            return await service.create_session(client=client_of(ctx))

    @server.tool(
        title="Close a session",
        description=(
            "End a session now: its running commands are killed and its working directory with every file "
            "in it is deleted. The session_id stops working."
        ),
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
        ),
    )
    async def close_session(
        session_id: Annotated[str, Field(description="The session to end.")],
    ) -> SessionClosed:
        async with _tool_errors():
            return await service.close_session(session_id)

    @server.tool(
        title="List files in a session",
        description=(
            "List one directory of a session's working directory (names, types, sizes; symbolic links are "
            "shown, never followed). Each file is also returned as a resource link "
            f"({FILES_URI_TEMPLATE}) whose contents can be read as an MCP resource (files up to "
            f"{MAX_READ_BYTES} bytes). Pass the session_id of the session to list."
        ),
        annotations=ToolAnnotations(
            read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
        ),
    )
    async def list_files(
        ctx: Context,
        session_id: SessionArg = None,
        path: Annotated[
            str | None, Field(description="Directory relative to the workdir (default: the workdir itself).")
        ] = None,
    ) -> Annotated[CallToolResult, FileListing]:
        async with _tool_errors():
            listing = await service.list_files(session_id, path, client=client_of(ctx))
        return _listing_result(listing)

    register_process_tools(
        server,
        service,
        client_of,
        _tool_errors,
        "The session to run it in (from an earlier result); omit it to use the implicit session.",
        open_world=open_world,
    )

    @server.tool(
        title="Sandbox capabilities",
        description=(
            "Report this server's platform, sandbox and each isolation layer's availability (with the "
            "reason when missing), the protection commands actually get, resource limits, network mode, "
            "timeouts, output caps, session rules and the Python interpreter run_python uses."
        ),
        annotations=ToolAnnotations(
            read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
        ),
    )
    async def capabilities() -> Capabilities:
        async with _tool_errors():
            return await service.capabilities()

    @server.resource(
        FILES_URI_TEMPLATE,
        name="session_file",
        title="A file in a session workdir",
        description=(
            f"A regular file of a session's working directory, up to {MAX_READ_BYTES} bytes: UTF-8 text as "
            "text, anything else as a base64 blob. Symbolic links and '..' are refused. The path is the "
            "listed one, percent-encoded for the URI (use the uri of list_files' resource links)."
        ),
        # The service refuses '..', NUL and absolute paths itself and opens every component with
        # O_NOFOLLOW; the SDK's extra Windows-style checks would make legal names such as `C:x` or `a\..\b`
        # unreadable.
        security=ResourceSecurity(exempt_params={"path"}),
    )
    async def session_file(session_id: str, path: str) -> str | bytes:
        try:
            content = await service.read_file(session_id, path)
        except SessionNotFound as exc:
            raise ResourceNotFoundError(str(exc)) from None
        except HanzoSandboxError as exc:
            # A refused path is the caller's mistake (-32602); the SDK maps a ResourceError to -32603.
            raise MCPError(code=INVALID_PARAMS, message=str(exc)) from None
        text = content.text()
        return content.data if text is None else text

    return server


async def _short_echoes(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Never repeat a caller's oversized name or URI whole in an error (the SDK's own errors do)."""
    try:
        result = await call_next(ctx)
    except MCPError as exc:
        error = exc.error
        long_message, long_data = len(error.message) > _MAX_ERROR_CHARS, len(repr(error.data)) > _MAX_ERROR_CHARS
        if not (long_message or long_data):
            raise
        message = (
            f"{error.message[:_MAX_ERROR_CHARS]}... ({len(error.message)} characters)"
            if long_message
            else error.message
        )
        raise MCPError(code=error.code, message=message, data=None if long_data else error.data) from None
    name = (ctx.params or {}).get("name")
    if ctx.method == "tools/call" and isinstance(name, str) and len(name) > _MAX_TOOL_NAME:
        # No tool has such a name: the result is the SDK's "Unknown tool: <the whole name>".
        text = f"Unknown tool: {quoted(name)}; call tools/list for this server's tools"
        return CallToolResult(content=[TextContent(text=text)], is_error=True)
    return result


async def _explain_uninitialized(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Give the SDK's bare pre-initialize refusal (-32602, empty data) a message the client can act on."""
    try:
        return await call_next(ctx)
    except MCPError as exc:
        error = exc.error
        refused_before_init = (
            error.code == INVALID_PARAMS and error.message == "Invalid request parameters" and not error.data
        )
        if not refused_before_init or ctx.session.client_params is not None:
            raise
        raise MCPError(
            code=INVALID_PARAMS,
            message=f"{ctx.method} was sent before the session was initialized",
            data="send initialize and then notifications/initialized first (the MCP handshake)",
        ) from None


@asynccontextmanager
async def _tool_errors() -> AsyncIterator[None]:
    """Turn the package's errors into `ToolError`: an `isError` result carrying the message for the model."""
    try:
        yield
    except HanzoSandboxError as exc:
        raise ToolError(str(exc)) from exc


def _run_result(result: RunResult) -> CallToolResult:
    structured = result.model_dump(mode="json")
    blocks: list[ContentBlock] = [TextContent(text=result.model_dump_json())]
    failure = result.failure()
    if failure is None:
        return CallToolResult(content=blocks, structured_content=structured)
    return CallToolResult(content=[TextContent(text=failure), *blocks], structured_content=structured, is_error=True)


def _listing_result(listing: FileListing) -> CallToolResult:
    links: list[ContentBlock] = [
        ResourceLink(uri=file_uri(listing.session_id, entry.path), name=entry.path, size=entry.size)
        for entry in listing.entries
        if entry.type == "file"
    ]
    return CallToolResult(
        content=[TextContent(text=listing.model_dump_json()), *links],
        structured_content=listing.model_dump(mode="json"),
    )


class _ProgressStreamer:
    """Output -> progress notifications, at most one per PROGRESS_INTERVAL_S, carrying the output's tail.

    Installed on every call: reporting is a no-op in the SDK when the caller asked for no progress (no
    progress token; in memory, no callback)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._bytes = 0
        self._tail = ""
        self._last = -math.inf

    async def __call__(self, stream: str, chunk: bytes) -> None:
        self._bytes += len(chunk)
        recent = chunk[-4 * _PROGRESS_TAIL_CHARS :].decode("utf-8", "replace")  # a flood costs no more
        self._tail = (self._tail + recent)[-_PROGRESS_TAIL_CHARS:]
        now = anyio.current_time()
        if now - self._last < PROGRESS_INTERVAL_S:
            return
        self._last = now
        try:
            await self._ctx.report_progress(self._bytes, None, self._tail)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            # The client went away: the call goes on (a cancel, not a lost notification, stops it).
            _log.debug("progress notification not sent: %r", exc)
