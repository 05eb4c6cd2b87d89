"""`network = "allowlist"` inside a real session sandbox: the only way out is the egress proxy.

The proxy's own rules are tested in test_network_allowlist_proxy.py; these tests check the sandbox side: the
listener the session's init makes in the session's network namespace is served by the server's proxy,
commands find it through the environment, refusals come back in `network_denied`, and nothing leaves the
namespace any other way (no direct TCP, no DNS). Each refusal has its control: the same origin answers
through the proxy, and from the host directly.
"""

from __future__ import annotations

import http.server
import os
import socket
import socketserver
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from _security_support import SANDBOX_PYTHON

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(os.uname().sysname != "Linux", reason="Linux sandbox")]


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the origin\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def origin() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Hello)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@asynccontextmanager
async def _service(work_root: Path, port: int, **policy: Any) -> AsyncIterator[Any]:
    from hanzo_sandbox_mcp.config import ExecSettings, SessionSettings, Settings
    from hanzo_sandbox_mcp.policy import NetworkMode, SandboxPolicy
    from hanzo_sandbox_mcp.service import SandboxService

    root = Path(tempfile.mkdtemp(prefix="sessions-", dir=work_root))
    root.chmod(0o711)
    rules = SandboxPolicy(
        network=NetworkMode.ALLOWLIST,
        allowed_domains=("origin.test",),
        allowed_ports=(port,),
        allowed_private_cidrs=("127.0.0.0/8",),  # the origin is on the host's loopback
        proxy_hosts={"origin.test": "127.0.0.1", "evil.test": "127.0.0.1"},
        workdir_quota_mb=64,
        **policy,
    )
    settings = Settings(exec=ExecSettings(python=SANDBOX_PYTHON), sessions=SessionSettings(root=root), policy=rules)
    async with SandboxService(settings) as service:
        yield service


async def test_allowed_name_goes_through_the_proxy_and_others_are_refused_and_reported(
    work_root: Path, origin: int
) -> None:
    async with _service(work_root, origin) as service:
        allowed = await service.run_command(f"curl -sS http://origin.test:{origin}/")
        assert allowed.stdout == "hello from the origin\n", allowed.stderr  # the control
        assert allowed.network_denied == ()
        protection = allowed.protection
        assert protection.network.value == "allowlist" and protection.network_isolated
        refused = await service.run_command(
            f"curl -s -o /dev/null -w '%{{http_code}}' http://evil.test:{origin}/", session_id=allowed.session_id
        )
        assert refused.stdout == "403"
        assert [(d.host, d.port) for d in refused.network_denied] == [("evil.test", origin)]
        again = await service.run_command("true", session_id=allowed.session_id)
        assert again.network_denied == ()  # reported once: since the session's previous result


async def test_a_direct_connection_that_skips_the_proxy_fails(work_root: Path, origin: int) -> None:
    with socket.create_connection(("127.0.0.1", origin), timeout=5):
        pass  # control: the origin takes direct connections from the host
    async with _service(work_root, origin) as service:
        direct = await service.run_command(f"curl -sS --noproxy '*' --max-time 5 http://127.0.0.1:{origin}/")
        assert direct.exit_code == 7 and direct.stdout == ""  # connection refused: the namespace's own loopback
        through = await service.run_command(f"curl -sS http://origin.test:{origin}/", session_id=direct.session_id)
        assert through.stdout == "hello from the origin\n"  # control: the same session, through the proxy


def _resolver() -> str | None:
    try:
        with open("/etc/resolv.conf") as conf:
            for line in conf:
                words = line.split()
                if len(words) >= 2 and words[0] == "nameserver" and ":" not in words[1]:
                    return words[1]
    except OSError:
        return None
    return None


async def test_a_dns_query_from_inside_cannot_leave(work_root: Path, origin: int) -> None:
    resolver = _resolver()
    if resolver is None or resolver.startswith("127."):
        pytest.skip("no IPv4 nameserver outside loopback in /etc/resolv.conf to aim a query at")
    probe = (
        "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"try: s.sendto(b'\\x00'*12, ({resolver!r}, 53)); print('sent')\n"
        "except OSError as e: print('refused', e.errno)"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(b"\x00" * 12, (resolver, 53))  # control: from the host the query leaves
    async with _service(work_root, origin) as service:
        inside = await service.run_python(probe)
        assert inside.stdout.startswith("refused"), inside.stdout + inside.stderr
        lookup = await service.run_command("getent hosts example.org", session_id=inside.session_id)
        assert lookup.exit_code != 0 and lookup.stdout == ""


async def test_without_the_proxy_listener_the_report_says_the_mode_is_not_in_force(
    work_root: Path, origin: int
) -> None:
    """The layer broken on purpose: a plan without the listener gets no proxy, and the report must say so
    rather than claim network isolation for an allowlist that cannot work."""
    from support.layers import PlanEditingSandbox

    from hanzo_sandbox_mcp.config import ExecSettings, SessionSettings, Settings
    from hanzo_sandbox_mcp.linux.sandbox import LinuxSandbox
    from hanzo_sandbox_mcp.service import SandboxService

    async with _service(work_root, origin) as reference:
        policy = reference.settings.policy
        assert (await reference.run_command("true")).protection.network_isolated  # control: with the listener
    root = Path(tempfile.mkdtemp(prefix="sessions-", dir=work_root))
    root.chmod(0o711)
    broken = PlanEditingSandbox(LinuxSandbox(), lambda plan: plan.replace(proxy_port=None))
    settings = Settings(exec=ExecSettings(python=SANDBOX_PYTHON), sessions=SessionSettings(root=root), policy=policy)
    async with SandboxService(settings, sandbox=broken) as service:
        result = await service.run_command(f"curl -sS --max-time 5 http://origin.test:{origin}/")
        assert result.exit_code != 0
        assert not result.protection.network_isolated
        assert any(line.startswith("egress proxy (allowlist)") for line in result.protection.missing)


async def test_capabilities_list_what_the_allowlist_lets_through(work_root: Path, origin: int) -> None:
    async with _service(work_root, origin) as service:
        caps = await service.capabilities()
        assert caps.network.value == "allowlist" and caps.network_allowlist is not None
        assert caps.network_allowlist.allowed_domains == ("origin.test",)
        assert caps.network_allowlist.allowed_ports == (origin,)
        assert caps.network_allowlist.proxy_hosts["origin.test"] == "127.0.0.1"
        assert caps.protection.network_isolated
