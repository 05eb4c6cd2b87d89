"""Local origin servers and an in-process egress proxy, for driving real clients through the proxy.

`StaticOrigin` serves a directory over HTTP (or HTTPS with a throwaway certificate from `make_certificate`)
on 127.0.0.1 from a thread; `RunningProxy` runs `netproxy.proxy.serve` on a host-loopback listening socket
in a blocking portal's event loop, the way the server runs it on a session's socket.
"""

from __future__ import annotations

import functools
import hashlib
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from anyio.from_thread import start_blocking_portal

from hanzo_sandbox_mcp.netproxy.decisions import DecisionLog
from hanzo_sandbox_mcp.netproxy.limits import ProxyLimits
from hanzo_sandbox_mcp.netproxy.proxy import serve
from hanzo_sandbox_mcp.policy import SandboxPolicy

__all__ = ["RunningProxy", "StaticOrigin", "make_certificate", "running_proxy"]


class _QuietHandler(SimpleHTTPRequestHandler):
    """Files for GET and HEAD; a POST is answered with the size and SHA-256 of the body it carried."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        answer = f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


class _ThreadingHTTPServerV6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class StaticOrigin:
    """A directory served on `bind` (127.0.0.1; a free port), over TLS when `certificate` (cert, key) is given."""

    def __init__(self, root: Path, certificate: tuple[Path, Path] | None = None, *, bind: str = "127.0.0.1") -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        server_class = _ThreadingHTTPServerV6 if ":" in bind else ThreadingHTTPServer
        self.server = server_class((bind, 0), handler)
        self.server.daemon_threads = True
        if certificate is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*map(str, certificate))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self) -> StaticOrigin:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)


def make_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for `name` (cert, key), valid for a day: the client trusts it as its CA."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}"]
    subprocess.run(
        ["openssl", *request, "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


class RunningProxy:
    """The proxy serving one session on 127.0.0.1:`port`, and the decisions it made."""

    def __init__(self, port: int, decisions: DecisionLog, session_tag: str) -> None:
        self.port = port
        self.decisions = decisions
        self.session_tag = session_tag

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def take_denied(self) -> list[tuple[str, int, str]]:
        return [(d.host, d.port, d.reason) for d in self.decisions.take_denied(self.session_tag)]


@contextmanager
def running_proxy(policy: SandboxPolicy, limits: ProxyLimits | None = None) -> Iterator[RunningProxy]:
    """Serve `policy` on a fresh host-loopback listener until the block ends."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    decisions = DecisionLog()
    proxy = RunningProxy(listener.getsockname()[1], decisions, "test-session")
    with start_blocking_portal() as portal:
        future: Future[None] = portal.start_task_soon(
            lambda: serve(listener, policy, session_tag=proxy.session_tag, decisions=decisions, limits=limits)
        )
        try:
            yield proxy
        finally:
            future.cancel()
