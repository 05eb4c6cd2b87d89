"""A client we did not write: the MCP Inspector CLI (pinned in tools/inspector, installed by scripts/test) lists
the tools and calls run_command over stdio and streamable HTTP."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from hanzo_sandbox_mcp.config import Settings

pytestmark = pytest.mark.anyio
Kit = Any

REPO_ROOT = Path(__file__).resolve().parents[2]
INSPECTOR = REPO_ROOT / "tools" / "inspector" / "node_modules" / ".bin" / "mcp-inspector"
EXIT_TOOL_ERROR = 5  # the Inspector's exit status for a tool result with isError


@pytest.fixture(autouse=True)
def _inspector_installed() -> None:
    if not INSPECTOR.exists():
        pytest.skip(f"the MCP Inspector is not installed at {INSPECTOR} (scripts/test runs npm ci in tools/inspector)")
    if shutil.which("node") is None:
        pytest.skip("node is not on PATH: the MCP Inspector CLI needs Node.js")


async def _inspector(tmp_path: Path, *args: str) -> tuple[int, Any]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path / "home"), "NO_COLOR": "1"}
    with anyio.fail_after(120):
        completed = await anyio.run_process([str(INSPECTOR), "--cli", *args], env=env, check=False)
    output = completed.stdout.decode()
    try:
        return completed.returncode, json.loads(output)
    except ValueError:
        pytest.fail(
            f"the Inspector printed no JSON (exit {completed.returncode}): {output}\n{completed.stderr.decode()}"
        )


def _stdio_target(kit: Kit, config: Path) -> tuple[list[str], list[str]]:
    """(Inspector options, server command): -e passes the server's environment explicitly."""
    options = [f"-e{key}={value}" for key, value in kit.child_env(config.parent).items()]
    # "--" ends the Inspector's options: our --config would otherwise be taken as its own.
    command = ["--", sys.executable, "-m", "hanzo_sandbox_mcp", "--config", str(config), "serve"]
    return [*options, "--cwd", str(REPO_ROOT)], command


def _config(kit: Kit, sessions_parent: Path, tmp_path: Path) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(kit.to_toml(kit.merged(kit.BASE_CONFIG, {"sessions": {"root": str(sessions_parent)}})))
    return config


def _tool_names(listing: Any) -> set[str]:
    return {tool["name"] for tool in listing["tools"]}


async def test_inspector_over_stdio(kit: Kit, sessions_parent: Path, tmp_path: Path) -> None:
    options, command = _stdio_target(kit, _config(kit, sessions_parent, tmp_path))
    status, listing = await _inspector(tmp_path, *options, "--method", "tools/list", *command)
    assert status == 0
    assert {"run_command", "run_python", "capabilities"} <= _tool_names(listing)
    status, result = await _inspector(
        tmp_path,
        *options,
        "--tool-name", "run_command",
        "--tool-arg", "command=echo from-inspector; exit 4",
        "--method", "tools/call",
        *command,
    )  # fmt: skip
    assert status == 0  # exit 4 is data, not a tool error
    assert result["structuredContent"]["stdout"] == "from-inspector\n"
    assert result["structuredContent"]["exit_code"] == 4
    status, result = await _inspector(
        tmp_path,
        *options,
        "--tool-name", "run_command",
        "--tool-arg", "command=echo x", "cwd=../..",
        "--method", "tools/call",
        *command,
    )  # fmt: skip
    assert status == EXIT_TOOL_ERROR and result["isError"] is True
    assert kit.leftover_workdirs(sessions_parent) == []


async def test_inspector_over_streamable_http(kit: Kit, sessions_parent: Path, tmp_path: Path) -> None:
    settings = Settings.model_validate(kit.merged(kit.BASE_CONFIG, {"sessions": {"root": str(sessions_parent)}}))
    async with kit.http_server(settings, "http") as (base, _service):
        url = f"{base}/mcp"
        status, listing = await _inspector(tmp_path, url, "--method", "tools/list")
        assert status == 0 and "run_command" in _tool_names(listing)
        status, result = await _inspector(
            tmp_path,
            url,
            "--method", "tools/call",
            "--tool-name", "run_command",
            "--tool-arg", "command=echo over-http",
        )  # fmt: skip
    assert status == 0
    assert result["structuredContent"]["stdout"] == "over-http\n"
    assert len(result["structuredContent"]["session_id"]) == 32
