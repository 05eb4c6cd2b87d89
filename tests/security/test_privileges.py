"""Privilege escalation: capabilities, uid 0, setuid binaries, setuid(2) itself.

The command runs with no_new_privs, an empty capability set (effective, permitted, ambient and bounding)
and a non-zero host uid (nobody when the server is root). A setuid-root binary must not raise it: the
positive control shows the same binary does raise privileges when run as nobody outside the sandbox.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from _security_support import IS_ROOT, NOBODY, assert_protection, expected_command_uid, py

ZERO_CAPS = "0000000000000000"


def _status_fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def test_sandbox_sets_no_new_privs_and_drops_every_capability(sandbox_run):
    result = sandbox_run("cat /proc/self/status")
    assert result.exit_code == 0, result
    status = _status_fields(result.stdout)
    assert status["NoNewPrivs"] == "1", status
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert status[cap] == ZERO_CAPS, f"{cap} = {status[cap]}"
    assert status["CapBnd"] == ZERO_CAPS, f"bounding set not emptied: CapBnd = {status['CapBnd']}"
    assert status["Seccomp"] == "2", f"no seccomp filter on the command: Seccomp = {status['Seccomp']}"
    assert_protection(result, no_new_privs=True, seccomp=True)


def test_sandbox_command_never_runs_as_host_root(sandbox_run):
    """The host uid (protection.uid, and uid_map's outside column) is never 0; as root it is nobody."""
    result = sandbox_run("id -u; id -g; cat /proc/self/uid_map; cat /proc/self/gid_map")
    assert result.exit_code == 0, result
    lines = result.stdout.split()
    inside_uid = int(lines[0])
    assert inside_uid != 0, result.stdout
    uid_map = result.stdout.splitlines()[2].split()
    outside = int(uid_map[1])
    assert outside != 0 and outside == expected_command_uid(), uid_map
    assert_protection(result, uid=expected_command_uid())
    assert result.protection.uid != 0


def test_sandbox_blocks_setuid_syscalls(sandbox_run):
    result = sandbox_run(
        py(
            "import os\n"
            "calls = (('setuid', lambda: os.setuid(0)), ('setgid', lambda: os.setgid(0)),\n"
            "         ('setresuid', lambda: os.setresuid(0, 0, 0)), ('setgroups', lambda: os.setgroups([0])))\n"
            "for name, fn in calls:\n"
            "    try: fn(); print(name, 'OK')\n"
            "    except OSError as e: print(name, 'ERR', e.errno)\n"
            "print('uid', os.getuid(), os.geteuid())"
        )
    )
    for name in ("setuid", "setgid", "setresuid", "setgroups"):
        # EPERM, or EINVAL: uid/gid 0 is not even mapped in the command's user namespace.
        assert f"{name} ERR 1" in result.stdout or f"{name} ERR 22" in result.stdout, result
    assert "uid 0" not in result.stdout
    assert_protection(result, no_new_privs=True)


def test_sandbox_blocks_su_and_sudo(sandbox_run):
    tools = [t for t in ("su", "sudo", "passwd", "newgrp", "chsh") if shutil.which(t)]
    if not tools:
        pytest.skip("no setuid tool (su, sudo, passwd) is installed")
    cmds = []
    if "su" in tools:
        cmds.append("su -c 'id -u' root </dev/null")
    if "sudo" in tools:
        cmds.append("sudo -n id -u </dev/null")
    if "passwd" in tools:
        cmds.append("passwd -S root </dev/null")
    cmds.append("echo DONE")
    result = sandbox_run("; ".join(cmds))
    assert "DONE" in result.stdout
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert "0" not in lines, f"a setuid tool ran something as uid 0: {result}"
    assert_protection(result, no_new_privs=True)


@pytest.mark.skipif(not IS_ROOT, reason="creating a setuid-root binary needs root")
def test_sandbox_blocks_setuid_root_binary_in_workdir(sandbox_run, workdir):
    """A setuid-root copy of `id` planted where the command can execute it. Positive control: run as
    nobody outside the sandbox, it does report euid 0."""
    suid = workdir / "suid-id"
    shutil.copy2("/usr/bin/id", suid)
    os.chown(suid, 0, 0)
    suid.chmod(0o4755)
    outside = subprocess.run(
        [str(suid)], capture_output=True, text=True, user=NOBODY, group=NOBODY, extra_groups=[], check=False
    )
    if "euid=0" not in outside.stdout:
        pytest.skip(f"setuid bits are not honoured on {workdir}'s filesystem (nosuid?): {outside.stdout}")
    result = sandbox_run("./suid-id; ./suid-id -u")
    assert "euid=0" not in result.stdout, f"the setuid bit raised privileges inside: {result}"
    assert result.stdout.splitlines()[-1].strip() != "0", result
    assert_protection(result, no_new_privs=True)


@pytest.mark.skipif(not IS_ROOT, reason="file capabilities need root to set")
def test_sandbox_blocks_file_capabilities(sandbox_run, workdir):
    """A python copy with cap_setuid+ep: exec must not grant it (no_new_privs, empty bounding set)."""
    setcap = shutil.which("setcap")
    if setcap is None:
        pytest.skip("setcap (libcap2-bin) is not installed")
    target = workdir / "py-cap"
    shutil.copy2(os.path.realpath("/usr/bin/python3"), target)
    os.chown(target, NOBODY, NOBODY)
    proc = subprocess.run([setcap, "cap_setuid+ep", str(target)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot set file capabilities here: {proc.stderr.strip()}")
    result = sandbox_run(
        './py-cap -I -S -c \'import os\ntry: os.setuid(0); print("ROOT", os.getuid())\n'
        'except OSError as e: print("ERR", e.errno)\''
    )
    assert "ROOT" not in result.stdout, result
    # EPERM, or EINVAL: uid 0 is not even mapped in the command's user namespace.
    assert "ERR 1" in result.stdout or "ERR 22" in result.stdout, result


@pytest.mark.skipif(
    not IS_ROOT,
    reason="an unprivileged server cannot drop its own supplementary groups (setgroups is denied in its "
    "user namespace); they show as 65534 inside",
)
def test_sandbox_drops_supplementary_groups(sandbox_run):
    """The root server's groups (root, disk, shadow, docker...) must not reach the command."""
    result = sandbox_run("grep '^Groups' /proc/self/status; id -G")
    assert result.exit_code == 0, result
    line = next(x for x in result.stdout.splitlines() if x.startswith("Groups:"))
    assert line.split()[1:] == [], f"supplementary groups kept: {line}"


def test_capabilities_positive_control_outside():
    """Outside the sandbox this process's status is readable and differs (root has capabilities)."""
    status = _status_fields(Path("/proc/self/status").read_text())
    if IS_ROOT:
        assert status["CapEff"] != ZERO_CAPS
    assert "NoNewPrivs" in status
