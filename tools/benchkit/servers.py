"""The servers a benchmark talks to: their configuration files, the real server over stdio or streamable HTTP,
the unsandboxed baseline, and the memory (PSS) of a process tree.

Every server is a real `python -m hanzo_sandbox_mcp serve` child with an explicit environment and its own
config file in the run's temporary directory. An HTTP server is stopped with SIGTERM (so that it unmounts its
workdir filesystems and removes its sessions root) and killed only if it has not exited within a bound.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import anyio.abc
from mcp import StdioServerParameters
from pydantic import ValidationError

from hanzo_sandbox_mcp.config import Settings, load_settings

__all__ = [
    "REPO_ROOT",
    "Config",
    "Scalar",
    "baseline_params",
    "http_server",
    "pool_size_known",
    "server_params",
    "settings_of",
    "subreaper",
    "tree_pss_kib",
    "write_config",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
BASELINE_SERVER = Path(__file__).resolve().with_name("baseline_server.py")
#: Debian's interpreter: every uid can execute it (a pyenv one under a mode-700 /root is out of reach).
SYSTEM_PYTHON = "/usr/bin/python3"
STOP_WAIT_S = 30.0
SERVE_WAIT_S = 60.0

Scalar = str | int | float | bool
Config = dict[str, dict[str, Scalar]]
"""A configuration as TOML tables of scalars: {"sessions": {"max_sessions": 80}}."""


def _toml_scalar(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _base_config() -> Config:
    execution: dict[str, Scalar] = {"default_timeout_s": 60.0}
    if os.access(SYSTEM_PYTHON, os.X_OK):
        execution["python"] = SYSTEM_PYTHON
    return {"exec": execution}


def write_config(directory: Path, name: str, overrides: Config) -> Path:
    """A config file: quiet logs, a run_python interpreter every uid reaches, then `overrides` (per table)."""
    tables = _base_config()
    for table, values in overrides.items():
        tables[table] = {**tables.get(table, {}), **values}
    lines = ['log_level = "WARNING"']
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {_toml_scalar(value)}" for key, value in values.items())
    path = directory / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    settings_of(path)  # a config this code rejects fails here, with the config error
    return path


def pool_size_known() -> bool:
    """True when this code knows `[sessions] pool_size` (today's code forbids unknown keys)."""
    try:
        Settings.model_validate({"sessions": {"pool_size": 0}})
    except ValidationError:
        return False
    return True


def _child_env(directory: Path) -> dict[str, str]:
    home = directory / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(directory / "xdg"),
        "PYTHONPATH": str(REPO_ROOT),
        "LANG": "C.UTF-8",
    }
    if "HANZO_SANDBOX" in os.environ:
        env["HANZO_SANDBOX"] = os.environ["HANZO_SANDBOX"]
    return env


def _serve_argv(config: Path, *transport: str) -> list[str]:
    return ["-m", "hanzo_sandbox_mcp", "--config", str(config), "serve", *transport]


def server_params(config: Path) -> StdioServerParameters:
    """The real server over stdio with `config`."""
    return StdioServerParameters(
        command=sys.executable, args=_serve_argv(config), env=_child_env(config.parent), cwd=str(REPO_ROOT)
    )


def baseline_params(directory: Path) -> StdioServerParameters:
    """The unsandboxed baseline server over stdio."""
    return StdioServerParameters(command=sys.executable, args=[str(BASELINE_SERVER)], env=_child_env(directory))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _stop(process: anyio.abc.Process) -> None:
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with anyio.move_on_after(STOP_WAIT_S):
                await process.wait()
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


@contextlib.asynccontextmanager
async def http_server(config: Path) -> AsyncIterator[str]:
    """The real server on streamable HTTP on a free loopback port; yields its URL once it accepts connections."""
    port = _free_port()
    stderr_path = config.with_suffix(".stderr")
    with stderr_path.open("wb") as stderr:
        process = await anyio.open_process(
            [sys.executable, *_serve_argv(config, "--transport", "http", "--host", "127.0.0.1", "--port", str(port))],
            env=_child_env(config.parent),
            cwd=str(REPO_ROOT),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        with anyio.fail_after(SERVE_WAIT_S):
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"the HTTP server exited: {stderr_path.read_text(errors='replace')[-2000:]}")
                try:
                    stream = await anyio.connect_tcp("127.0.0.1", port)
                except OSError:
                    await anyio.sleep(0.1)
                    continue
                await stream.aclose()
                break
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        await _stop(process)


# -- memory ----------------------------------------------------------------------------------------------


def _parents() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue  # exited meanwhile
        # The command name in parentheses may hold spaces and ')': the fields after the last ')' are fixed.
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _pss_kib(pid: int) -> int | None:
    """PSS of one process in KiB; 0 for one that has exited or is a zombie; None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return 0
    except PermissionError:
        return None
    except ProcessLookupError:
        return 0
    return 0


def tree_pss_kib(root: int, *, include_root: bool = True) -> tuple[int, int, int]:
    """(PSS in KiB, processes counted, processes unreadable) over `root` and all its descendants."""
    children = _parents()
    stack = [root] if include_root else list(children.get(root, []))
    total = counted = unreadable = 0
    seen: set[int] = set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, []))
        pss = _pss_kib(pid)
        if pss is None:
            unreadable += 1
            continue
        total += pss
        counted += 1
    return total, counted, unreadable


_PR_SET_CHILD_SUBREAPER = 36


@contextlib.contextmanager
def subreaper() -> Iterator[bool]:
    """Make this process the subreaper of its descendants while inside, so that a process the server detaches
    (double fork, setsid) is re-parented here rather than to init and still counts as the server's. Yields
    whether that worked (Linux only)."""
    libc = ctypes.CDLL(None, use_errno=True)
    enabled = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield enabled
    finally:
        if enabled:
            libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def settings_of(config: Path) -> Settings:
    """The settings a server started with `config` would use (for an in-process `SandboxService`)."""
    return load_settings(config, env=_child_env(config.parent))
