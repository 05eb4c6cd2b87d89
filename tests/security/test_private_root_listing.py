"""The private root can be listed (`ls /`, `ls /etc`); the host's root never can, under Landlock alone.

Landlock grants directory reading on `/` only when the launcher really built the private root, whose
contents are the allowlist anyway. With the mount namespace off (Landlock alone) that grant would make
the host's `/` listable, with every user's and session's directory names: there it must stay denied,
while the same listing with Landlock off too succeeds (the positive control: same uid, the layer off).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.launcher_run import LauncherRun, run_launcher

from hanzo_sandbox_mcp.launch_plan import LaunchPlan
from hanzo_sandbox_mcp.linux.sandbox import LinuxSandbox
from hanzo_sandbox_mcp.policy import SandboxPolicy

pytestmark = pytest.mark.skipif(os.uname().sysname != "Linux", reason="the Linux launcher")


def _plan(workdir: Path, script: str) -> LaunchPlan:
    policy = SandboxPolicy().with_workdir(workdir)
    return LinuxSandbox().harden(["/bin/sh", "-c", script], policy, env={"PATH": "/usr/bin:/bin"})


def _run(plan: LaunchPlan) -> LauncherRun:
    run = run_launcher(plan)
    assert run.report.rejected == 0 and run.report.exit is not None, run
    return run


def test_the_private_root_and_its_etc_are_listable(workdir: Path) -> None:
    run = _run(_plan(workdir, "ls /; echo ---; ls /etc"))
    assert run.report.rootfs and run.report.landlock_abi is not None, run.report
    assert run.report.exit is not None and run.report.exit["exit_code"] == 0, run
    root, etc = run.stdout.split("---\n")
    assert {"usr", "etc", "proc", "tmp", "dev"} <= set(root.split()), root
    assert {"passwd", "ssl", "hosts"} <= set(etc.split()), etc
    assert "shadow" not in etc.split()  # only the allowlist is there to be listed


def test_listing_grants_no_file_access(workdir: Path) -> None:
    """Directory reading only: the private root's own directories still take no new file."""
    run = _run(_plan(workdir, "touch /hanzo-new || touch /etc/hanzo-new || echo refused"))
    assert run.stdout == "refused\n", run
    assert run.report.rootfs


def test_landlock_alone_keeps_the_host_root_unlistable(workdir: Path) -> None:
    assert os.listdir("/"), "precondition: the host has a listable /"
    plan = _plan(workdir, "ls / >/dev/null && echo listed")
    alone = plan.replace(namespaces=tuple(n for n in plan.namespaces if n != "mount"), root=None)
    # Positive control: the same listing, same uid, Landlock off too: the host's / is listable there.
    control = _run(alone.replace(landlock=None))
    assert not control.report.rootfs and control.report.landlock_abi is None
    assert control.stdout == "listed\n", control
    denied = _run(alone)
    assert not denied.report.rootfs and denied.report.landlock_abi is not None, denied.report
    assert denied.stdout == "" and "Permission denied" in denied.stderr, denied
