"""Fixtures for the attack tests: run a command through the real sandbox (library or CLI).

`sandbox_run(cmd, *, network, timeout_s, workdir, policy_overrides, ...)` calls
`hanzo_sandbox_mcp.runner.run_sandboxed` with `sandbox.detect()` and a policy bound to a fresh workdir;
`cli_run(argv, ...)` runs `python -m hanzo_sandbox_mcp run --json ...` and parses the ExecResult JSON.

`layered_run(keep, cmd, ...)` runs the same way through `tests/support/layers.PlanEditingSandbox`, with every
layer not named in `keep` switched off: the single-layer tests and their controls.

Workdirs live under a base directory every uid may traverse (0711), each one owned by the uid the command
runs as (nobody when pytest is root, else the test user), mode 0700: what a session workdir looks like.
Places for the "server user's secrets" live outside that base, in /var/tmp. The private root has no /var,
so with every layer on they are hidden (ENOENT) before Landlock is ever asked; the single-layer tests
switch the private root off to make Landlock (or the uid drop) the only thing that refuses them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

if str(Path(__file__).resolve().parents[2]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _security_support import (
    IS_ROOT,
    NOBODY,
    REPO_ROOT,
    SANDBOX_PYTHON,
    SETUID_ZERO,
    Secret,
    Victim,
    make_workdir,
    make_world_readable_secret,
    run_as_command_uid,
    run_in_sandbox,
    start_victim,
)
from support.layers import PlanEditingSandbox, keep_only

from hanzo_sandbox_mcp.sandbox import detect


@pytest.fixture(scope="session", autouse=True)
def _sandbox_python_exists() -> None:
    if not os.access(SANDBOX_PYTHON, os.X_OK):
        pytest.skip(f"{SANDBOX_PYTHON} is missing: the probes need an interpreter every uid can execute")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def sandbox() -> Any:
    return detect()


@pytest.fixture(scope="session")
def work_root() -> Iterator[Path]:
    """Parent of every workdir: traversable (not listable) by the sandbox uid, like a sessions root."""
    base = os.environ.get("HANZO_SEC_WORK_ROOT") or None
    root = Path(tempfile.mkdtemp(prefix="hanzo-sec-work-", dir=base))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def workdir(work_root: Path) -> Path:
    """A fresh session-like workdir for this test, writable by the command's uid."""
    return make_workdir(work_root)


@pytest.fixture
def new_workdir(work_root: Path) -> Callable[[], Path]:
    return lambda: make_workdir(work_root)


@pytest.fixture(scope="session")
def outside_root() -> Iterator[Path]:
    """A directory outside the workdir (and outside the private root) where the server user's data lives."""
    root = Path(tempfile.mkdtemp(prefix="hanzo-sec-outside-", dir="/var/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def private_secret(outside_root: Path) -> Secret:
    """The server user's secret: 0600 file in a 0700 directory owned by the server uid (like ~/.ssh)."""
    d = outside_root / f"private-{uuid.uuid4().hex[:8]}"
    d.mkdir(mode=0o700)
    content = f"PRIVATE-SECRET-{uuid.uuid4().hex}"
    path = d / "id_ed25519"
    path.write_text(content + "\n")
    path.chmod(0o600)
    return Secret(path, content)


@pytest.fixture
def world_readable_secret(outside_root: Path) -> Secret:
    """A 0644 file in a 0755 directory outside the allowlist: DAC allows the read, so only the private root
    (it hides the path) or Landlock (it refuses it) stops it."""
    return make_world_readable_secret(outside_root)


@pytest.fixture
def world_writable_dir(outside_root: Path) -> Path:
    """A 1777 directory outside the workdir: only the private root or Landlock can stop a write there."""
    d = outside_root / f"shared-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    d.chmod(0o1777)
    return d


RunFn = Callable[..., Any]


@pytest.fixture
def sandbox_run(sandbox: Any, workdir: Path) -> RunFn:
    """Run `cmd` with `/bin/sh -c` (or `argv=`) through `run_sandboxed`; returns the ExecResult.

    Keywords: network="loopback", timeout_s=20, workdir=<this test's>, policy_overrides={}, argv, env,
    stdin, cwd.
    """

    def run(cmd: str | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("workdir", workdir)
        return run_in_sandbox(sandbox, cmd, **kwargs)

    return run


@pytest.fixture
def layered_run(sandbox: Any, workdir: Path) -> Callable[..., Any]:
    """`layered_run(keep, cmd, **sandbox_run_keywords)`: the real sandbox with only the layers in `keep` on
    (names from `tests/support/layers.LAYERS`)."""

    def run(keep: Iterable[str], cmd: str | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("workdir", workdir)
        return run_in_sandbox(PlanEditingSandbox(sandbox, keep_only(keep)), cmd, **kwargs)

    return run


@pytest.fixture
def victims() -> Iterator[Callable[[], Victim]]:
    """`victims()` starts a host `sleep` with the command's uid (nobody when pytest is root) and a secret in
    its environment; every one is killed at teardown."""
    started: list[Victim] = []

    def start() -> Victim:
        started.append(start_victim())
        return started[-1]

    yield start
    for victim in started:
        victim.proc.kill()
        victim.proc.wait(timeout=10)


@pytest.fixture
def setuid_root_id(workdir: Path) -> Path:
    """A setuid-root copy of `id` in the workdir; skips unless it really raises euid outside the sandbox."""
    if not IS_ROOT:
        pytest.skip("creating a setuid-root binary needs root")
    suid = workdir / "suid-id"
    shutil.copy2("/usr/bin/id", suid)
    os.chown(suid, 0, 0)
    suid.chmod(0o4755)
    outside = run_as_command_uid([str(suid)])
    if "euid=0" not in outside.stdout:
        pytest.skip(f"setuid bits are not honoured on {workdir}'s filesystem (nosuid?): {outside.stdout}")
    return suid


@pytest.fixture
def setuid_capable_python(workdir: Path) -> Path:
    """A python copy with the file capability cap_setuid+ep, owned by nobody, in the workdir; skips unless
    an unsandboxed nobody really gets uid 0 from it."""
    if not IS_ROOT:
        pytest.skip("file capabilities need root to set")
    setcap = shutil.which("setcap")
    if setcap is None:
        pytest.skip("setcap (libcap2-bin) is not installed")
    target = workdir / "py-cap"
    shutil.copy2(os.path.realpath(SANDBOX_PYTHON), target)
    os.chown(target, NOBODY, NOBODY)
    proc = subprocess.run([setcap, "cap_setuid+ep", str(target)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot set file capabilities here: {proc.stderr.strip()}")
    outside = run_as_command_uid([str(target), "-I", "-S", "-c", SETUID_ZERO])
    if "ROOT 0" not in outside.stdout:
        pytest.skip(f"file capabilities are not honoured on {workdir}'s filesystem: {outside}")
    return target


@dataclass
class CliResult:
    proc: subprocess.CompletedProcess[str]
    data: dict[str, Any] | None

    @property
    def protection(self) -> dict[str, Any]:
        assert self.data is not None, f"no JSON: {self.proc.stdout!r} {self.proc.stderr!r}"
        return dict(self.data["protection"])


def cli_command() -> list[str]:
    """How to start the CLI from the test interpreter (the checkout on PYTHONPATH)."""
    return [sys.executable, "-m", "hanzo_sandbox_mcp"]


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("HANZO_SANDBOX", None)
    env.update(extra or {})
    return env


@pytest.fixture
def cli_run(workdir: Path) -> Callable[..., CliResult]:
    """`python -m hanzo_sandbox_mcp run --json [OPTIONS] -- ARGV`; parses the JSON printed on stdout."""

    def run(
        argv: list[str],
        *,
        options: list[str] | None = None,
        network: str | None = None,
        timeout_s: float | None = None,
        workdir: Path | None = None,
        env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
        use_workdir: bool = True,
    ) -> CliResult:
        opts = list(options or [])
        if network is not None:
            opts += ["--network", network]
        if timeout_s is not None:
            opts += ["--timeout", str(timeout_s)]
        if use_workdir:
            opts += ["--workdir", str(workdir if workdir is not None else default_workdir)]
        full = [*(prefix or []), *cli_command(), "run", "--json", *opts, "--", *argv]
        proc = subprocess.run(
            full,
            capture_output=True,
            text=True,
            env=cli_env(env),
            cwd=str(REPO_ROOT),
            timeout=(timeout_s or 60) + 90,
            check=False,
        )
        data = None
        text = proc.stdout.strip()
        if text:
            try:
                data = json.loads(text)
            except ValueError:
                start = text.find("{")
                if start >= 0:
                    try:
                        data = json.loads(text[start:])
                    except ValueError:
                        data = None
        return CliResult(proc, data)

    default_workdir = workdir
    return run
