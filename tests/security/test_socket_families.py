"""Socket families by allowlist: every family number the kernel knows, in every network mode.

`none` may create AF_UNIX sockets only; `loopback` and `full` AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK with
NETLINK_ROUTE. Every other family is EPERM, AF_VSOCK above all: vsock is not network-namespaced, and in a VM
guest (this machine is one) it reaches the hypervisor host's services past the private loopback.

The probe calls socket() for every family 0..AF_MAX with four socket types, and socketpair(), through the
raw syscall so that high bits can be set. Inside the sandbox a denied family must give EPERM for each call.
The positive control runs the very same probe unsandboxed as the command's uid, and, where the kernel itself
answers EPERM there (AF_PACKET and AF_XDP need CAP_NET_RAW), as root of fresh user and network namespaces:
no call may be EPERM there (success, EAFNOSUPPORT, ESOCKTNOSUPPORT... all mean "not the filter"). So EPERM
inside can only come from the filter.
"""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path
from typing import Any

import pytest
from _security_support import assert_protection, make_workdir, py, run_in_sandbox
from support.controls import command_uid, python_as_command_uid

AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_VSOCK = 1, 2, 10, 16, 40
SOCK_STREAM = 1
MAX_LINKS = 32  # netlink protocol numbers are 0..31


def _af_max() -> int:
    """AF_MAX as this system's headers know it (46 on Linux 6.x): families at and above it are not the kernel's."""
    for header in Path("/usr/include").glob("*/bits/socket.h"):
        found = re.search(r"#define\s+PF_MAX\s+(\d+)", header.read_text())
        if found:
            return int(found.group(1))
    return 46


AF_MAX = _af_max()
#: Past AF_MAX, negative (as the kernel's int reads 0xffffffff), and families with high bits set: the kernel
#: reads `int family`, so 0x1_00000028 is AF_VSOCK to it.
OUT_OF_RANGE = (AF_MAX + 1, 255, 0x7FFFFFFF, 0xFFFFFFFF, 0x1_00000000 | AF_VSOCK, 0xFFFFFFFF_00000000 | AF_VSOCK)
HIGH_BITS_ON_ALLOWED = (0x1_00000000 | AF_UNIX, 0x1_00000000 | AF_INET)
FAMILIES = (*range(AF_MAX + 1), *OUT_OF_RANGE, *HIGH_BITS_ON_ALLOWED)
ALLOWED = {"none": {AF_UNIX}, "loopback": {AF_UNIX, AF_INET, AF_INET6, AF_NETLINK}}
ALLOWED["full"] = ALLOWED["loopback"]
MODES = tuple(ALLOWED)

PROBE = r"""
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SOCKET, SOCKETPAIR = {"x86_64": (41, 53), "aarch64": (198, 199)}[os.uname().machine]

def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a & 0xFFFFFFFFFFFFFFFF) for a in args))
    return r, (ctypes.get_errno() if r == -1 else 0)

def sock(family, sock_type, protocol=0):
    fd, e = call(SOCKET, family, sock_type, protocol)
    if fd >= 0:
        os.close(fd)
    return e

def pair(family):
    fds = (ctypes.c_int * 2)()
    r, e = call(SOCKETPAIR, family, 1, 0, ctypes.addressof(fds))
    if r == 0:
        os.close(fds[0]); os.close(fds[1])
    return e

families, protocols = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {"family": {}, "netlink": {}}
for f in families:
    out["family"][str(f)] = {
        "stream": sock(f, 1), "dgram": sock(f, 2), "raw": sock(f, 3), "seqpacket": sock(f, 5), "socketpair": pair(f)
    }
for p in protocols:
    out["netlink"][str(p)] = {"raw": sock(16, 3, p), "dgram": sock(16, 2, p)}
print("PROBE " + json.dumps(out))
"""

Results = dict[str, dict[str, dict[str, int]]]


def _parse(stdout: str) -> Results:
    for line in stdout.splitlines():
        if line.startswith("PROBE "):
            parsed: Results = json.loads(line[len("PROBE ") :])
            return parsed
    raise AssertionError(f"the probe printed no result: {stdout!r}")


_ARGS = (json.dumps(FAMILIES), json.dumps(list(range(MAX_LINKS))))


@pytest.fixture(scope="module")
def inside(sandbox: Any, work_root: Path) -> dict[str, tuple[Any, Results]]:
    """One sandboxed run of the probe per network mode (the command's result and the probe's)."""
    runs = {}
    for mode in MODES:
        result = run_in_sandbox(sandbox, py(PROBE, *_ARGS), workdir=make_workdir(work_root), network=mode)
        assert result.exit_code == 0, result
        runs[mode] = (result, _parse(result.stdout))
    return runs


@pytest.fixture(scope="module")
def control() -> dict[str, Results]:
    """The same probe unsandboxed as the command's uid, plain and as root of fresh user + net namespaces."""
    runs = {}
    for name, namespace_root in (("plain", False), ("namespace root", True)):
        proc = python_as_command_uid(PROBE, *_ARGS, namespace_root=namespace_root)
        assert proc.returncode == 0, proc
        runs[name] = _parse(proc.stdout)
    return runs


def _eperm_free(control: dict[str, Results], kind: str, key: int) -> dict[str, int]:
    """The control's results for one family (or netlink protocol), in the first context where nothing is EPERM;
    a skip naming the precondition when every context answers EPERM."""
    for results in control.values():
        row = results[kind][str(key)]
        if errno.EPERM not in row.values():
            return row
    pytest.skip(
        f"{kind} {key:#x}: uid {command_uid()} gets EPERM from the kernel itself, even as root of a user "
        f"namespace ({control['namespace root'][kind][str(key)]}), so EPERM inside could not be told from it"
    )


def _describe(row: dict[str, int]) -> str:
    return ", ".join(f"{call}={errno.errorcode.get(e, 'ok') if e else 'ok'}" for call, e in row.items())


DENIED = [(mode, family) for mode in MODES for family in FAMILIES if family not in ALLOWED[mode]]


@pytest.mark.parametrize(("mode", "family"), DENIED, ids=[f"{mode}-{family:#x}" for mode, family in DENIED])
def test_seccomp_denies_every_family_outside_the_allowlist(inside, control, mode: str, family: int) -> None:
    result, rows = inside[mode]
    row = rows["family"][str(family)]
    assert set(row.values()) == {errno.EPERM}, f"family {family:#x} under {mode}: {_describe(row)}"
    _eperm_free(control, "family", family)
    assert_protection(result, seccomp=True, network=mode)


@pytest.mark.parametrize("mode", MODES)
def test_allowed_families_still_work(inside, mode: str) -> None:
    """The filter is not too broad: each allowed family creates a socket (and AF_UNIX a socketpair)."""
    _, rows = inside[mode]
    created = {family: rows["family"][str(family)] for family in ALLOWED[mode]}
    assert all(0 in (row["stream"], row["dgram"]) for row in created.values()), created
    assert created[AF_UNIX]["socketpair"] == 0, created


@pytest.mark.parametrize("protocol", range(1, MAX_LINKS))
@pytest.mark.parametrize("mode", ["loopback", "full"])
def test_seccomp_allows_netlink_route_only(inside, control, mode: str, protocol: int) -> None:
    """AF_NETLINK is open for NETLINK_ROUTE (getifaddrs, `ip`) and nothing else: audit, uevents, netfilter,
    crypto and the rest are kernel attack surface, and not all of them are namespaced."""
    _, rows = inside[mode]
    assert rows["netlink"]["0"]["raw"] == 0, f"NETLINK_ROUTE must work under {mode}: {rows['netlink']['0']}"
    row = rows["netlink"][str(protocol)]
    assert set(row.values()) == {errno.EPERM}, f"netlink protocol {protocol} under {mode}: {_describe(row)}"
    _eperm_free(control, "netlink", protocol)


def test_seccomp_blocks_vsock_sockets(inside, control) -> None:
    """Under the default policy (loopback) a vsock socket, which would reach the VM's host, is EPERM; the same
    socket() succeeds unsandboxed on this machine."""
    plain = control["plain"]["family"][str(AF_VSOCK)]
    if plain["stream"] != 0:
        pytest.skip(f"this machine has no vsock transport (socket(AF_VSOCK) unsandboxed: {_describe(plain)})")
    result, rows = inside["loopback"]
    assert rows["family"][str(AF_VSOCK)]["stream"] == errno.EPERM, rows["family"][str(AF_VSOCK)]
    assert_protection(result, seccomp=True, network="loopback", network_isolated=True)
