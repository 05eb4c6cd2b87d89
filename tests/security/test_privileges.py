"""Privilege escalation: capabilities, host uid 0, setuid binaries, file capabilities, supplementary groups.

The command runs with no_new_privs, an empty bounding set, a seccomp filter, and a non-zero host uid (nobody
when the server is root). Each check has a control that can fail: an unsandboxed process of the command's
uid shows the same fields unset, the same setuid binary raises privileges outside, and a file the command
creates is owned on the host by the uid it claims. Each layer alone: test_single_layer_privilege.py.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _security_support import (
    IS_ROOT,
    SETUID_ZERO,
    ZERO_CAPS,
    assert_protection,
    expected_command_uid,
    run_as_command_uid,
    status_fields,
)


def test_sandbox_sets_no_new_privs_and_drops_every_capability(sandbox_run):
    result = sandbox_run("cat /proc/self/status")
    assert result.exit_code == 0, result
    status = status_fields(result.stdout)
    assert status["NoNewPrivs"] == "1", status
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert status[cap] == ZERO_CAPS, f"{cap} = {status[cap]}"
    assert status["CapBnd"] == ZERO_CAPS, f"bounding set not emptied: CapBnd = {status['CapBnd']}"
    assert status["Seccomp"] == "2", f"no seccomp filter on the command: Seccomp = {status['Seccomp']}"
    assert_protection(result, no_new_privs=True, seccomp=True)


def test_unsandboxed_process_of_the_command_uid_has_what_the_sandbox_removes_positive_control():
    """The same `cat /proc/self/status`, as the command's uid, outside the sandbox: no_new_privs unset, no
    seccomp filter, a full bounding set. So the zeros above are the sandbox's doing, not the uid's."""
    own = status_fields(Path("/proc/self/status").read_text())
    if own["NoNewPrivs"] != "0" or own["Seccomp"] != "0":
        pytest.skip(f"pytest itself runs under no_new_privs or seccomp (a container?): {own['NoNewPrivs']=}")
    outside = run_as_command_uid(["cat", "/proc/self/status"])
    assert outside.returncode == 0, outside
    status = status_fields(outside.stdout)
    assert status["NoNewPrivs"] == "0", status
    assert status["Seccomp"] == "0", status
    assert status["CapBnd"] != ZERO_CAPS, status


def test_sandbox_command_never_runs_as_host_root(sandbox_run, workdir):
    """The file the command creates is owned, on the host, by the uid the report names, and that uid is
    never 0 (as root: nobody). `id -u` inside a user namespace would prove nothing: uid 0 there can be any
    host uid. The control (uid drop off: the file is root's) is in test_single_layer_privilege.py."""
    result = sandbox_run("touch made-by-command && id -u")
    assert result.exit_code == 0, result
    owner = (workdir / "made-by-command").stat()
    assert (owner.st_uid, owner.st_gid) != (0, 0), f"the command created a file as host root: {owner}"
    assert owner.st_uid == expected_command_uid(), owner
    assert_protection(result, uid=owner.st_uid, gid=owner.st_gid)


def test_sandbox_blocks_setuid_root_binary_in_workdir(sandbox_run, setuid_root_id):
    """A setuid-root copy of `id` planted where the command can execute it (the fixture's control: run as
    nobody outside the sandbox, it reports euid 0)."""
    result = sandbox_run(f"./{setuid_root_id.name}; ./{setuid_root_id.name} -u")
    assert result.exit_code == 0, result
    assert "euid=0" not in result.stdout, f"the setuid bit raised privileges inside: {result}"
    assert result.stdout.splitlines()[-1].strip() == str(expected_command_uid()), result
    assert_protection(result, no_new_privs=True)


def test_sandbox_blocks_file_capabilities(sandbox_run, setuid_capable_python):
    """The cap_setuid+ep python (the fixture's control: outside, as nobody, it becomes uid 0) must not get
    the capability at exec: no_new_privs and the empty bounding set."""
    result = sandbox_run(f"./{setuid_capable_python.name} -I -S -c '{SETUID_ZERO}'")
    assert "ROOT" not in result.stdout, result
    # EPERM, or EINVAL: uid 0 is not even mapped in the command's user namespace.
    assert "ERR 1" in result.stdout or "ERR 22" in result.stdout, result


@contextlib.contextmanager
def _supplementary_group(gid: int) -> Iterator[None]:
    previous = os.getgroups()
    os.setgroups([*previous, gid])
    try:
        yield
    finally:
        os.setgroups(previous)


def test_sandbox_drops_supplementary_groups(sandbox_run):
    """The root server's groups (root, disk, shadow, docker...) must not reach the command. The server is
    given an extra group for the test; the control shows an unsandboxed child inherits it."""
    if not IS_ROOT:
        pytest.skip("an unprivileged server cannot change its own groups (and setgroups is denied in its user ns)")
    marker_gid = 4242
    with _supplementary_group(marker_gid):
        inherited = subprocess.run(["id", "-G"], capture_output=True, text=True, check=True, timeout=30)
        assert str(marker_gid) in inherited.stdout.split(), f"control: a child should inherit the group: {inherited}"
        result = sandbox_run("grep '^Groups' /proc/self/status; id -G")
    assert result.exit_code == 0, result
    line = next(x for x in result.stdout.splitlines() if x.startswith("Groups:"))
    assert line.split()[1:] == [], f"supplementary groups kept: {line}"
