"""Positive controls for attack probes: the same code, as the same uid, without the sandbox.

An attack that fails inside the sandbox proves something only when the same attack, run by the same uid
outside it, does not fail the same way. `run_as_command_uid` runs a probe unsandboxed as the uid a
sandboxed command gets (nobody under a root test run, else the test's own uid), with no supplementary
groups. Where the kernel itself answers EPERM to that uid (a capability check before the arguments), the
`AS_NAMESPACE_ROOT` prefix makes the probe root of fresh user, mount, pid, net, ipc and uts namespaces:
the capabilities a namespace can grant are then held, and what is still EPERM needs the initial namespace.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

__all__ = [
    "AS_NAMESPACE_ROOT",
    "CONTROL_PYTHON",
    "command_uid",
    "python_as_command_uid",
    "run_as",
    "run_as_command_uid",
]

_NOBODY = 65534
_IS_ROOT = os.geteuid() == 0
#: An interpreter every uid can execute (never a pyenv one under a mode-700 /root).
CONTROL_PYTHON = "/usr/bin/python3"
AS_NAMESPACE_ROOT = ("unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "--net", "--ipc", "--uts")


def command_uid() -> int:
    """The uid a sandboxed command runs as: nobody when the tests run as root, else the tests' own uid."""
    return _NOBODY if _IS_ROOT else os.getuid()


def run_as_command_uid(argv: Sequence[str], *, cwd: str = "/", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`argv` unsandboxed, as `command_uid()` with no supplementary groups, in `cwd` (which that uid must reach)."""
    return run_as(argv, _NOBODY if _IS_ROOT else None, cwd=cwd, timeout=timeout)


def run_as(
    argv: Sequence[str], uid: int | None, *, cwd: str = "/", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`argv` unsandboxed as `uid` (its gid the same number, no supplementary groups; needs root), or as
    the tests' own uid when `uid` is None or already ours."""
    ids = {"user": uid, "group": uid, "extra_groups": []} if uid is not None and uid != os.geteuid() else {}
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        **ids,  # type: ignore[arg-type]
    )


def python_as_command_uid(
    code: str, *args: str, namespace_root: bool = False, cwd: str = "/"
) -> subprocess.CompletedProcess[str]:
    """`code` in `python3 -I -S` as `command_uid()`; with `namespace_root`, as root of fresh namespaces."""
    prefix = AS_NAMESPACE_ROOT if namespace_root else ()
    return run_as_command_uid([*prefix, CONTROL_PYTHON, "-I", "-S", "-c", code, *args], cwd=cwd)
