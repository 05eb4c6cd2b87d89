"""Kernel attack surface: syscalls a sandboxed command has no business making, probed with ctypes.

Each probe calls the syscall with arguments that are harmless on the host (the positive control runs the
very same probe unsandboxed and shows the kernel answers something other than EPERM: success, EBADF,
ENOENT...), so an EPERM inside the sandbox is the sandbox's doing, as in bubblewrap's `try-syscall`.
The set is what container escapes and kernel LPEs go through: io_uring (which also bypasses seccomp
for socket/open), bpf, keyrings (not namespaced), nested user namespaces and mounts, ptrace, perf,
userfaultfd (race widening), TIOCSTI (typing into the host terminal, also with the high 32 bits of the
ioctl number set, which the kernel ignores but a naive filter compares), raw and packet sockets.
"""

from __future__ import annotations

import errno

import pytest
from _security_support import IS_ROOT, assert_protection, host_probe, json_lines, py

PROBE = r"""
import ctypes, errno, json, os, sys, fcntl, termios, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def arg(a):
    if a is None: return ctypes.c_void_p(None)
    if isinstance(a, int): return ctypes.c_long(a) if a < (1 << 63) else ctypes.c_ulong(a)
    if isinstance(a, bytes): return ctypes.c_char_p(a)
    return a

def sys_(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[arg(a) for a in args])
    return r, (ctypes.get_errno() if r == -1 else 0)

def closing(res):
    r, e = res
    if r > 2 and e == 0:
        try: os.close(r)
        except OSError: pass
    return r, e

def io_uring_setup():
    params = ctypes.create_string_buffer(120)
    return closing(sys_(425, 8, params))

def perf_event_open():
    attr = ctypes.create_string_buffer(128)
    ctypes.c_uint32.from_buffer(attr, 0).value = 1      # PERF_TYPE_SOFTWARE
    ctypes.c_uint32.from_buffer(attr, 4).value = 128    # size
    ctypes.c_uint64.from_buffer(attr, 8).value = 0      # PERF_COUNT_SW_CPU_CLOCK
    ctypes.c_uint64.from_buffer(attr, 40).value = (1 << 0) | (1 << 5) | (1 << 6)  # disabled, exclude_kernel, exclude_hv
    return closing(sys_(298, attr, 0, -1, -1, 0))

def bpf_map_create():
    attr = ctypes.create_string_buffer(72)
    for off, v in ((0, 2), (4, 4), (8, 4), (12, 1)):  # BPF_MAP_TYPE_ARRAY, key 4, value 4, 1 entry
        ctypes.c_uint32.from_buffer(attr, off).value = v
    return closing(sys_(321, 0, attr, 72))

def forked(fn):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try: res = fn()
        except OSError as e: res = (-1, e.errno)
        os.write(w, json.dumps(res).encode()); os._exit(0)
    os.close(w)
    data = os.read(r, 1000); os.close(r); os.waitpid(pid, 0)
    return tuple(json.loads(data)) if data else (-1, -1)

def clone_newuser():
    r, e = sys_(56, 0x10000000 | 17, 0, 0, 0, 0)
    if r == 0: os._exit(0)
    if r > 0: os.waitpid(r, 0); return 0, 0
    return r, e

def tiocsti(cmd):
    def inner():
        master, slave = os.openpty()
        os.setsid()
        try: fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        except OSError: pass
        c = ctypes.c_char(b"x")
        return sys_(16, slave, cmd, ctypes.byref(c))
    return forked(inner)

def tiocsti_on_pipe(cmd):
    r, w = os.pipe()
    c = ctypes.c_char(b"x")
    res = sys_(16, r, cmd, ctypes.byref(c))
    os.close(r); os.close(w)
    return res

def sock(fam, typ, proto=0):
    try: socket.socket(fam, typ, proto).close(); return 0, 0
    except OSError as e: return -1, e.errno

CASES = {
    "io_uring_setup": io_uring_setup,
    "io_uring_enter": lambda: sys_(426, -1, 0, 0, 0, None, 0),
    "io_uring_register": lambda: sys_(427, -1, 0, None, 0),
    "bpf_map_create": bpf_map_create,
    "bpf_bad_cmd": lambda: sys_(321, 0xFFFF, None, 0),
    "keyctl_session_keyring": lambda: sys_(250, 0, -3, 0),
    "add_key": lambda: sys_(248, b"user", b"hanzo-probe", b"x", 1, -2),
    "request_key": lambda: sys_(249, b"user", b"hanzo-probe-missing", None, 0),
    "unshare_user": lambda: forked(lambda: sys_(272, 0x10000000)),
    "unshare_invalid_flags": lambda: sys_(272, 0x10000000 | 0x1),
    "unshare_mount": lambda: forked(lambda: sys_(272, 0x00020000)),
    "clone_newuser": lambda: forked(clone_newuser),
    "clone3": lambda: sys_(435, None, 0),
    "setns": lambda: sys_(308, -1, 0),
    "mount_tmpfs": lambda: sys_(165, b"none", b"/nonexistent-hanzo-probe", b"tmpfs", 0, None),
    "umount2": lambda: sys_(166, b"/nonexistent-hanzo-probe", 0),
    "pivot_root": lambda: sys_(155, b"/nonexistent-hanzo-a", b"/nonexistent-hanzo-b"),
    "chroot": lambda: sys_(161, b"/nonexistent-hanzo-probe"),
    "fsopen": lambda: sys_(430, None, 0),
    "open_tree_clone": lambda: sys_(428, -100, b"/nonexistent-hanzo-probe", 1),
    "ptrace_traceme": lambda: forked(lambda: sys_(101, 0, 0, 0, 0)),
    "ptrace_attach_missing": lambda: sys_(101, 16, 0x3FFFFFF0, 0, 0),
    "perf_event_open": perf_event_open,
    "userfaultfd_user_mode": lambda: closing(sys_(323, 1)),
    "userfaultfd_invalid": lambda: sys_(323, 1 | 0x40000000),
    "open_by_handle_at": lambda: sys_(304, -1, None, 0),
    "init_module": lambda: sys_(175, None, 0, b""),
    "finit_module": lambda: sys_(313, -1, b"", 0),
    "kexec_load": lambda: sys_(246, 0, 0, None, 0xDEAD0000),
    "tiocsti": lambda: tiocsti(0x5412),
    "tiocsti_high_bits": lambda: tiocsti(0xFFFFFFFF00005412),
    "tiocsti_pipe": lambda: tiocsti_on_pipe(0x5412),
    "tiocsti_pipe_high_bits": lambda: tiocsti_on_pipe(0xFFFFFFFF00005412),
    "socket_packet_raw": lambda: sock(socket.AF_PACKET, socket.SOCK_RAW),
    "socket_inet_raw": lambda: sock(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
}
only = sys.argv[1:] or list(CASES)
for name in only:
    try:
        r, e = CASES[name]()
    except OSError as exc:
        r, e = -1, exc.errno
    print(json.dumps({"case": name, "ret": r, "errno": e, "name": errno.errorcode.get(e, str(e))}))
"""

#: Must fail with EPERM inside the sandbox (seccomp, or a capability the command lacks).
MUST_EPERM = (
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "bpf_map_create",
    "keyctl_session_keyring",
    "add_key",
    "request_key",
    "unshare_user",
    "unshare_invalid_flags",
    "unshare_mount",
    "clone_newuser",
    "mount_tmpfs",
    "ptrace_traceme",
    "ptrace_attach_missing",
    "perf_event_open",
    "userfaultfd_user_mode",
    "tiocsti_pipe",
    "tiocsti_pipe_high_bits",
    "socket_packet_raw",
    "socket_inet_raw",
)
#: Must fail (any errno: a missing capability, ENOSYS on this kernel, or no pty at all is a block too).
MUST_FAIL = (
    "bpf_bad_cmd",
    "userfaultfd_invalid",
    "clone3",
    "setns",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "open_tree_clone",
    "open_by_handle_at",
    "init_module",
    "finit_module",
    "kexec_load",
    "tiocsti",
    "tiocsti_high_bits",
)


def _rows(text: str) -> dict[str, dict]:
    return {row["case"]: row for row in json_lines(text)}


@pytest.fixture(scope="module")
def sandbox_results(sandbox, work_root):
    """One sandboxed run of every probe (loopback network, the default policy)."""
    from _security_support import make_workdir, run_in_sandbox

    result = run_in_sandbox(sandbox, py(PROBE), workdir=make_workdir(work_root), timeout_s=60)
    rows = _rows(result.stdout)
    assert rows, f"the probe produced nothing: {result}"
    return result, rows


@pytest.fixture(scope="module")
def host_results():
    proc = host_probe(PROBE)
    rows = _rows(proc.stdout)
    assert rows, f"host probe failed: {proc.stderr}"
    return rows


def _describe(row: dict) -> str:
    return f"ret={row['ret']} errno={row['errno']} ({row['name']})"


@pytest.mark.parametrize("case", MUST_EPERM)
def test_sandbox_blocks_syscall_with_eperm(sandbox_results, case):
    result, rows = sandbox_results
    assert case in rows, f"probe {case} did not report: {result.stdout} {result.stderr}"
    row = rows[case]
    assert row["ret"] == -1, f"{case} SUCCEEDED inside the sandbox: {_describe(row)}"
    assert row["errno"] == errno.EPERM, f"{case} failed, but not with EPERM: {_describe(row)}"
    assert_protection(result, seccomp=True, no_new_privs=True)


@pytest.mark.parametrize("case", MUST_FAIL)
def test_sandbox_blocks_privileged_syscall(sandbox_results, case):
    result, rows = sandbox_results
    assert case in rows, f"probe {case} did not report: {result.stdout} {result.stderr}"
    row = rows[case]
    assert row["ret"] == -1, f"{case} SUCCEEDED inside the sandbox: {_describe(row)}"
    assert_protection(result, seccomp=True)


@pytest.mark.parametrize("case", MUST_EPERM)
def test_probe_positive_control_on_host(host_results, case):
    """Unsandboxed, the same probe does not get EPERM: the EPERM above is the sandbox's."""
    row = host_results[case]
    if row["errno"] == errno.EPERM:
        pytest.skip(
            f"{case}: the host already denies this to uid {'0' if IS_ROOT else 'non-root'} "
            f"(capability or sysctl), so the control cannot tell layers apart"
        )
    assert row["errno"] != errno.EPERM, _describe(row)
