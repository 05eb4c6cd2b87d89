#!/usr/bin/env python3
"""Run a battery of sandbox-escape attempts through `hanzo-sandbox-mcp run --json` and print a table.

    python tools/attack_suite.py [--only SUBSTRING] [--json] [--cli "hanzo-sandbox-mcp"] [--keep-going]

Each attack is one command run through the real CLI (the same path a model's command takes), judged by a
predicate on the result and on the host (did the secret leak, did the host sleep survive, did the host
listener see a connection). Positive controls run first: if one fails, the suite itself is broken and it
exits 2 without judging anything. Exit status: 0 every attack blocked, 1 at least one attack succeeded,
2 the suite could not run.

Standard library only, so it runs with any Python 3.11 that can start the CLI. The command runs as
`nobody` when this runs as root; the victims (secrets, a host sleep, listeners) are set up so that only
the sandbox, not plain file permissions, stands between them and the command wherever possible.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the host-side victims are shared with the security tests

from support.network import BannerListener  # noqa: E402

IS_ROOT = os.geteuid() == 0
NOBODY = 65534
PY = "/usr/bin/python3"  # an interpreter every uid can execute (never one under a mode-700 /root)
MiB = 1024 * 1024


# --- the victims ---------------------------------------------------------------------------------------


@dataclass
class Context:
    root: Path
    private_secret: Path
    private_content: str
    public_secret: Path
    public_content: str
    shared_dir: Path
    env_secret: str
    victim: subprocess.Popen[bytes]
    victim_marker: str
    victim_secret: str
    tcp: BannerListener
    abstract_name: str
    abstract: BannerListener
    unix_path: Path
    unix: BannerListener
    work_root: Path
    markers: list[str] = field(default_factory=list)

    def workdir(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix="w-", dir=self.work_root))
        if IS_ROOT:
            os.chown(path, NOBODY, NOBODY)
        return path

    def marker(self, base: int = 300) -> str:
        value = f"{base}.{uuid.uuid4().int % 10**7:07d}"
        self.markers.append(value)
        return value


@contextlib.contextmanager
def victims() -> Iterator[Context]:
    root = Path(tempfile.mkdtemp(prefix="hanzo-attack-", dir="/var/tmp"))
    root.chmod(0o755)
    private_dir = root / "private"
    private_dir.mkdir(mode=0o700)
    private = private_dir / "id_ed25519"
    private_content = f"PRIVATE-{uuid.uuid4().hex}"
    private.write_text(private_content)
    private.chmod(0o600)
    public_dir = root / "public"
    public_dir.mkdir(mode=0o755)
    public = public_dir / "credentials"
    public_content = f"PUBLIC-{uuid.uuid4().hex}"
    public.write_text(public_content)
    public.chmod(0o644)
    shared = root / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "existing").write_text("original\n")
    (shared / "existing").chmod(0o666)
    sockets = root / "sockets"
    sockets.mkdir(mode=0o755)
    work_root = Path(tempfile.mkdtemp(prefix="hanzo-attack-work-"))
    work_root.chmod(0o711)

    marker = f"300.{uuid.uuid4().int % 10**7:07d}"
    victim_secret = f"VICTIM-{uuid.uuid4().hex}"
    kwargs: dict[str, Any] = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if IS_ROOT else {}
    victim = subprocess.Popen(
        ["sleep", marker], env={"PATH": "/usr/bin:/bin", "VICTIM_SECRET": victim_secret}, **kwargs
    )
    tcp = BannerListener(socket.AF_INET, ("127.0.0.1", 0)).start()
    abstract_name = f"hanzo-attack-{uuid.uuid4().hex}"
    abstract = BannerListener(socket.AF_UNIX, b"\0" + abstract_name.encode()).start()
    unix_path = sockets / "service.sock"
    unix = BannerListener(socket.AF_UNIX, str(unix_path)).start()
    unix_path.chmod(0o666)
    ctx = Context(
        root=root,
        private_secret=private,
        private_content=private_content,
        public_secret=public,
        public_content=public_content,
        shared_dir=shared,
        env_secret=f"ENV-SECRET-{uuid.uuid4().hex}",
        victim=victim,
        victim_marker=marker,
        victim_secret=victim_secret,
        tcp=tcp,
        abstract_name=abstract_name,
        abstract=abstract,
        unix_path=unix_path,
        unix=unix,
        work_root=work_root,
    )
    try:
        yield ctx
    finally:
        victim.kill()
        victim.wait()
        for lst in (tcp, abstract, unix):
            lst.close()
        for value in ctx.markers:
            for pid in marker_pids(value):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(work_root, ignore_errors=True)


def marker_pids(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline and int(entry) != os.getpid():
                found.append(int(entry))
    return found


def wait_gone(marker: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while marker_pids(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# --- the attacks ---------------------------------------------------------------------------------------

Verdict = tuple[bool, str]  # (blocked, evidence)


@dataclass
class Attack:
    name: str
    category: str
    command: Callable[[Context], str]
    blocked: Callable[[dict[str, Any], Context], Verdict]
    network: str = "loopback"
    timeout: float = 30
    control: bool = False  # a positive control: must NOT be blocked
    workdir: bool = False  # run in a suite-made workdir (passed to the predicate as ctx via result)
    config: str | None = None  # TOML text for --config


def q(path: Path | str) -> str:
    return shlex.quote(str(path))


def py(code: str, *args: str) -> str:
    return " ".join([PY, "-I", "-S", "-c", q(code), *map(q, args)])


def out(result: dict[str, Any]) -> str:
    return str(result.get("stdout", "")) + str(result.get("stderr", ""))


def absent(*needles: str) -> Callable[[dict[str, Any], Context], Verdict]:
    """Blocked when none of the needles (resolved later) shows in the output."""

    def judge(result: dict[str, Any], ctx: Context) -> Verdict:
        text = out(result)
        for needle in needles:
            value = getattr(ctx, needle) if hasattr(ctx, needle) else needle
            if str(value) in text:
                return False, f"{needle} visible in output"
        return True, last_line(result)

    return judge


def last_line(result: dict[str, Any]) -> str:
    lines = [x for x in out(result).strip().splitlines() if x.strip()]
    return lines[-1][:70] if lines else f"exit {result.get('exit_code')}"


def syscall(nr: int, *args: int | str | None, name: str = "") -> str:
    """Python code calling syscall(nr, args) via ctypes and printing `RET errno`."""
    rendered = ", ".join(
        "None" if a is None else (repr(a.encode()) if isinstance(a, str) else f"ctypes.c_long({a})") for a in args
    )
    return (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall.restype = ctypes.c_long\n"
        f"r = libc.syscall(ctypes.c_long({nr}){', ' + rendered if rendered else ''})\n"
        "e = ctypes.get_errno() if r == -1 else 0\n"
        f"print('SYSCALL {name}', 'RET', r, 'ERRNO', e, os.strerror(e) if e else 'ok')"
    )


def syscall_failed(result: dict[str, Any], ctx: Context) -> Verdict:
    text = out(result)
    for line in text.splitlines():
        if line.startswith("SYSCALL"):
            parts = line.split()
            ret = int(parts[parts.index("RET") + 1])
            return ret == -1, " ".join(parts[parts.index("ERRNO") + 1 :])[:70]
    return False, f"probe printed nothing: {last_line(result)}"


def contains(text: str) -> Callable[[dict[str, Any], Context], Verdict]:
    def judge(result: dict[str, Any], ctx: Context) -> Verdict:
        return text not in out(result), last_line(result)

    return judge


def victim_alive(result: dict[str, Any], ctx: Context) -> Verdict:
    return ctx.victim.poll() is None, "host sleep alive" if ctx.victim.poll() is None else "host sleep KILLED"


def tcp_untouched(result: dict[str, Any], ctx: Context) -> Verdict:
    blocked = ctx.tcp.banner not in out(result)
    return blocked, last_line(result)


CONNECT = (
    "import socket, sys\naddr = sys.argv[1]\n"
    "fam = socket.AF_UNIX if addr.startswith(('/', '@')) else socket.AF_INET\n"
    "target = (b'\\0' + addr[1:].encode()) if addr.startswith('@') else addr if fam == socket.AF_UNIX "
    "else (addr.split(':')[0], int(addr.split(':')[1]))\n"
    "s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(5)\n"
    "try: s.connect(target); print(s.recv(200).decode())\n"
    "except OSError as e: print('ERR', e.errno, e.strerror)"
)
STATUS = "cat /proc/self/status"
PTRACE_1 = (
    "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "r = libc.ptrace(ctypes.c_long(16), ctypes.c_long(1), None, None)\n"
    "e = ctypes.get_errno() if r == -1 else 0\nprint('SYSCALL ptrace RET', r, 'ERRNO', e, os.strerror(e))"
)
TIOCSTI = (
    "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall.restype = ctypes.c_long\n"
    "r, w = os.pipe(); c = ctypes.c_char(b'x')\n"
    "res = libc.syscall(ctypes.c_long(16), ctypes.c_long(r), ctypes.c_ulong(0xFFFFFFFF00005412), ctypes.byref(c))\n"
    "e = ctypes.get_errno() if res == -1 else 0\n"
    "print('SYSCALL tiocsti RET', res if e != 25 else 0, 'ERRNO', e, os.strerror(e))"  # ENOTTY = not filtered
)


def io_uring() -> str:
    return (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall.restype = ctypes.c_long\n"
        "p = ctypes.create_string_buffer(120)\nr = libc.syscall(ctypes.c_long(425), ctypes.c_long(8), p)\n"
        "e = ctypes.get_errno() if r == -1 else 0\nprint('SYSCALL io_uring RET', r, 'ERRNO', e, os.strerror(e))"
    )


def status_field(name: str, bad: Callable[[str], bool]) -> Callable[[dict[str, Any], Context], Verdict]:
    def judge(result: dict[str, Any], ctx: Context) -> Verdict:
        for line in str(result.get("stdout", "")).splitlines():
            if line.startswith(name + ":"):
                value = line.split(":", 1)[1].strip()
                return not bad(value), f"{name} {value}"
        return False, f"{name} not found"

    return judge


def shared_untouched(result: dict[str, Any], ctx: Context) -> Verdict:
    """The world-writable directory outside the workdir still holds only `existing`, unmodified."""
    existing = ctx.shared_dir / "existing"
    extra = sorted(p.name for p in ctx.shared_dir.iterdir() if p.name != "existing")
    ok = existing.read_text() == "original\n" and not extra
    if not ok:  # reset for the next attack
        for name in extra:
            with contextlib.suppress(OSError):
                (ctx.shared_dir / name).unlink()
        existing.write_text("original\n")
    return ok, last_line(result) if ok else f"modified: {extra or 'existing'}"


def mode_kept(result: dict[str, Any], ctx: Context) -> Verdict:
    mode = ctx.private_secret.stat().st_mode & 0o777
    ctx.private_secret.chmod(0o600)
    return mode == 0o600, f"mode {mode:o}"


def daemon_gone(result: dict[str, Any], ctx: Context) -> Verdict:
    marker = ctx.markers[-1]
    gone = wait_gone(marker)
    return gone, "no process left" if gone else f"left: {marker_pids(marker)}"


def fork_bomb_contained(result: dict[str, Any], ctx: Context) -> Verdict:
    gone = wait_gone(ctx.markers[-1], 15)
    host_forks = subprocess.run(["true"], check=False).returncode == 0
    return gone and host_forks, "contained" if gone else "bomb processes left"


def fds_only_stdio(result: dict[str, Any], ctx: Context) -> Verdict:
    fds = sorted(line.split()[-3] for line in str(result.get("stdout", "")).splitlines() if " -> " in line)
    extra = [fd for fd in fds if fd not in ("0", "1", "2", "3")]
    return not extra, f"fds {' '.join(fds)}"


FAMILIES = (
    "import json, socket\nopened = []\nfor family in range(64):\n    for kind in (1, 2, 3, 5):\n"
    "        try: socket.socket(family, kind).close(); opened.append(family); break\n"
    "        except OSError: pass\nprint('OPENED', json.dumps(opened))"
)
ALLOWED_FAMILIES = {"none": {1}, "loopback": {1, 2, 10, 16}, "full": {1, 2, 10, 16}}


def families_allowed(result: dict[str, Any], ctx: Context) -> Verdict:
    """Blocked when no socket family outside the mode's allowlist could be created (16: NETLINK_ROUTE)."""
    for line in str(result.get("stdout", "")).splitlines():
        if line.startswith("OPENED "):
            opened = set(json.loads(line.split(" ", 1)[1]))
            network = str(result.get("protection", {}).get("network", ""))
            extra = sorted(opened - ALLOWED_FAMILIES.get(network, set()))
            return not extra, f"opened families {sorted(opened)}" + (
                f", outside the allowlist: {extra}" if extra else ""
            )
    return False, f"probe printed nothing: {last_line(result)}"


VSOCK = (
    "import socket\ntry: socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close(); print('OPENED vsock')\n"
    "except OSError as e: print('ERR', e.errno, e.strerror)"
)
SETUID_CAT = "cp /usr/bin/cat ./cat; chmod 4755 ./cat; stat -c %a ./cat"
SETGID_DIR = "mkdir -p d; chmod g+s d; stat -c %a d"
SETUID_CREATE = (
    "import os\nos.close(os.open('made', os.O_CREAT | os.O_WRONLY, 0o4755)); print(oct(os.stat('made').st_mode))"
)


def no_special_bits(result: dict[str, Any], ctx: Context) -> Verdict:
    """Blocked when nothing in the workdir, seen from the host, carries S_ISUID or S_ISGID."""
    root = Path(str(result.get("_workdir")))
    special = [
        f"{path.name} {path.lstat().st_mode & 0o7777:o}"
        for path in [root, *root.rglob("*")]
        if path.lstat().st_mode & 0o6000
    ]
    return not special, f"setuid/setgid on the host: {special}" if special else last_line(result)


def quota_bounded(result: dict[str, Any], ctx: Context) -> Verdict:
    used = int(str(result.get("_workdir_usage", 0)))
    ok = used <= 50 * MiB and (used <= 5 * MiB or bool(result.get("quota_exceeded")))
    return ok, f"quota_exceeded={result.get('quota_exceeded')} workdir={used // MiB} MiB (quota 5)"


def attacks() -> list[Attack]:
    A = Attack
    return [
        # positive controls: the mechanisms the attacks rely on work where they should
        A(
            "control: read allowed /etc/passwd",
            "control",
            lambda c: "cat /etc/passwd | head -1",
            contains("root:"),
            control=True,
        ),
        A("control: write in workdir", "control", lambda c: "echo ok > f && cat f", contains("ok"), control=True),
        A(
            "control: chmod 755 in workdir",
            "control",
            lambda c: "touch f && chmod 755 f && stat -c %a f",
            contains("755"),
            control=True,
        ),
        A(
            "control: listener inside sandbox",
            "control",
            lambda c: py(
                "import socket, threading\ns = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n"
                "threading.Thread(target=lambda: s.accept()[0].sendall(b'inside-ok'), daemon=True).start()\n"
                "print(socket.create_connection(s.getsockname()).recv(20).decode())"
            ),
            contains("inside-ok"),
            control=True,
        ),
        A(
            "control: full network reaches host",
            "control",
            lambda c: py(CONNECT, f"127.0.0.1:{c.tcp.sock.getsockname()[1]}"),
            lambda r, c: (c.tcp.banner not in out(r), last_line(r)),
            network="full",
            control=True,
        ),
        # filesystem reads
        A("read server's 0600 key", "fs-read", lambda c: f"cat {q(c.private_secret)}", absent("private_content")),
        A(
            "read world-readable file outside allowlist",
            "fs-read",
            lambda c: f"cat {q(c.public_secret)}",
            absent("public_content"),
        ),
        A(
            "read via symlink in workdir",
            "fs-read",
            lambda c: f"ln -s {q(c.public_secret)} l && cat l",
            absent("public_content"),
        ),
        A(
            "read via /proc/self/root",
            "fs-read",
            lambda c: f"cat /proc/self/root{q(c.public_secret)}",
            absent("public_content"),
        ),
        A("read /etc/shadow", "fs-read", lambda c: "cat /etc/shadow", contains("root:")),
        A("list server home", "fs-read", lambda c: f"ls -a {q(Path.home())} && echo LISTED", contains("LISTED")),
        # filesystem writes
        A(
            "write into world-writable dir outside",
            "fs-write",
            lambda c: f"echo pwned > {q(c.shared_dir)}/new; echo pwned >> {q(c.shared_dir)}/existing",
            shared_untouched,
        ),
        A(
            "hard link to outside file",
            "fs-write",
            lambda c: f"ln {q(c.shared_dir)}/existing h && echo pwned > h",
            shared_untouched,
        ),
        A("chmod server's 0600 key", "fs-write", lambda c: f"chmod 644 {q(c.private_secret)}", mode_kept),
        A(
            "write /proc/sys/kernel/core_pattern",
            "fs-write",
            lambda c: "echo '|/tmp/x' > /proc/sys/kernel/core_pattern && echo WROTE",
            contains("WROTE"),
        ),
        # host processes
        A(
            "see host process",
            "process",
            lambda c: f"grep -l '{c.victim_marker.replace('.', '[.]')}' /proc/[0-9]*/cmdline && echo FOUND",
            contains("FOUND"),
        ),
        A("kill host process", "process", lambda c: f"kill -9 {c.victim.pid}", victim_alive),
        A(
            "kill -9 -1",
            "process",
            lambda c: py("import os\ntry: os.kill(-1, 9)\nexcept OSError as e: print(e)"),
            victim_alive,
        ),
        A(
            "read host process environ",
            "process",
            lambda c: f"cat /proc/{c.victim.pid}/environ",
            absent("victim_secret"),
        ),
        A("ptrace sandbox init (pid 1)", "process", lambda c: py(PTRACE_1), syscall_failed),
        # environment
        A(
            "read server env secret",
            "env",
            lambda c: "env; cat /proc/1/environ /proc/$PPID/environ",
            absent("env_secret"),
        ),
        # network
        A(
            "none: python TCP to host",
            "network",
            lambda c: py(CONNECT, f"127.0.0.1:{c.tcp.sock.getsockname()[1]}"),
            tcp_untouched,
            network="none",
        ),
        A(
            "none: bash /dev/tcp to host",
            "network",
            lambda c: f"bash -c 'cat </dev/tcp/127.0.0.1/{c.tcp.sock.getsockname()[1]}'",
            tcp_untouched,
            network="none",
        ),
        A(
            "none: curl to host",
            "network",
            lambda c: f"curl -sS -m 5 http://127.0.0.1:{c.tcp.sock.getsockname()[1]}/",
            tcp_untouched,
            network="none",
        ),
        A(
            "loopback: python TCP to host",
            "network",
            lambda c: py(CONNECT, f"127.0.0.1:{c.tcp.sock.getsockname()[1]}"),
            tcp_untouched,
        ),
        A(
            "loopback: egress to 1.1.1.1:80",
            "network",
            lambda c: py(CONNECT, "1.1.1.1:80"),
            lambda r, c: ("ERR" in out(r), last_line(r)),
        ),
        A(
            "loopback: host abstract UNIX socket",
            "network",
            lambda c: py(CONNECT, "@" + c.abstract_name),
            lambda r, c: (c.abstract.banner not in out(r), last_line(r)),
        ),
        A(
            "loopback: host pathname UNIX socket",
            "network",
            lambda c: py(CONNECT, str(c.unix_path)),
            lambda r, c: (c.unix.banner not in out(r), last_line(r)),
        ),
        A(
            "none: host pathname UNIX socket",
            "network",
            lambda c: py(CONNECT, str(c.unix_path)),
            lambda r, c: (c.unix.banner not in out(r), last_line(r)),
            network="none",
        ),
        # kernel attack surface
        A("io_uring_setup", "kernel", lambda c: py(io_uring()), syscall_failed),
        A("bpf(BPF_MAP_CREATE)", "kernel", lambda c: py(syscall(321, 0, None, 0, name="bpf")), syscall_failed),
        A("keyctl(session keyring)", "kernel", lambda c: py(syscall(250, 0, -3, 0, name="keyctl")), syscall_failed),
        A("add_key", "kernel", lambda c: py(syscall(248, "user", "k", "x", 1, -2, name="add_key")), syscall_failed),
        A("unshare(CLONE_NEWUSER)", "kernel", lambda c: py(syscall(272, 0x10000000, name="unshare")), syscall_failed),
        A("unshare -Ur (nested userns)", "kernel", lambda c: "unshare -Ur id -u && echo NESTED", contains("NESTED")),
        A(
            "mount tmpfs",
            "kernel",
            lambda c: py(syscall(165, "none", "/tmp", "tmpfs", 0, None, name="mount")),
            syscall_failed,
        ),
        A("ptrace(PTRACE_TRACEME)", "kernel", lambda c: py(syscall(101, 0, 0, 0, 0, name="ptrace")), syscall_failed),
        A("userfaultfd", "kernel", lambda c: py(syscall(323, 1, name="userfaultfd")), syscall_failed),
        A("TIOCSTI (high bits set)", "kernel", lambda c: py(TIOCSTI), syscall_failed),
        A(
            "AF_PACKET raw socket",
            "kernel",
            lambda c: py(
                "import socket\ntry: socket.socket(socket.AF_PACKET, socket.SOCK_RAW); print('OPENED')\n"
                "except OSError as e: print('ERR', e.errno)"
            ),
            contains("OPENED"),
        ),
        A("AF_VSOCK socket (to the VM host)", "kernel", lambda c: py(VSOCK), contains("OPENED")),
        A("full: AF_VSOCK socket", "kernel", lambda c: py(VSOCK), contains("OPENED"), network="full"),
        *(
            A(f"{mode}: every socket family 0..63", "network", lambda c: py(FAMILIES), families_allowed, network=mode)
            for mode in ALLOWED_FAMILIES
        ),
        # privileges
        A("setuid copy of cat", "privilege", lambda c: SETUID_CAT, no_special_bits, workdir=True),
        A("setgid directory", "privilege", lambda c: SETGID_DIR, no_special_bits, workdir=True),
        A("O_CREAT with mode 4755", "privilege", lambda c: py(SETUID_CREATE), no_special_bits, workdir=True),
        A("NoNewPrivs not set", "privilege", lambda c: STATUS, status_field("NoNewPrivs", lambda v: v != "1")),
        A(
            "effective capabilities",
            "privilege",
            lambda c: STATUS,
            status_field("CapEff", lambda v: v != "0000000000000000"),
        ),
        A(
            "bounding capabilities",
            "privilege",
            lambda c: STATUS,
            status_field("CapBnd", lambda v: v != "0000000000000000"),
        ),
        A(
            "su to root",
            "privilege",
            lambda c: "su -c 'id -u' root </dev/null; id -u",
            lambda r, c: ("0" not in str(r.get("stdout", "")).split(), last_line(r)),
        ),
        # resources and process tree
        A("fork bomb", "resource", lambda c: f"f(){{ f|f& }}; f; sleep {c.marker(7)}", fork_bomb_contained, timeout=5),
        A(
            "allocate 8 GiB",
            "resource",
            lambda c: py("b = bytearray(8 << 30); print('ALLOCATED')"),
            contains("ALLOCATED"),
        ),
        A(
            "open 5000 fds",
            "resource",
            lambda c: py("import os\nfds = [os.open('/dev/null', 0) for _ in range(5000)]; print('OPENED', len(fds))"),
            contains("OPENED"),
        ),
        A(
            "300 MiB file (limit 256)",
            "resource",
            lambda c: "head -c 300M /dev/zero > big; test $(stat -c %s big) -gt 268435456 && echo BIGGER",
            contains("BIGGER"),
            timeout=120,
        ),
        A(
            "fill private /tmp",
            "resource",
            # /tmp is the session's: a 64 MiB tmpfs, or on the session's quota filesystem (here 32 MiB).
            lambda c: "head -c 40M /dev/zero > /tmp/a && head -c 40M /dev/zero > /tmp/b && echo FILLED",
            contains("FILLED"),
            timeout=120,
            config="[policy]\nworkdir_quota_mb = 32\n",
        ),
        A(
            "fallocate burst past 5 MiB quota",
            "resource",
            lambda c: py(
                "import os\nfor i in range(3000):\n"
                "    fd = os.open(f'f{i}', os.O_CREAT | os.O_WRONLY, 0o600)\n"
                "    try: os.posix_fallocate(fd, 0, 4 << 20)\n"
                "    except OSError: break\n"
                "    finally: os.close(fd)"
            ),
            quota_bounded,
            workdir=True,
            config="[policy]\nworkdir_quota_mb = 5\n",
        ),
        A(
            "setsid daemon outlives call",
            "process",
            lambda c: f"setsid sh -c 'sleep {c.marker()}' </dev/null >/dev/null 2>&1 & echo started",
            daemon_gone,
        ),
        A("timeout leaves grandchild", "process", lambda c: f"sleep {c.marker()} & wait", daemon_gone, timeout=1),
        A("leaked file descriptors", "fd", lambda c: "ls -l /proc/self/fd", fds_only_stdio),
    ]


# --- running -------------------------------------------------------------------------------------------


def cli_base(spec: str | None) -> list[str]:
    if spec:
        return shlex.split(spec)
    found = shutil.which("hanzo-sandbox-mcp")
    return [found] if found else [sys.executable, "-m", "hanzo_sandbox_mcp"]


def run_attack(attack: Attack, command: str, ctx: Context, base: list[str]) -> tuple[dict[str, Any] | None, str]:
    args = [*base, "run", "--json", "--network", attack.network, "--timeout", str(attack.timeout)]
    workdir = None
    config = None
    if attack.workdir:
        workdir = ctx.workdir()
        args += ["--workdir", str(workdir)]
    if attack.config:
        config = ctx.root / f"config-{uuid.uuid4().hex[:6]}.toml"
        config.write_text(attack.config)
        args += ["--config", str(config)]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["HANZO_ATTACK_SECRET"] = ctx.env_secret
    env.pop("HANZO_SANDBOX", None)
    try:
        proc = subprocess.run(
            [*args, "--", "/bin/sh", "-c", command],
            capture_output=True,
            text=True,
            env=env,
            timeout=attack.timeout + 120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, "the CLI hung"
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        return None, (proc.stderr.strip().splitlines() or ["no output"])[-1][:90]
    if workdir is not None:
        data["_workdir_usage"] = du(workdir)
        data["_workdir"] = str(workdir)
    return data, ""


def du(root: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def flags(prot: dict[str, Any]) -> str:
    ns = ",".join(n[:3] for n in prot.get("namespaces", []))
    parts = [
        "fs" if prot.get("fs_isolated") else "-fs",
        "net" if prot.get("network_isolated") else "-net",
        f"ll{prot.get('landlock_abi')}" if prot.get("landlock_abi") else "-ll",
        "sc" if prot.get("seccomp") else "-sc",
        "nnp" if prot.get("no_new_privs") else "-nnp",
        f"uid{prot.get('uid')}",
        f"ns[{ns}]",
    ]
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run only attacks whose name contains this substring")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    parser.add_argument("--cli", help="how to start the CLI (default: hanzo-sandbox-mcp, else python -m)")
    args = parser.parse_args(argv)
    base = cli_base(args.cli)
    rows: list[dict[str, Any]] = []
    selected = [a for a in attacks() if a.control or not args.only or args.only in a.name]
    with victims() as ctx:
        for attack in selected:
            command = attack.command(ctx)
            tool = command.split()[0]
            if tool in ("curl", "su", "bash", "unshare", "fallocate") and not shutil.which(tool):
                rows.append(
                    {
                        "attack": attack.name,
                        "category": attack.category,
                        "blocked": None,
                        "evidence": f"skipped: {tool} is not installed",
                        "layers": "",
                    }
                )
                continue
            data, failure = run_attack(attack, command, ctx, base)
            if data is None:
                rows.append(
                    {
                        "attack": attack.name,
                        "category": attack.category,
                        "blocked": None,
                        "evidence": f"CLI failed: {failure}",
                        "layers": "",
                        "control": attack.control,
                    }
                )
                continue
            blocked, evidence = attack.blocked(data, ctx)
            rows.append(
                {
                    "attack": attack.name,
                    "category": attack.category,
                    "network": attack.network,
                    "blocked": blocked,
                    "evidence": evidence,
                    "layers": flags(data.get("protection", {})),
                    "control": attack.control,
                }
            )
    controls_ok = all(r["blocked"] is False for r in rows if r.get("control"))
    judged = [r for r in rows if not r.get("control")]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows)
    broken = [r for r in rows if r["blocked"] is None and not str(r["evidence"]).startswith("skipped")]
    if not controls_ok or broken:
        print("\nthe suite could not judge: a positive control failed or the CLI did not run", file=sys.stderr)
        return 2
    succeeded = [r for r in judged if r["blocked"] is False]
    print(f"\n{len(judged) - len(succeeded)}/{len(judged)} attacks blocked", file=sys.stderr)
    return 1 if succeeded else 0


def print_table(rows: list[dict[str, Any]]) -> None:
    header = ("attack", "net", "blocked", "evidence", "protection")
    table = [header]
    for r in rows:
        if r.get("control"):
            verdict = "control ok" if r["blocked"] is False else "CONTROL FAIL"
        else:
            verdict = {True: "yes", False: "NO", None: "?"}[r["blocked"]]
        table.append((r["attack"], r.get("network", ""), verdict, str(r["evidence"]), r["layers"]))
    widths = [min(max(len(row[i]) for row in table), 48 if i == 3 else 60) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(cell[: widths[j]].ljust(widths[j]) for j, cell in enumerate(row)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    raise SystemExit(main())
