"""The server image (Dockerfile) under a real container engine, started exactly as the client snippets
config/clients/{podman,docker}_mcp.json say, and spoken to over stdio by the official MCP client. podman
runs both snippets' flags (it takes Docker's `systempaths=unconfined` and `apparmor=` too), so on a podman
machine the Docker snippet, with our seccomp profile, is exercised as well.

With the documented flags every layer this host supports must be reported in force inside the container;
with the runtime's defaults the report must name what is missing, and `run --strict` must refuse. Skipped,
with the reason, where no engine is installed or the image is not built (`scripts/container-test build`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from hanzo_sandbox_mcp.linux.sandbox import LinuxSandbox
from hanzo_sandbox_mcp.policy import SandboxPolicy

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENTS = REPO_ROOT / "config" / "clients"
IMAGE = os.environ.get("HANZO_SERVER_IMAGE", "hanzo-sandbox-mcp")
PLACEHOLDER = "/ABSOLUTE/PATH/TO/hanzo-sandbox-mcp"
SERVER_UID = 10001  # the image's user `hanzo`

pytestmark = pytest.mark.skipif(os.uname().sysname != "Linux", reason="container images run on Linux")


def _engine() -> str:
    for engine in ("podman", "docker"):
        if shutil.which(engine):
            inspect = subprocess.run(
                [engine, "image", "inspect", IMAGE], capture_output=True, text=True, timeout=60, check=False
            )
            if inspect.returncode == 0:
                return engine
            pytest.skip(f"{engine} has no image {IMAGE!r} for this user: build it with scripts/container-test build")
    pytest.skip("no container engine (podman or docker) is installed")


def _machine_flags(engine: str) -> list[str]:
    """What every container needs on this machine (ulimits, runc): scripts/container-lib.sh decides."""
    script = f'. "{REPO_ROOT}/scripts/lib.sh"; . "{REPO_ROOT}/scripts/container-lib.sh"; engine_flags {engine}'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, check=True).stdout
    return out.split()


def _snippet_args(engine: str, snippet: str | None = None) -> list[str]:
    """A snippet's args (the engine's own by default) with the checkout's path filled in and this machine's
    flags after `run`. podman takes the Docker snippet's flags too; Docker knows no `unmask`."""
    snippet = snippet or engine
    if engine == "docker" and snippet == "podman":
        pytest.skip("the podman snippet's --security-opt unmask is podman's own; Docker has no such option")
    data = json.loads((CLIENTS / f"{snippet}_mcp.json").read_text())
    server = data["mcpServers"]["hanzo-sandbox"]
    assert server["command"] == snippet
    args = [arg.replace(PLACEHOLDER, str(REPO_ROOT)) for arg in server["args"]]
    assert args[:3] == ["run", "-i", "--rm"] and args[-1] == "hanzo-sandbox-mcp"
    return ["run", *_machine_flags(engine), *args[1:-1], IMAGE]


def _without_security_flags(args: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--security-opt":
            skip = True
        else:
            out.append(arg)
    return out


async def _call(engine: str, args: list[str], command: str) -> dict[str, Any]:
    params = StdioServerParameters(command=shutil.which(engine) or engine, args=args)
    with anyio.fail_after(120):
        async with Client(params) as client:
            result = await client.call_tool("run_command", {"command": command})
    assert not result.is_error, result
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def _missing_layers(missing: list[str] | tuple[str, ...]) -> set[str]:
    return {item.split(":")[0].split(" ")[0] for item in missing}


@pytest.mark.anyio
@pytest.mark.parametrize("snippet", ["podman", "docker"])
async def test_snippet_serves_mcp_over_stdio_with_every_layer_the_host_has(snippet: str) -> None:
    engine = _engine()
    result = await _call(engine, _snippet_args(engine, snippet), "id -u; echo hello from the image")
    assert result["exit_code"] == 0, result
    assert result["stdout"].split() == [str(SERVER_UID), "hello", "from", "the", "image"]
    protection = result["protection"]
    host = LinuxSandbox().effective(SandboxPolicy())
    # Every layer in force on the host is in force in the container: nothing is missing there that the
    # host has (cgroup limits, when the host lacks them, stay missing in both).
    assert _missing_layers(protection["missing"]) <= _missing_layers(host.missing), protection["missing"]
    assert protection["namespaces"] == list(host.namespaces)
    assert protection["private_root"] == host.private_root
    assert protection["landlock_abi"] == host.landlock_abi
    assert protection["seccomp"] == host.seccomp
    assert protection["uid"] == SERVER_UID


@pytest.mark.anyio
async def test_runtime_defaults_report_what_is_missing() -> None:
    engine = _engine()
    host = LinuxSandbox().effective(SandboxPolicy())
    if not host.private_root:
        pytest.skip(f"the host itself builds no private root: {host.missing}")
    result = await _call(engine, _without_security_flags(_snippet_args(engine)), "true")
    assert result["exit_code"] == 0, result
    protection = result["protection"]
    assert not protection["private_root"]
    assert any(item.startswith("private root") or item.startswith("namespaces") for item in protection["missing"])


def test_strict_refuses_under_runtime_defaults() -> None:
    engine = _engine()
    host = LinuxSandbox().effective(SandboxPolicy())
    if not host.private_root:
        pytest.skip(f"the host itself builds no private root: {host.missing}")
    args = _without_security_flags(_snippet_args(engine))
    run = [engine, *args[:-1], IMAGE, "run", "--strict", "--", "true"]
    refused = subprocess.run(run, capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 125, refused.stderr
    assert "strict policy" in refused.stderr
    # The positive control: the same command with the documented flags runs.
    allowed = subprocess.run(
        [engine, *_snippet_args(engine)[:-1], IMAGE, "run", "--strict", "--", "true"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if host.missing and not all(item.startswith("cgroup") for item in host.missing):
        pytest.skip(f"strict cannot pass on this host either: {host.missing}")
    assert allowed.returncode == 0, allowed.stderr
