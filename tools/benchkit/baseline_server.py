"""The unsandboxed baseline: a minimal `mcp` server over stdio with an `echo` tool (one bare MCP round trip)
and a `run_command` tool that runs the command through a plain subprocess (what a server without any sandbox
pays per call). Run as `python tools/benchkit/baseline_server.py`."""

from __future__ import annotations

import anyio
from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel

server = MCPServer("bench-baseline")


class Ran(BaseModel):
    exit_code: int
    stdout: str
    stderr: str


@server.tool()
async def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
async def run_command(command: str) -> Ran:
    """Run the command with /bin/sh -c, unsandboxed."""
    done = await anyio.run_process(["/bin/sh", "-c", command], check=False)
    return Ran(
        exit_code=done.returncode,
        stdout=done.stdout.decode(errors="replace"),
        stderr=done.stderr.decode(errors="replace"),
    )


if __name__ == "__main__":
    server.run()
