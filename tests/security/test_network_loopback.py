"""`network = "loopback"` (the default): a private loopback; nothing on the host is reachable.

The sandbox gets its own network namespace with only `lo` up. A host listener on 127.0.0.1 (or ::1,
or the host's own address) must be unreachable, while a server and client both inside the sandbox talk
fine (positive control). `network = "full"` reaches the host listener (positive control of the client).
Host UNIX sockets (abstract and pathname) are listeners too.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import uuid

import pytest
from _security_support import HostTcpListener, assert_protection, json_lines, py

CONNECT = r"""
import json, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    s = socket.create_connection((host, port), timeout=5)
    print(json.dumps({"connected": True, "data": s.recv(200).decode(errors="replace")}))
except OSError as e:
    print(json.dumps({"connected": False, "errno": e.errno, "strerror": str(e.strerror)}))
"""

INSIDE_SERVER_AND_CLIENT = r"""
import socket, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
port = srv.getsockname()[1]
def serve():
    c, _ = srv.accept(); c.sendall(b"inside-hello"); c.close()
threading.Thread(target=serve, daemon=True).start()
s = socket.create_connection(("127.0.0.1", port), timeout=5)
print("CLIENT GOT", s.recv(100).decode())
"""


def _host_address() -> str | None:
    """A non-loopback IPv4 address of this host (to prove it is unreachable too)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.123", 9))  # no packet is sent for UDP connect
            addr = s.getsockname()[0]
    except OSError:
        return None
    return None if addr.startswith("127.") else addr


@pytest.fixture
def listener():
    with HostTcpListener() as lst:
        assert lst.host_can_connect()
        lst.accepted = 0
        yield lst


def _loopback_fired(result: object) -> None:
    assert_protection(result, network_isolated=True, network="loopback", seccomp=True)
    assert "net" in result.protection.namespaces, result.protection  # type: ignore[attr-defined]


def test_listener_inside_sandbox_works_positive_control(sandbox_run):
    result = sandbox_run(py(INSIDE_SERVER_AND_CLIENT))
    assert "CLIENT GOT inside-hello" in result.stdout, result
    _loopback_fired(result)


def test_sandbox_blocks_python_connect_to_host_loopback_listener(sandbox_run, listener):
    result = sandbox_run(py(CONNECT, "127.0.0.1", str(listener.port)))
    rows = json_lines(result.stdout)
    assert rows and rows[0]["connected"] is False, f"reached the host's 127.0.0.1 listener: {result}"
    assert rows[0]["errno"] == 111, rows  # ECONNREFUSED: the sandbox's own lo has no such listener
    assert listener.accepted == 0
    _loopback_fired(result)


def test_full_network_reaches_host_listener_positive_control(sandbox_run, listener):
    result = sandbox_run(py(CONNECT, "127.0.0.1", str(listener.port)), network="full")
    rows = json_lines(result.stdout)
    assert rows and rows[0]["connected"] is True and listener.banner in rows[0]["data"], result
    assert_protection(result, network_isolated=False, network="full")


def test_sandbox_blocks_bash_dev_tcp_to_host_listener(sandbox_run, listener):
    if not shutil.which("bash"):
        pytest.skip("bash is not installed")
    result = sandbox_run(f"bash -c 'exec 3<>/dev/tcp/127.0.0.1/{listener.port} && head -1 <&3'")
    assert result.exit_code != 0
    assert listener.banner not in result.stdout
    assert "Connection refused" in result.stderr, result
    assert listener.accepted == 0
    _loopback_fired(result)


def test_sandbox_blocks_curl_to_host_listener(sandbox_run, listener):
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    result = sandbox_run(f"curl -sS -m 5 http://127.0.0.1:{listener.port}/")
    assert result.exit_code == 7, result  # "Failed to connect"
    assert listener.banner not in result.stdout
    assert listener.accepted == 0
    _loopback_fired(result)


def test_sandbox_blocks_host_ipv6_loopback_listener(sandbox_run):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support")
    try:
        lst = HostTcpListener("::1", socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"cannot listen on ::1 here: {exc}")
    with lst:
        assert lst.host_can_connect()
        lst.accepted = 0
        result = sandbox_run(py(CONNECT, "::1", str(lst.port)))
        rows = json_lines(result.stdout)
        assert rows and rows[0]["connected"] is False, result
        assert rows[0]["errno"] in (111, 99, 101), rows  # refused / addr not available / unreachable
        assert lst.accepted == 0
    _loopback_fired(result)


def test_sandbox_blocks_host_non_loopback_address(sandbox_run):
    """The host's own eth address (a listener on 0.0.0.0) and the outside world are unreachable."""
    addr = _host_address()
    if addr is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    with HostTcpListener("0.0.0.0") as lst:
        result = sandbox_run(py(CONNECT, addr, str(lst.port)) + "; " + py(CONNECT, "1.1.1.1", "80"))
        rows = json_lines(result.stdout)
        assert len(rows) == 2 and not rows[0]["connected"] and not rows[1]["connected"], result
        assert rows[0]["errno"] == 101 and rows[1]["errno"] == 101, rows  # ENETUNREACH
        assert lst.accepted == 0
    _loopback_fired(result)


def _abstract_listener(name: bytes, banner: bytes, stop: threading.Event) -> socket.socket:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(name)
    srv.listen(4)
    srv.settimeout(0.2)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.sendall(banner)

    threading.Thread(target=serve, daemon=True).start()
    return srv


UNIX_CONNECT = r"""
import json, socket, sys
name = sys.argv[1]
addr = b"\0" + name[1:].encode() if name.startswith("@") else name
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(5); s.connect(addr)
    print(json.dumps({"connected": True, "data": s.recv(200).decode(errors="replace")}))
except OSError as e:
    print(json.dumps({"connected": False, "errno": e.errno, "strerror": str(e.strerror)}))
"""


@pytest.mark.parametrize("network", ["loopback", "none"])
def test_sandbox_blocks_host_abstract_unix_socket(sandbox_run, network):
    """Abstract sockets (X11's @/tmp/.X11-unix/X0, dbus, ...) belong to the network namespace; Landlock's
    abstract-socket scope (ABI 6) also blocks them where there is no network namespace."""
    name = f"hanzo-sec-{uuid.uuid4().hex}"
    banner = f"ABSTRACT-{uuid.uuid4().hex}".encode()
    stop = threading.Event()
    srv = _abstract_listener(b"\0" + name.encode(), banner, stop)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:  # positive control from the host
            c.connect(b"\0" + name.encode())
            assert c.recv(100) == banner
        result = sandbox_run(py(UNIX_CONNECT, "@" + name), network=network)
    finally:
        stop.set()
        srv.close()
    rows = json_lines(result.stdout)
    assert rows and rows[0]["connected"] is False, f"host abstract socket reached: {result}"
    assert rows[0]["errno"] in (111, 1), rows  # ECONNREFUSED (other netns) or EPERM (Landlock scope)
    assert_protection(result, network_isolated=True)


@pytest.mark.parametrize("network", ["loopback", "none"])
def test_sandbox_blocks_host_pathname_unix_socket(sandbox_run, outside_root, network):
    """A world-connectable host service socket outside the workdir (like /run/dbus/system_bus_socket,
    /var/run/docker.sock for its group, or the server user's own /run/user/UID/bus). Pathname sockets
    ignore network namespaces, so only the mount namespace or Landlock can keep the command out."""
    d = outside_root / f"svc-{uuid.uuid4().hex[:8]}"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    path = d / "service.sock"
    banner = f"HOST-SERVICE-{uuid.uuid4().hex}".encode()
    stop = threading.Event()
    srv = _abstract_listener(str(path).encode(), banner, stop)
    os.chmod(path, 0o666)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(str(path))
            assert c.recv(100) == banner
        result = sandbox_run(py(UNIX_CONNECT, str(path)), network=network)
    finally:
        stop.set()
        srv.close()
    rows = json_lines(result.stdout)
    assert rows, result
    assert rows[0]["connected"] is False, f"host UNIX service socket reached from the sandbox: {result}"
    assert rows[0]["errno"] in (13, 2, 1), rows
