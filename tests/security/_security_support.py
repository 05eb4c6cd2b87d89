"""Shared helpers for the attack tests: host-side probes, process scans, listeners, assertions.

The attack commands run as `/bin/sh -c CMD` inside the sandbox. Python inside the sandbox is always called
by its absolute path (`SANDBOX_PYTHON`): the server's PATH may start with an interpreter under /root (pyenv),
which uid 65534 cannot execute, and "Permission denied" from *that* would look like a blocked attack.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from support.controls import run_as_command_uid
from support.network import BannerListener
from support.processes import kill_marker, marker_pids, unique_sleep, wait_marker_gone

__all__ = [
    "IS_ROOT",
    "NOBODY",
    "NO_UID_DROP",
    "REPO_ROOT",
    "SANDBOX_PYTHON",
    "SETUID_ZERO",
    "ZERO_CAPS",
    "HostTcpListener",
    "Secret",
    "Victim",
    "assert_blocked_output",
    "assert_fs_blocked",
    "assert_protection",
    "command_uid_kwargs",
    "expected_command_uid",
    "host_probe",
    "json_lines",
    "kill_marker",
    "make_workdir",
    "make_world_readable_secret",
    "marker_pids",
    "py",
    "run_as_command_uid",
    "run_in_sandbox",
    "start_victim",
    "status_fields",
    "unique_sleep",
    "wait_marker_gone",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0
NOBODY = 65534
#: An interpreter every uid can execute (Debian's); never the pyenv one under /root.
SANDBOX_PYTHON = "/usr/bin/python3"

#: How a path outside the private root looks from inside: it does not exist.
HIDDEN = ("No such file or directory", "Directory nonexistent", "can't cd to", "does not exist")
#: Landlock (or DAC) refusing a path that is visible.
DENIED = ("Permission denied",)
#: A read-only bind of the private root.
READ_ONLY = ("Read-only file system",)
#: Any filesystem refusal that is a real block (never "not found" for a command, never a syntax error).
FS_BLOCKED = (*HIDDEN, *DENIED, *READ_ONLY, "Invalid cross-device link", "Operation not permitted")


#: Why the uid-drop tests skip for an unprivileged server.
NO_UID_DROP = "the uid drop exists only for a root server (an unprivileged server's commands keep its uid)"


ZERO_CAPS = "0000000000000000"
SETUID_ZERO = 'import os\ntry: os.setuid(0); print("ROOT", os.getuid())\nexcept OSError as e: print("ERR", e.errno)'


def status_fields(text: str) -> dict[str, str]:
    """`/proc/<pid>/status` as a mapping."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


@dataclasses.dataclass(frozen=True)
class Secret:
    path: Path
    content: str


def make_world_readable_secret(parent: Path) -> Secret:
    """A 0644 `credentials` file in a fresh 0755 directory under `parent`, holding a unique secret."""
    d = parent / f"public-{uuid.uuid4().hex[:8]}"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    content = f"WORLD-READABLE-SECRET-{uuid.uuid4().hex}"
    path = d / "credentials"
    path.write_text(content + "\n")
    path.chmod(0o644)
    return Secret(path, content)


def expected_command_uid() -> int:
    """The host uid a sandboxed command runs as: nobody when the server is root, else the server's uid."""
    return NOBODY if IS_ROOT else os.getuid()


def py(code: str, *args: str) -> str:
    """A shell fragment running `code` with the sandbox-safe interpreter (isolated mode, no site)."""
    quoted = " ".join(shlex.quote(a) for a in args)
    return f"{SANDBOX_PYTHON} -I -S -c {shlex.quote(code)} {quoted}".rstrip()


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` that parses as a JSON object (probes print one object per line)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def host_probe(code: str, *, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run the same probe code on the host, unsandboxed, as pytest's uid."""
    return subprocess.run(
        [SANDBOX_PYTHON, "-I", "-S", "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


#: Output that means the attack never got as far as the kernel: a missing tool, a shell or Python typo.
WRONG_REASONS = ("command not found", ": not found", "Syntax error", "syntax error", "SyntaxError", "NameError")


def assert_blocked_output(result: Any, *, secret: str | None = None, reasons: tuple[str, ...] = DENIED) -> None:
    """The secret did not leak and the command failed for one of `reasons`, not for a wrong one (a typo
    or a missing tool, which would make any attack look blocked)."""
    combined = result.stdout + result.stderr
    if secret is not None:
        assert secret not in combined, f"secret leaked: stdout={result.stdout!r} stderr={result.stderr!r}"
    wrong = [w for w in WRONG_REASONS if w in combined]
    assert not wrong, f"the command failed for the wrong reason ({wrong}): {combined!r}"
    assert any(r in combined for r in reasons), (
        f"expected one of {reasons} in output; exit={result.exit_code} "
        f"stdout={result.stdout!r} stderr={result.stderr!r} error={result.error!r}"
    )


def make_workdir(parent: Path) -> Path:
    """A session-like workdir: mode 0700, owned by the uid the command runs as."""
    path = parent / f"w-{uuid.uuid4().hex[:12]}"
    path.mkdir(mode=0o700)
    if IS_ROOT:
        os.chown(path, expected_command_uid(), expected_command_uid())
    return path


# --- running -------------------------------------------------------------------------------------------

#: Output caps raised for tests that list /proc or fds.
OUTPUT_CAP = 256 * 1024


def run_in_sandbox(
    sandbox: Any,
    cmd: str | None = None,
    *,
    workdir: Path,
    network: str = "loopback",
    timeout_s: float = 20,
    policy_overrides: dict[str, Any] | None = None,
    argv: list[str] | None = None,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    cwd: Path | None = None,
) -> Any:
    """`run_sandboxed` from synchronous test code: `/bin/sh -c cmd` (or `argv`) under a fresh policy."""
    import anyio

    from hanzo_sandbox_mcp import runner
    from hanzo_sandbox_mcp.config import OutputSettings
    from hanzo_sandbox_mcp.policy import SandboxPolicy

    policy = SandboxPolicy(network=network, **(policy_overrides or {})).with_workdir(workdir)
    command = argv if argv is not None else ["/bin/sh", "-c", cmd or ""]
    output = OutputSettings(max_stdout_bytes=OUTPUT_CAP, max_stderr_bytes=OUTPUT_CAP)

    async def go() -> Any:
        # Hang guard only: the runner's own timeout must fire long before this one.
        with anyio.fail_after(timeout_s + 90):
            return await runner.run_sandboxed(
                sandbox, policy, command, cwd=cwd, stdin=stdin, timeout_s=timeout_s, output=output, env=env
            )

    return anyio.run(go)


def assert_fs_blocked(result: Any, *, secret: str | None = None, reasons: tuple[str, ...] = FS_BLOCKED) -> None:
    """A filesystem attack failed with a filesystem refusal, and the layer that explains the refusal is
    reported: a hidden path needs the private root, EACCES needs Landlock (or the uid drop), EROFS the
    private root's read-only binds."""
    assert_blocked_output(result, secret=secret, reasons=reasons)
    text = result.stdout + result.stderr
    prot = result.protection
    assert prot.fs_isolated, f"fs_isolated is False: {prot}"
    if any(h in text for h in HIDDEN) or any(r in text for r in READ_ONLY):
        assert prot.private_root, f"a path was hidden or read-only, but private_root is not reported: {prot}"
    if any(d in text for d in DENIED):
        uid_drop = prot.uid is not None and prot.uid != os.getuid()
        assert (prot.landlock_abi or 0) >= 1 or uid_drop, f"EACCES without Landlock or a uid drop: {prot}"
    assert (prot.landlock_abi or 0) >= 1, f"Landlock is not in force: {prot}"


# --- processes -------------------------------------------------------------------------------------------


# --- network ---------------------------------------------------------------------------------------------


class HostTcpListener(BannerListener):
    """A TCP listener on the host (a context manager) that records every accepted connection."""

    def __init__(self, host: str = "127.0.0.1", family: int = socket.AF_INET) -> None:
        super().__init__(family, (host, 0))
        self.host = host
        self.port = self.sock.getsockname()[1]

    def __enter__(self) -> HostTcpListener:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def host_can_connect(self) -> bool:
        """Positive control: the listener really answers from the host."""
        before = self.accepted
        with socket.create_connection((self.host, self.port), timeout=5) as conn:
            data = conn.recv(200)
        deadline = time.monotonic() + 5
        while self.accepted == before and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.banner.encode() in data


def command_uid_kwargs() -> dict[str, Any]:
    """`subprocess` keywords that start a host process with the sandboxed command's uid (unsandboxed):
    the positive controls run the same attack as the same uid, outside the sandbox."""
    if not IS_ROOT:
        return {}
    return {"user": NOBODY, "group": NOBODY, "extra_groups": []}


@dataclasses.dataclass(frozen=True)
class Victim:
    """A host `sleep` with the sandboxed command's uid and a secret in its environment."""

    proc: subprocess.Popen[bytes]
    marker: str
    secret: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_victim() -> Victim:
    """Start a victim and wait (bounded) until it has exec'd `sleep`; the caller kills it."""
    marker = unique_sleep()
    secret = f"VICTIM-ENV-SECRET-{uuid.uuid4().hex}"
    proc = subprocess.Popen(
        ["sleep", marker],
        stdin=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "VICTIM_SECRET": secret},
        **command_uid_kwargs(),
    )
    deadline = time.monotonic() + 10
    while proc.pid not in marker_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.02)  # its cmdline is empty until the exec
    if proc.pid not in marker_pids(marker):
        proc.kill()
        proc.wait(timeout=10)
        raise AssertionError(f"the victim {marker} never started")
    return Victim(proc, marker, secret)


def assert_protection(result: Any, **expected: Any) -> None:
    """Compare fields of `result.protection` (ExecResult or CLI dict) with `expected`, with context."""
    prot = result.protection if isinstance(result.protection, dict) else result.protection.model_dump()
    for key, want in expected.items():
        got = prot.get(key)
        assert got == want, f"protection.{key} is {got!r}, expected {want!r}; full report: {prot}"
