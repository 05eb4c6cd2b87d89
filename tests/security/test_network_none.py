"""`network = "none"`: no socket but AF_UNIX, whatever tool the command uses (python, bash, curl).

Each attack targets a live host listener started by the test; the listener must record no connection.
Positive controls: the listener answers the host, AF_UNIX works inside, and `network = "full"` reaches it.
"""

from __future__ import annotations

import shutil

import pytest
from _security_support import HostTcpListener, assert_protection, json_lines, py
from support.controls import python_as_command_uid

SOCKET_PROBE = r"""
import json, socket
cases = {
    "AF_INET/STREAM": (socket.AF_INET, socket.SOCK_STREAM),
    "AF_INET/DGRAM": (socket.AF_INET, socket.SOCK_DGRAM),
    "AF_INET6/STREAM": (socket.AF_INET6, socket.SOCK_STREAM),
    "AF_NETLINK/RAW": (socket.AF_NETLINK, socket.SOCK_RAW),
    "AF_PACKET/RAW": (socket.AF_PACKET, socket.SOCK_RAW),
    "AF_INET/RAW": (socket.AF_INET, socket.SOCK_RAW),
    "AF_VSOCK/STREAM": (socket.AF_VSOCK, socket.SOCK_STREAM),
    "AF_UNIX/STREAM": (socket.AF_UNIX, socket.SOCK_STREAM),
}
for name, (fam, typ) in cases.items():
    try:
        socket.socket(fam, typ).close()
        print(json.dumps({"case": name, "errno": 0}))
    except OSError as e:
        print(json.dumps({"case": name, "errno": e.errno, "strerror": e.strerror}))
"""


@pytest.fixture
def listener():
    with HostTcpListener() as lst:
        assert lst.host_can_connect()  # positive control: it answers the host
        lst.accepted = 0
        yield lst


def _none_fired(result: object) -> None:
    assert_protection(result, network_isolated=True, network="none", seccomp=True)


def test_sandbox_blocks_python_inet_sockets(sandbox_run):
    result = sandbox_run(py(SOCKET_PROBE), network="none")
    rows = {r["case"]: r for r in json_lines(result.stdout)}
    assert rows, result
    assert rows["AF_UNIX/STREAM"]["errno"] == 0, "positive control: AF_UNIX must work under none"
    for case in (
        "AF_INET/STREAM",
        "AF_INET/DGRAM",
        "AF_INET6/STREAM",
        "AF_NETLINK/RAW",
        "AF_PACKET/RAW",
        "AF_INET/RAW",
        "AF_VSOCK/STREAM",
    ):
        assert rows[case]["errno"] == 1, f"{case}: expected EPERM, got {rows[case]}"
    _none_fired(result)
    # The control: the same probe as the same uid, unsandboxed (as root of fresh namespaces for the packet and
    # raw sockets, which need CAP_NET_RAW), is never refused with EPERM (a raw socket of protocol 0 is
    # EPROTONOSUPPORT: the call reached the protocol code).
    plain, as_root = (
        {r["case"]: r["errno"] for r in json_lines(python_as_command_uid(SOCKET_PROBE, namespace_root=ns).stdout)}
        for ns in (False, True)
    )
    refused = {case for case in rows if plain[case] == as_root[case] == 1}
    assert not refused and plain["AF_INET/STREAM"] == plain["AF_VSOCK/STREAM"] == 0, (plain, as_root)


def test_sandbox_blocks_python_connect_to_host_listener(sandbox_run, listener):
    result = sandbox_run(
        py(
            "import socket, sys\n"
            "try:\n"
            "  s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5); print('GOT', s.recv(100))\n"
            "except OSError as e: print('ERR', e.errno, e.strerror)",
            str(listener.port),
        ),
        network="none",
    )
    assert listener.banner not in result.stdout
    assert "ERR 1 Operation not permitted" in result.stdout, result
    assert listener.accepted == 0
    _none_fired(result)


def test_sandbox_blocks_bash_dev_tcp(sandbox_run, listener):
    if not shutil.which("bash"):
        pytest.skip("bash is not installed")
    result = sandbox_run(f"bash -c 'exec 3<>/dev/tcp/127.0.0.1/{listener.port} && head -1 <&3'", network="none")
    assert result.exit_code != 0
    assert listener.banner not in result.stdout
    assert "Operation not permitted" in result.stderr, result
    assert listener.accepted == 0
    _none_fired(result)


def test_sandbox_blocks_curl(sandbox_run, listener):
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    result = sandbox_run(f"curl -sS -m 5 http://127.0.0.1:{listener.port}/", network="none")
    assert result.exit_code != 0
    assert listener.banner not in result.stdout
    # curl reports the socket() failure as "Could not connect"/"Failed to connect" (exit 7) or
    # "Couldn't resolve" when even getaddrinfo's sockets are refused.
    assert result.exit_code in (6, 7), result
    assert listener.accepted == 0
    _none_fired(result)


def test_unix_sockets_work_under_none_positive_control(sandbox_run):
    result = sandbox_run(
        py("import socket\na, b = socket.socketpair(); a.sendall(b'unix-ok'); print(b.recv(10).decode())"),
        network="none",
    )
    assert "unix-ok" in result.stdout, result


def test_full_network_reaches_host_listener_positive_control(sandbox_run, listener):
    """The same python client does reach the listener when the policy grants full network."""
    result = sandbox_run(
        py(
            "import socket, sys\n"
            "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5); print(s.recv(100).decode())",
            str(listener.port),
        ),
        network="full",
    )
    assert listener.banner in result.stdout, result
    assert_protection(result, network_isolated=False, network="full")
