"""The seccomp deny-list against the real kernel: built with pyseccomp, installed with our ctypes loader.

Filters are installed only in forked children. A denied syscall is probed with harmless arguments (-1
everywhere, like bubblewrap's try-syscall): EPERM means the filter stopped it, any other error means the
call reached the kernel. Most tests run the same probe without the filter as a control.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import random
import signal
import socket
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _forked as forked
import pytest
from support.syscalls import (
    ALLOWED_ON_PURPOSE,
    ARGUMENT_RULES,
    EXPECTED_DENIED,
    NOT_IMPLEMENTED,
    syscall_number,
    try_arguments,
)

from hanzo_sandbox_mcp.linux import seccomp
from hanzo_sandbox_mcp.linux.seccomp import SeccompError, build_filter, install_filter

pytestmark = pytest.mark.skipif(not seccomp.filter_available(), reason="this kernel cannot run seccomp filters")

pyseccomp = pytest.importorskip("pyseccomp")

MACHINE = os.uname().machine
IS_ROOT = os.geteuid() == 0
_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.syscall.restype = ctypes.c_long
_PR_SET_NO_NEW_PRIVS = 38
_X32_SYSCALL_BIT = 0x40000000
_RET_ALLOW = b"\x06\x00\x00\x00\x00\x00\xff\x7f"  # BPF_RET | BPF_K, SECCOMP_RET_ALLOW
_SIGCHLD = 17
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_CLONE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": _CLONE_NEWUSER,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": _CLONE_NEWNET,
}

_NAMESPACE_ROOT_FLAGS = _CLONE_NEWUSER | 0x00020000 | 0x04000000 | 0x08000000 | _CLONE_NEWNET | 0x20000000
_AT_FDCWD = -100
_S_ISUID, _S_ISGID = 0o4000, 0o2000


def nr(name: str) -> int:
    """Native syscall number, resolved without the module under test; -1 when this architecture lacks it."""
    number = syscall_number(name)
    return -1 if number is None else number


def raw(number: int, *args: int | bytes) -> int:
    """syscall(number, *args) (bytes are passed as C strings): the result when it succeeds, else -errno."""
    values = [
        ctypes.c_char_p(arg) if isinstance(arg, bytes) else ctypes.c_ulong(arg & 0xFFFFFFFFFFFFFFFF) for arg in args
    ]
    result = int(_LIBC.syscall(ctypes.c_long(number), *values))
    return -ctypes.get_errno() if result == -1 else result


def err(action: Callable[[], object]) -> int:
    """0 when `action` succeeds, else the errno of the OSError it raised."""
    try:
        action()
    except OSError as exc:
        return exc.errno or -1
    return 0


def _setup(bpf: bytes | None, no_new_privs: bool) -> Callable[[], None]:
    def setup() -> None:
        os.setsid()  # no controlling terminal: vhangup and TIOCSTI probes cannot touch the user's tty
        if no_new_privs:
            forked.set_no_new_privs()
        if bpf is not None:
            install_filter(bpf)

    return setup


def fork_child(body: Callable[[], Any], *, bpf: bytes | None, no_new_privs: bool = True) -> tuple[int, Any]:
    """Run `body` in a forked child, after installing `bpf` when given; (wait status, JSON result)."""
    return forked.fork_child(body, _setup(bpf, no_new_privs))


def in_child(body: Callable[[], Any], *, bpf: bytes | None, no_new_privs: bool = True) -> Any:
    """`fork_child` for a child that must exit normally; its exception becomes a test failure."""
    return forked.in_child(body, _setup(bpf, no_new_privs))


@pytest.fixture(scope="module")
def filters() -> dict[str, bytes]:
    return {mode: build_filter(mode) for mode in seccomp.NETWORK_MODES}


@pytest.fixture
def tcp_listener() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


# --- the deny-list, against an expectation written outside the module ------------------------------------

#: Every syscall probed: the outside expectation first, then this project's own additions to it.
PROBED = tuple(sorted({*EXPECTED_DENIED, *seccomp.DENIED_SYSCALLS} - set(ARGUMENT_RULES)))


def _probe(names: tuple[str, ...]) -> dict[str, int]:
    """Each syscall with `try_arguments`: an allowed call fails with EBADF, EFAULT or EINVAL (or succeeds);
    only a filter, or a missing capability, answers EPERM."""
    return {name: raw(nr(name), *try_arguments(name)) for name in names if nr(name) >= 0}


def _as_namespace_root(names: tuple[str, ...]) -> dict[str, int]:
    """`_probe` as root of fresh user, mount, uts, ipc, net and pid namespaces: the capabilities a namespace
    grants are held, so what is still EPERM needs the initial namespace."""
    if _LIBC.unshare(_NAMESPACE_ROOT_FLAGS) != 0:
        raise OSError(ctypes.get_errno(), "unshare of user and other namespaces")
    return forked.in_child(lambda: _probe(names))  # pid 1 of the new pid namespace


@pytest.fixture(scope="module")
def filtered(filters: dict[str, bytes]) -> dict[str, int]:
    return in_child(lambda: _probe(PROBED), bpf=filters["full"])


@pytest.fixture(scope="module")
def unfiltered() -> dict[str, dict[str, int]]:
    plain = in_child(lambda: _probe(PROBED), bpf=None)
    refused = tuple(name for name, value in plain.items() if value == -errno.EPERM)
    return {"plain": plain, "namespace root": in_child(lambda: _as_namespace_root(refused), bpf=None)}


def test_expectation_accounts_for_every_syscall_docker_denies() -> None:
    """No entry of the outside policies is dropped silently: each is probed, allowed for a stated reason, not
    implemented here, or has an argument rule of its own."""
    known = {*PROBED, *ALLOWED_ON_PURPOSE, *NOT_IMPLEMENTED, *ARGUMENT_RULES}
    assert set(EXPECTED_DENIED) <= known
    assert not set(ALLOWED_ON_PURPOSE) & set(EXPECTED_DENIED)


@pytest.mark.parametrize("name", NOT_IMPLEMENTED)
def test_not_implemented_entries_really_are(name: str) -> None:
    if nr(name) < 0:
        pytest.skip(f"{name} does not exist on {MACHINE}")
    result = in_child(lambda: raw(nr(name), *[-1] * 6), bpf=None)
    if result == -errno.EPERM and _seccomp_mode() == "2":
        pytest.skip(f"{name}: a seccomp filter around the tests (a container runtime's) answers EPERM first")
    assert result == -errno.ENOSYS


def test_independent_numbers_agree_with_libseccomp() -> None:
    """The test's numbers (kernel header) and libseccomp's agree wherever both know a name."""
    for name in PROBED:
        theirs = int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name))
        if theirs >= 0:
            assert nr(name) == theirs, name


@pytest.mark.parametrize("name", PROBED)
def test_seccomp_denies_syscall(filtered: dict[str, int], unfiltered: dict[str, dict[str, int]], name: str) -> None:
    if nr(name) < 0:
        pytest.skip(f"{name} does not exist on {MACHINE}")
    assert filtered[name] == -errno.EPERM, f"{name} passed the filter: {errno.errorcode.get(-filtered[name])}"
    control = unfiltered["plain"][name]
    if control == -errno.EPERM:
        control = unfiltered["namespace root"][name]
    if control == -errno.EPERM:
        pytest.skip(
            f"{name}: the kernel itself answers EPERM to uid {os.getuid()} even as root of a user namespace "
            "(a capability of the initial namespace), so the filter's EPERM cannot be told apart; run as root"
        )
    assert control != -errno.EPERM


def test_allowed_syscalls_still_work(filters: dict[str, bytes], tmp_path: Path) -> None:
    def body() -> dict[str, Any]:
        read_fd, write_fd = os.pipe()
        os.write(write_fd, b"ok")
        out: list[int] = []
        thread = threading.Thread(target=lambda: out.append(os.getpid()))  # pthread_create: clone3 -> clone
        thread.start()
        thread.join()
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        _, status = os.waitpid(pid, 0)
        with socket.socket(socket.AF_UNIX) as unix:
            unix_family = int(unix.family)
        (tmp_path / "file").write_text("data")
        return {
            "getpid": os.getpid() > 0,
            "read": os.read(read_fd, 2).decode(),
            "thread": out == [os.getpid()],
            "fork_status": os.waitstatus_to_exitcode(status),
            "unix": unix_family,
            "exec": subprocess.run(["/bin/true"], check=False).returncode,
            "file": (tmp_path / "file").read_text(),
            "personality_query": raw(nr("personality"), 0xFFFFFFFF),
        }

    assert in_child(body, bpf=filters["none"]) == {
        "getpid": True,
        "read": "ok",
        "thread": True,
        "fork_status": 7,
        "unix": socket.AF_UNIX,
        "exec": 0,
        "file": "data",
        "personality_query": 0,
    }


def test_clone3_returns_enosys(filters: dict[str, bytes]) -> None:
    def body() -> int:
        return raw(nr("clone3"), 0, 0)  # NULL args, size 0: EINVAL from the kernel itself

    assert in_child(body, bpf=None) == -errno.EINVAL
    assert in_child(body, bpf=filters["full"]) == -errno.ENOSYS


def _clone(flags: int) -> int:
    """Raw clone(flags | SIGCHLD) with fork semantics: 0 when a child was created (and reaped), else -errno."""
    result = raw(nr("clone"), flags | _SIGCHLD, 0, 0, 0, 0)
    if result == 0:
        os._exit(0)
    if result > 0:
        os.waitpid(result, 0)
        return 0
    return result


def test_clone_with_namespace_flags_is_denied_while_fork_works(filters: dict[str, bytes]) -> None:
    def body() -> dict[str, int]:
        return {"plain": _clone(0), **{name: _clone(flag) for name, flag in _CLONE_FLAGS.items()}}

    control = in_child(lambda: _clone(_CLONE_NEWUSER), bpf=None)
    assert control == 0, "unprivileged user namespaces are needed for the control"
    assert in_child(body, bpf=filters["full"]) == {"plain": 0, **dict.fromkeys(_CLONE_FLAGS, -errno.EPERM)}


def test_unshare_of_a_user_namespace_fails(filters: dict[str, bytes]) -> None:
    def body() -> int:
        return subprocess.run(["unshare", "-U", "true"], capture_output=True, check=False).returncode

    assert in_child(body, bpf=None) == 0
    assert in_child(body, bpf=filters["full"]) != 0
    assert in_child(lambda: raw(nr("unshare"), _CLONE_NEWUSER), bpf=filters["full"]) == -errno.EPERM


@pytest.mark.parametrize("command", [0x5412, 0x541C, 0xFFFFFFFF00005412, 0x100005412, 0xFFFFFFFF0000541C])
def test_terminal_injection_ioctls_are_denied_whatever_the_high_bits(filters: dict[str, bytes], command: int) -> None:
    def body() -> int:
        return raw(nr("ioctl"), -1, command, 0)

    assert in_child(body, bpf=None) == -errno.EBADF
    assert in_child(body, bpf=filters["full"]) == -errno.EPERM


def test_other_ioctls_pass(filters: dict[str, bytes]) -> None:
    assert in_child(lambda: raw(nr("ioctl"), -1, 0x5413, 0), bpf=filters["full"]) == -errno.EBADF  # TIOCGWINSZ


def test_personality_allows_only_linux_linux32_and_the_query(filters: dict[str, bytes]) -> None:
    rng = random.Random(20261128)
    values = {0, 8, 0xFFFFFFFF, 0x0040000, 0x0400000, 0x0100000, 0x0020000, 0xFFFFFFF7, 0xFFFFFFFE, 0x7FFFFFFF}
    values |= {1 << bit for bit in range(32)} | {(1 << a) | (1 << b) for a in range(32) for b in range(a)}
    values |= {0xFFFFFFFF ^ value for value in list(values)} | {rng.getrandbits(32) for _ in range(3000)}
    values |= {0x100000000, 0x100000008, 0x1FFFFFFFF, 0xFFFFFFFF00040000}  # the kernel reads the low 32 bits
    personality = nr("personality")

    def body() -> dict[str, list[int]]:
        allowed: list[int] = []
        for value in sorted(values):
            if raw(personality, value) != -errno.EPERM:
                allowed.append(value)
            raw(personality, 0)
        raw(personality, 8)
        took_effect = raw(personality, 0xFFFFFFFF)
        return {"allowed": allowed, "took_effect": [took_effect]}

    result = in_child(body, bpf=filters["full"])
    assert result == {
        "allowed": [0, 8, 0xFFFFFFFF, 0x100000000, 0x100000008, 0x1FFFFFFFF],
        "took_effect": [8],
    }


def _socket(family: int, sock_type: int = socket.SOCK_STREAM, protocol: int = 0) -> int:
    fd = raw(nr("socket"), family, sock_type, protocol)
    if fd >= 0:
        os.close(fd)
        return 0
    return fd


def _socketpair(family: int) -> int:
    fds = (ctypes.c_int * 2)()
    result = int(_LIBC.socketpair(family, socket.SOCK_STREAM, 0, fds))
    if result == 0:
        os.close(fds[0])
        os.close(fds[1])
        return 0
    return -ctypes.get_errno()


def test_network_none_allows_only_unix_sockets(filters: dict[str, bytes]) -> None:
    def body() -> dict[str, int]:
        return {
            "inet": _socket(socket.AF_INET),
            "inet6": _socket(socket.AF_INET6),
            "netlink": _socket(socket.AF_NETLINK, socket.SOCK_RAW),
            "unspec": _socket(0),
            "inet_high_bits": _socket(0x1_00000002),
            "pair_inet": _socketpair(socket.AF_INET),
            "unix": _socket(socket.AF_UNIX),
            "pair_unix": _socketpair(socket.AF_UNIX),
        }

    control = in_child(body, bpf=None)
    assert control["inet"] == control["inet6"] == control["netlink"] == control["unix"] == 0
    assert control["pair_inet"] == -errno.EOPNOTSUPP
    denied = dict.fromkeys(("inet", "inet6", "netlink", "unspec", "inet_high_bits", "pair_inet"), -errno.EPERM)
    assert in_child(body, bpf=filters["none"]) == {**denied, "unix": 0, "pair_unix": 0}


@pytest.mark.parametrize("mode", ["loopback", "full"])
def test_network_loopback_and_full_allow_inet(filters: dict[str, bytes], tcp_listener: int, mode: str) -> None:
    def body() -> dict[str, int]:
        return {
            "connect": err(lambda: socket.create_connection(("127.0.0.1", tcp_listener), timeout=5).close()),
            "inet6": _socket(socket.AF_INET6),
            "udp": _socket(socket.AF_INET, socket.SOCK_DGRAM),
            "pair_unix": _socketpair(socket.AF_UNIX),
            "netlink_route": _socket(socket.AF_NETLINK, socket.SOCK_RAW, 0),
        }

    assert in_child(body, bpf=filters[mode]) == dict.fromkeys(
        ("connect", "inet6", "udp", "pair_unix", "netlink_route"), 0
    )


_AF_VSOCK = 40
_NETLINK_KOBJECT_UEVENT = 15


@pytest.mark.parametrize("mode", seccomp.NETWORK_MODES)
def test_vsock_and_other_families_are_denied_in_every_mode(filters: dict[str, bytes], mode: str) -> None:
    """AF_VSOCK (also with high bits the kernel ignores), netlink protocols other than NETLINK_ROUTE, and a
    family past AF_MAX. Every family number is checked through the real sandbox in test_socket_families.py."""

    def body() -> dict[str, int]:
        return {
            "vsock": _socket(_AF_VSOCK),
            "vsock_high_bits": _socket(0x1_00000000 | _AF_VSOCK),
            "pair_vsock": _socketpair(_AF_VSOCK),
            "netlink_uevent": _socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_KOBJECT_UEVENT),
            "netlink_route_high_bits": _socket(socket.AF_NETLINK, socket.SOCK_RAW, 0x1_00000000),
            "past_af_max": _socket(64),
        }

    control = in_child(body, bpf=None)
    assert -errno.EPERM not in control.values(), control
    assert in_child(body, bpf=filters[mode]) == dict.fromkeys(control, -errno.EPERM)


@pytest.mark.parametrize("mode", seccomp.NETWORK_MODES)
def test_packet_and_raw_sockets_are_denied_even_with_cap_net_raw(filters: dict[str, bytes], mode: str) -> None:
    """In a user + network namespace the child holds CAP_NET_RAW (as a sandbox might), so only the filter stops it."""

    def body() -> dict[str, dict[str, int]]:
        if _LIBC.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER | CLONE_NEWNET)")
        probes: dict[str, Callable[[], int]] = {
            "packet": lambda: _socket(socket.AF_PACKET, socket.SOCK_RAW),
            "raw4": lambda: _socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.IPPROTO_ICMP),
            "raw6": lambda: _socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
            "inet_sock_packet": lambda: _socket(socket.AF_INET, 10),  # legacy spelling of AF_PACKET
        }
        before = {name: probe() for name, probe in probes.items()}
        install_filter(filters[mode])
        return {"before": before, "after": {name: probe() for name, probe in probes.items()}}

    result = in_child(body, bpf=None)
    assert set(result["before"].values()) == {0}
    assert result["after"] == dict.fromkeys(result["before"], -errno.EPERM)


# --- no setuid or setgid file -------------------------------------------------------------------------


def _give_mode(directory: Path, call: str, mode: int) -> list[int]:
    """Give a file in `directory` `mode` through `call`: [0 or -errno, the file's mode bits (-1: no file)]."""
    os.umask(0o022)  # in the forked child only
    path = directory / f"{call}-{mode & 0o7777:o}"
    name = bytes(path)
    created_fd = -1
    if call in ("chmod", "fchmod", "fchmodat", "fchmodat2"):
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
        args: dict[str, tuple[int | bytes, ...]] = {
            "chmod": (name, mode),
            "fchmod": (fd, mode),
            "fchmodat": (_AT_FDCWD, name, mode),
            "fchmodat2": (_AT_FDCWD, name, mode, 0),
        }
        result = raw(nr(call), *args[call])
        os.close(fd)
    else:
        create = os.O_CREAT | os.O_WRONLY
        args = {
            "creat": (name, mode),
            "mknod": (name, stat.S_IFREG | mode, 0),
            "mknodat": (_AT_FDCWD, name, stat.S_IFREG | mode, 0),
            "open": (name, create, mode),
            "openat": (_AT_FDCWD, name, create, mode),
            "openat_tmpfile": (_AT_FDCWD, bytes(directory), os.O_TMPFILE | os.O_WRONLY, mode),
        }
        result = raw(nr(call.removesuffix("_tmpfile")), *args[call])
        created_fd = result if call in ("creat", "open", "openat", "openat_tmpfile") else -1
    if created_fd >= 0:
        bits = stat.S_IMODE(os.fstat(created_fd).st_mode)
        os.close(created_fd)
        return [0, bits]
    try:
        return [min(result, 0), stat.S_IMODE(os.stat(path).st_mode)]
    except FileNotFoundError:
        return [min(result, 0), -1]


MODE_CALLS = (
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "creat",
    "mknod",
    "mknodat",
    "open",
    "openat",
    "openat_tmpfile",
)


def _skip_if_absent(call: str) -> None:
    if nr(call.removesuffix("_tmpfile")) < 0:
        pytest.skip(f"{call} does not exist on {MACHINE}")
    if _seccomp_mode() == "2" and in_child(lambda: raw(nr(call.removesuffix("_tmpfile")), *[-1] * 6), bpf=None) in (
        -errno.ENOSYS,
        -errno.EPERM,
    ):
        pytest.skip(f"{call}: a seccomp filter around the tests (a container runtime's) already refuses it")


@pytest.mark.parametrize("bit", [_S_ISUID, _S_ISGID, _S_ISUID | _S_ISGID], ids=["setuid", "setgid", "both"])
@pytest.mark.parametrize("call", MODE_CALLS)
def test_seccomp_denies_setuid_and_setgid_modes(filters: dict[str, bytes], tmp_path: Path, call: str, bit: int) -> None:
    _skip_if_absent(call)
    control = in_child(lambda: _give_mode(tmp_path, call, 0o755 | bit), bpf=None)
    assert control == [0, 0o755 | bit], f"the control could not make a {bit:o} file: {control}"
    fresh = tmp_path / "filtered"
    fresh.mkdir()
    result = in_child(lambda: _give_mode(fresh, call, 0o755 | bit), bpf=filters["loopback"])
    assert result[0] == -errno.EPERM and result[1] in (-1, 0o644), result


@pytest.mark.parametrize("call", MODE_CALLS)
def test_plain_modes_still_work(filters: dict[str, bytes], tmp_path: Path, call: str) -> None:
    """The filter is not too broad: 755, 644 and the sticky bit pass (creation applies the umask, 022)."""
    _skip_if_absent(call)
    modes = (0o755, 0o644, 0o1777)

    def body() -> list[list[int]]:
        return [_give_mode(tmp_path, call, mode) for mode in modes]

    umask = 0 if "chmod" in call else 0o022
    assert in_child(body, bpf=filters["none"]) == [[0, mode & ~umask] for mode in modes]


def test_setuid_bit_is_caught_whatever_the_high_bits(filters: dict[str, bytes], tmp_path: Path) -> None:
    """The kernel reads the mode as a 16-bit umode_t: high bits must not hide S_ISUID."""
    mode = 0xFFFF_0000_0000_0000 | 0o4755
    assert in_child(lambda: _give_mode(tmp_path, "fchmodat", mode), bpf=None) == [0, 0o4755]
    fresh = tmp_path / "filtered"
    fresh.mkdir()
    assert in_child(lambda: _give_mode(fresh, "fchmodat", mode), bpf=filters["full"]) == [-errno.EPERM, 0o644]


def test_openat2_answers_enosys(filters: dict[str, bytes], tmp_path: Path) -> None:
    """openat2's mode sits in a struct BPF cannot read: ENOSYS, so callers fall back to openat."""
    how = (ctypes.c_uint64 * 3)(os.O_CREAT | os.O_WRONLY, 0o4755, 0)  # struct open_how: flags, mode, resolve

    def body() -> int:
        fd = int(_LIBC.syscall(ctypes.c_long(nr("openat2")), _AT_FDCWD, bytes(tmp_path / "f"), how, 24))
        if fd < 0:
            return -ctypes.get_errno()
        os.close(fd)
        return 0

    assert in_child(body, bpf=None) == 0
    assert in_child(body, bpf=filters["loopback"]) == -errno.ENOSYS


@pytest.mark.skipif(MACHINE != "x86_64", reason="x32 exists on x86_64 only")
def test_x32_syscalls_kill_the_whole_process(filters: dict[str, bytes]) -> None:
    """Made from a second thread: killing only that thread would let the process carry on."""

    def body() -> str:
        results: list[int] = []
        thread = threading.Thread(target=lambda: results.append(raw(_X32_SYSCALL_BIT | nr("getpid"))))
        thread.start()
        thread.join(timeout=5)
        return "thread returned" if results else "thread vanished"

    status, result = fork_child(body, bpf=None)
    assert os.WIFEXITED(status) and result == {"value": "thread returned"}  # a plain error (or a pid)
    status, result = fork_child(body, bpf=filters["full"])
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS and result is None


def _int80_getpid() -> int:
    """getpid through the i386 entry point (`mov eax, 20; int 0x80; ret`)."""
    code = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    code.write(b"\xb8\x14\x00\x00\x00\xcd\x80\xc3")
    function = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(code)))
    return int(function())


@pytest.mark.skipif(MACHINE != "x86_64", reason="int 0x80 exists on x86_64 only")
def test_i386_syscalls_kill_the_process(filters: dict[str, bytes]) -> None:
    status, result = fork_child(lambda: _int80_getpid() > 0, bpf=None)
    if not (os.WIFEXITED(status) and result == {"value": True}):
        pytest.skip("this kernel runs no i386 syscalls (ia32 emulation off)")
    status, result = fork_child(lambda: _int80_getpid() > 0, bpf=filters["full"])
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_filter_is_inherited_across_exec(filters: dict[str, bytes]) -> None:
    def body() -> list[str]:
        with open("/proc/self/status") as status:
            mine = [line for line in status if line.startswith("Seccomp:")]
        proc = subprocess.run(["grep", "^Seccomp:", "/proc/self/status"], capture_output=True, text=True, check=False)
        return [*mine, proc.stdout]

    assert in_child(body, bpf=filters["full"]) == ["Seccomp:\t2\n", "Seccomp:\t2\n"]


def test_install_refuses_without_no_new_privs(filters: dict[str, bytes]) -> None:
    with open("/proc/self/status") as status:
        if "NoNewPrivs:\t1" in status.read():
            pytest.skip("the test process already runs with no_new_privs")

    def body() -> list[Any]:
        try:
            install_filter(filters["full"])
        except SeccompError as exc:
            return [exc.errno, exc.step, "no_new_privs" in str(exc), _seccomp_mode()]
        return []

    # The mode is unchanged: "0", or "2" under a container runtime's own filter.
    assert in_child(body, bpf=None, no_new_privs=False) == [errno.EPERM, "install", True, _seccomp_mode()]


def _seccomp_mode() -> str:
    with open("/proc/self/status") as status:
        return next(line.split()[1] for line in status if line.startswith("Seccomp:"))


@pytest.mark.parametrize(
    "program",
    [b"", _RET_ALLOW[:7], _RET_ALLOW * 65537, b"\xff\xff\x00\x00\x00\x00\x00\x00"],
    ids=["empty", "not-whole-instructions", "too-long", "invalid-opcode"],
)
def test_install_rejects_malformed_programs(program: bytes) -> None:
    def body() -> list[Any]:
        try:
            install_filter(program)
        except SeccompError as exc:
            return [exc.errno, exc.step, _seccomp_mode()]
        return []

    assert in_child(body, bpf=None) == [errno.EINVAL, "install", _seccomp_mode()]


def test_build_filter_rejects_unknown_modes() -> None:
    with pytest.raises(ValueError, match="network"):
        build_filter("lan")
    with pytest.raises(ValueError, match="network"):
        seccomp.describe_filter("lan")


def test_build_filter_returns_whole_bpf_instructions(filters: dict[str, bytes]) -> None:
    for program in filters.values():
        assert program and len(program) % 8 == 0 and len(program) // 8 <= 4096
    assert filters["none"] != filters["loopback"] == filters["full"]


def test_describe_filter_covers_every_rule() -> None:
    full = seccomp.describe_filter("full")
    none = seccomp.describe_filter("none")
    assert all(any(line.startswith(f"{name}:") for line in full) for name in seccomp.DENIED_SYSCALLS)
    assert [line for line in none if line not in full] == [
        "socket/socketpair of any family but AF_UNIX: EPERM (AF_VSOCK reaches a VM's host past every namespace)"
    ]
    assert any("S_ISUID" in line for line in none)


def test_socket_families_per_mode() -> None:
    assert seccomp.socket_families("none") == (socket.AF_UNIX,)
    for mode in ("loopback", "full"):
        assert seccomp.socket_families(mode) == (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK)
    with pytest.raises(ValueError, match="network"):
        seccomp.socket_families("lan")


def test_child_killed_by_signal_is_reported() -> None:
    """The helper must not hide a dead child (otherwise a filter that kills everything would pass)."""
    with pytest.raises(AssertionError, match="child died"):
        in_child(lambda: os.kill(os.getpid(), signal.SIGKILL), bpf=None)


@pytest.mark.parametrize("network", ["none", "loopback"])
@pytest.mark.parametrize(("net_ns", "filtered"), [(True, True), (True, False), (False, True), (False, False)])
def test_network_isolated_needs_the_namespace_and_the_family_filter(network: str, net_ns: bool, filtered: bool) -> None:
    """Either half alone leaves a way out (vsock past the namespace; the host's network past the filter), so the
    report claims isolation only with both, and `missing` names the half that did not fire."""
    from hanzo_sandbox_mcp.launch import LaunchReport
    from hanzo_sandbox_mcp.linux.sandbox import LinuxSandbox
    from hanzo_sandbox_mcp.policy import SandboxPolicy

    launch = LaunchReport(namespaces=["user", "pid", "mount", *(["net"] if net_ns else [])], seccomp=filtered)
    report = LinuxSandbox().report(launch, SandboxPolicy(network=network))
    assert report.network_isolated is (net_ns and filtered)
    [line] = [line for line in report.missing if line.startswith("network isolation")] or [""]
    assert ("network namespace" in line) is not net_ns and ("socket-family filter" in line) is not filtered, line


def test_full_network_is_never_isolated() -> None:
    from hanzo_sandbox_mcp.launch import LaunchReport
    from hanzo_sandbox_mcp.linux.sandbox import LinuxSandbox
    from hanzo_sandbox_mcp.policy import SandboxPolicy

    report = LinuxSandbox().report(
        LaunchReport(namespaces=["user", "net"], seccomp=True), SandboxPolicy(network="full")
    )
    assert report.network_isolated is False
    assert not [line for line in report.missing if line.startswith("network isolation")]
