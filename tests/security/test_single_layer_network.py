"""One network layer at a time: the network namespace alone, Landlock's TCP rules alone, seccomp's socket
rules alone (network "none"), and Landlock's abstract-socket scope alone. Each control connects to the same
host listener as the same uid with that layer off too, and gets the listener's banner.

The all-layers versions are in test_network_none.py and test_network_loopback.py.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest
from _security_support import py
from support.layers import BASE
from support.network import BannerListener

from hanzo_sandbox_mcp.linux import landlock

USER_NS = BASE | {"user"}
CONNECT = r"""
import socket, sys
family = socket.AF_UNIX if sys.argv[1].startswith("@") else socket.AF_INET
address = b"\0" + sys.argv[1][1:].encode() if family == socket.AF_UNIX else ("127.0.0.1", int(sys.argv[1]))
try:
    s = socket.socket(family, socket.SOCK_STREAM); s.settimeout(5); s.connect(address); print(s.recv(200).decode())
except OSError as e:
    print("ERR", e.errno)
"""


@pytest.fixture
def tcp_listener() -> Iterator[BannerListener]:
    listener = BannerListener(socket.AF_INET, ("127.0.0.1", 0)).start()
    yield listener
    listener.close()


@pytest.fixture
def abstract_listener() -> Iterator[BannerListener]:
    listener = BannerListener(socket.AF_UNIX, f"\0hanzo-sec-{uuid.uuid4().hex}").start()
    yield listener
    listener.close()


def _connect(listener: BannerListener) -> str:
    address = listener.sock.getsockname()
    target = "@" + address[1:].decode() if isinstance(address, bytes) else str(address[1])
    return py(CONNECT, target)


def _reached(listener: BannerListener, result: object) -> bool:
    return listener.banner in result.stdout  # type: ignore[attr-defined]


def test_net_namespace_alone_blocks_host_loopback_listener(layered_run, tcp_listener):
    result = layered_run(USER_NS | {"net"}, _connect(tcp_listener))
    assert not _reached(tcp_listener, result) and "ERR 111" in result.stdout, result  # ECONNREFUSED: own lo
    assert "net" in result.protection.namespaces and result.protection.seccomp is False, result.protection
    control = layered_run(USER_NS, _connect(tcp_listener))
    assert _reached(tcp_listener, control), f"control: without the net namespace the host listener answers: {control}"


def test_landlock_tcp_rules_alone_block_connect_under_network_none(layered_run, tcp_listener):
    if landlock.abi_version() < 4:
        pytest.skip(f"Landlock ABI {landlock.abi_version()} has no TCP rules (needs 4)")
    result = layered_run(BASE | {"landlock_net"}, _connect(tcp_listener), network="none")
    assert not _reached(tcp_listener, result) and "ERR 13" in result.stdout, result  # EACCES from Landlock
    assert result.protection.seccomp is False and result.protection.namespaces == (), result.protection
    control = layered_run(BASE, _connect(tcp_listener), network="none")
    assert _reached(tcp_listener, control), f"control: without Landlock's TCP rules the connect works: {control}"


def test_seccomp_socket_rules_alone_block_inet_sockets_under_network_none(layered_run, tcp_listener):
    result = layered_run(BASE | {"seccomp"}, _connect(tcp_listener), network="none")
    assert not _reached(tcp_listener, result) and "ERR 1" in result.stdout.split("\n")[0], result  # EPERM
    assert result.protection.landlock_abi is None and result.protection.namespaces == (), result.protection
    control = layered_run(BASE, _connect(tcp_listener), network="none")
    assert _reached(tcp_listener, control), f"control: without seccomp an AF_INET socket connects: {control}"


def test_landlock_scope_alone_blocks_host_abstract_unix_socket(layered_run, abstract_listener):
    if landlock.abi_version() < 6:
        pytest.skip(f"Landlock ABI {landlock.abi_version()} has no abstract-socket scope (needs 6)")
    result = layered_run(BASE | {"landlock_scope"}, _connect(abstract_listener))
    assert not _reached(abstract_listener, result) and "ERR 1" in result.stdout, result  # EPERM from the scope
    assert result.protection.namespaces == (), result.protection
    control = layered_run(BASE, _connect(abstract_listener))
    assert _reached(abstract_listener, control), f"control: without the scope the host socket answers: {control}"
