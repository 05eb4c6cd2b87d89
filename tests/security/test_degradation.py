"""Graceful, honest degradation: on a weaker machine the report says exactly what is missing, a strict
policy refuses to run, and whatever the report still claims really holds.

The weaker machines are simulated by running the CLI under `_degrade_exec.py`, which installs a seccomp
filter first: `no-userns` (Docker's default profile: unshare/clone with namespace flags -> EPERM),
`no-landlock` (an old kernel: landlock_* -> ENOSYS), `no-seccomp` (seccomp() -> ENOSYS).
"""

from __future__ import annotations

import os
import shlex
import sys
import uuid
from pathlib import Path

import pytest
from _security_support import (
    IS_ROOT,
    NOBODY,
    HostTcpListener,
    kill_marker,
    py,
    run_as_command_uid,
    unique_sleep,
    wait_marker_gone,
)

from hanzo_sandbox_mcp.linux import landlock

DEGRADE = str(Path(__file__).with_name("_degrade_exec.py"))


@pytest.fixture
def degraded(cli_run):
    """cli_run under a simulated weaker machine: degraded(mode, argv, **cli_run_kwargs)."""

    def run(mode: str, argv: list[str], **kwargs):
        return cli_run(argv, prefix=[sys.executable, DEGRADE, mode, "--"], **kwargs)

    return run


def _missing_mentions(res, *words: str) -> str:
    missing = res.protection["missing"]
    hit = [m for m in missing if all(w in m.lower() for w in words)]
    assert hit, f"`missing` does not mention {words}: {missing}"
    return hit[0]


# --- no user namespaces (Docker's default seccomp profile) ---------------------------------------------


def test_report_names_missing_namespaces_when_unshare_is_denied(degraded):
    res = degraded("no-userns", ["true"])
    assert res.proc.returncode == 0, res.proc.stderr
    prot = res.protection
    for ns in ("pid", "mount", "net"):
        assert ns not in prot["namespaces"], prot
    line = _missing_mentions(res, "namespaces")
    assert "unshare" in line and "not permitted" in line.lower(), line
    assert prot["network_isolated"] is False, "loopback without a net namespace must not claim isolation"
    assert prot["private_tmp"] is False
    # The layers that do not need namespaces still fire, and say so.
    assert prot["fs_isolated"] is True and prot["landlock_abi"] and prot["seccomp"] is True, prot


def test_strict_flag_refuses_to_run_without_namespaces(degraded, workdir):
    marker = workdir / f"ran-{uuid.uuid4().hex[:6]}"
    res = degraded("no-userns", ["touch", str(marker)], options=["--strict"])
    assert res.proc.returncode != 0, res.proc
    assert "namespace" in res.proc.stderr.lower(), res.proc.stderr
    assert not marker.exists(), "a strict policy ran the command with a layer missing"


def test_strict_config_refuses_to_run_without_namespaces(degraded, workdir, tmp_path):
    config = tmp_path / "strict.toml"
    config.write_text("[policy]\nstrict = true\n")
    marker = workdir / f"ran-{uuid.uuid4().hex[:6]}"
    res = degraded("no-userns", ["touch", str(marker)], options=["--config", str(config)])
    assert res.proc.returncode != 0, res.proc
    assert "namespace" in res.proc.stderr.lower(), res.proc.stderr
    assert not marker.exists()


def test_network_none_claim_holds_without_namespaces(degraded):
    """Without a net namespace, `none` does not claim isolation (the family filter alone is half of it), and
    `missing` says which half is absent; the filter still keeps the host listener unreachable."""
    with HostTcpListener() as lst:
        code = (
            "import socket, sys\n"
            "try: socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5); print('CONNECTED')\n"
            "except OSError as e: print('ERR', e.errno)"
        )
        res = degraded("no-userns", ["/bin/sh", "-c", py(code, str(lst.port))], network="none")
        assert res.data is not None, res.proc
        assert res.protection["network_isolated"] is False, res.protection
        _missing_mentions(res, "network isolation", "network namespace")
        assert res.protection["seccomp"] is True, res.protection
        assert "ERR 1" in res.data["stdout"], f"the family filter did not refuse AF_INET: {res.data}"
        assert lst.accepted == 0


def test_loopback_report_is_honest_without_namespaces(degraded):
    """Loopback without a net namespace: the host listener is reachable, and the report says so."""
    with HostTcpListener() as lst:
        code = (
            "import socket, sys\n"
            "try: socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5); print('CONNECTED')\n"
            "except OSError as e: print('ERR', e.errno)"
        )
        res = degraded("no-userns", ["/bin/sh", "-c", py(code, str(lst.port))], network="loopback")
        assert res.data is not None, res.proc
        reached = "CONNECTED" in res.data["stdout"]
        if reached:
            assert res.protection["network_isolated"] is False, res.protection


def test_landlock_signal_scope_protects_host_without_pid_namespace(degraded, victims):
    """No pid namespace: host processes of the command's uid are visible. Landlock's signal scope (ABI 6)
    must still stop signals to them (kill -0 checks permission without delivering anything). Control: the
    same kill -0 from an unsandboxed process of the command's uid succeeds."""
    if landlock.abi_version() < 6:
        pytest.skip(f"Landlock ABI {landlock.abi_version()} has no signal scope (needs 6)")
    victim = victims()
    control = run_as_command_uid(["/bin/sh", "-c", f"kill -0 {victim.pid} && echo SIGNAL-OK"])
    assert "SIGNAL-OK" in control.stdout, f"control: the command's uid may signal the victim: {control}"
    res = degraded("no-userns", ["/bin/sh", "-c", f"kill -0 {victim.pid} && echo SIGNAL-OK; true"])
    assert res.data is not None, res.proc
    assert "pid" not in res.protection["namespaces"]
    assert (res.protection["landlock_abi"] or 0) >= 6, res.protection
    assert victim.alive()
    assert "SIGNAL-OK" not in res.data["stdout"], f"signal reached a host process: {res.data}"
    assert "not permitted" in res.data["stderr"].lower(), res.data


def test_daemon_is_killed_without_pid_namespace(degraded):
    """The supervisor is a child subreaper: a setsid daemon is re-parented to it and killed."""
    marker = unique_sleep(305)
    try:
        res = degraded(
            "no-userns",
            ["/bin/sh", "-c", f"setsid sh -c 'sleep {marker}' </dev/null >/dev/null 2>&1 & echo started"],
            timeout_s=30,
        )
        assert res.data is not None, res.proc
        assert "started" in res.data["stdout"]
        assert wait_marker_gone(marker) == [], "a daemon outlived its call without a pid namespace"
    finally:
        kill_marker(marker)


def test_landlock_alone_blocks_outside_reads_without_private_root(degraded, world_readable_secret):
    """No mount namespace, so no private root: the world-readable secret is visible, and Landlock alone
    must refuse it (EACCES), while an allowlisted file reads fine (positive control)."""
    cmd = f"cat /etc/passwd >/dev/null && echo CONTROL-OK; cat {shlex.quote(str(world_readable_secret.path))}; true"
    res = degraded("no-userns", ["/bin/sh", "-c", cmd])
    assert res.data is not None, res.proc
    assert res.protection["private_root"] is False and res.protection["landlock_abi"], res.protection
    assert "CONTROL-OK" in res.data["stdout"]
    assert world_readable_secret.content not in res.data["stdout"]
    assert "Permission denied" in res.data["stderr"], res.data


def test_landlock_alone_blocks_outside_writes_without_private_root(degraded, world_writable_dir, workdir):
    cmd = f"echo pwned > {shlex.quote(str(world_writable_dir))}/new; echo ok > inside && echo CONTROL-OK; true"
    res = degraded("no-userns", ["/bin/sh", "-c", cmd], workdir=workdir)
    assert res.data is not None, res.proc
    assert "CONTROL-OK" in res.data["stdout"], res.data
    assert not (world_writable_dir / "new").exists()
    assert "Permission denied" in res.data["stderr"], res.data


def test_report_names_missing_private_root_when_metadata_is_exposed(degraded, outside_root):
    """Landlock has no access right for chmod/utimes/xattr. Without the private root a command can chmod
    files of its own uid outside the workdir (a root server's other sessions' files, an unprivileged
    server's own ~/.ssh): the chmod succeeds, and the report must list the private root as missing."""
    key = outside_root / f"own-{uuid.uuid4().hex[:8]}"
    key.write_text("key\n")
    key.chmod(0o600)
    if IS_ROOT:
        os.chown(key, NOBODY, NOBODY)
    res = degraded("no-userns", ["/bin/sh", "-c", f"chmod 0644 {shlex.quote(str(key))}; true"])
    assert res.data is not None, res.proc
    assert res.protection["private_root"] is False
    assert key.stat().st_mode & 0o777 == 0o644, f"the chmod did not go through, so nothing is shown: {res.data}"
    missing = " ".join(res.protection["missing"]).lower()
    assert "mount" in missing or "root" in missing, res.protection["missing"]


# --- no Landlock (old kernel) --------------------------------------------------------------------------


def test_report_names_missing_landlock(degraded):
    res = degraded("no-landlock", ["true"])
    assert res.proc.returncode == 0, res.proc.stderr
    prot = res.protection
    assert prot["landlock_abi"] is None, prot
    # fs_isolated may still hold through the private root alone, and only then.
    assert prot["fs_isolated"] is prot["private_root"], prot
    _missing_mentions(res, "landlock")
    assert prot["namespaces"], "namespaces do not depend on Landlock"


def test_strict_refuses_to_run_without_landlock(degraded, workdir):
    marker = workdir / f"ran-{uuid.uuid4().hex[:6]}"
    res = degraded("no-landlock", ["touch", str(marker)], options=["--strict"])
    assert res.proc.returncode != 0, res.proc
    assert "landlock" in res.proc.stderr.lower(), res.proc.stderr
    assert not marker.exists()


def test_fs_claim_holds_without_landlock(degraded, private_secret, world_readable_secret):
    """Without Landlock the report still claims fs_isolated through the private root: then neither secret
    is readable (they are not in the root at all)."""
    cmd = f"cat {shlex.quote(str(private_secret.path))} {shlex.quote(str(world_readable_secret.path))}; true"
    res = degraded("no-landlock", ["/bin/sh", "-c", cmd])
    assert res.data is not None, res.proc
    assert res.protection["fs_isolated"] is True and res.protection["private_root"] is True, res.protection
    text = res.data["stdout"]
    assert private_secret.content not in text and world_readable_secret.content not in text, res.data
    assert "No such file or directory" in res.data["stderr"], res.data


def test_uid_drop_still_protects_private_files_without_private_root_and_landlock(degraded, private_secret):
    """No namespaces and no Landlock: fs_isolated must be False; as root the command still runs as nobody,
    so the server's 0600 files stay closed by DAC."""
    res = degraded("no-userns,no-landlock", ["/bin/sh", "-c", f"cat {shlex.quote(str(private_secret.path))}; true"])
    assert res.data is not None, res.proc
    assert res.protection["fs_isolated"] is False, res.protection
    _missing_mentions(res, "landlock")
    if not IS_ROOT:
        pytest.skip("the command runs as the server's own uid: nothing at all protects its files (as reported)")
    assert private_secret.content not in res.data["stdout"]
    assert "Permission denied" in res.data["stderr"]


# --- no seccomp ----------------------------------------------------------------------------------------


def test_report_names_missing_seccomp(degraded):
    res = degraded("no-seccomp", ["true"])
    assert res.proc.returncode == 0, res.proc.stderr
    prot = res.protection
    assert prot["seccomp"] is False, prot
    _missing_mentions(res, "seccomp")


def test_strict_refuses_to_run_without_seccomp(degraded, workdir):
    marker = workdir / f"ran-{uuid.uuid4().hex[:6]}"
    res = degraded("no-seccomp", ["touch", str(marker)], options=["--strict"])
    assert not marker.exists(), f"a strict policy ran the command without seccomp: {res.proc.stdout[:400]}"
    assert res.proc.returncode != 0, res.proc
    assert "seccomp" in res.proc.stderr.lower(), res.proc.stderr


def test_seccomp_claim_matches_kernel_state(degraded):
    """Whatever `seccomp` says, /proc/self/status agrees (Seccomp: 2 = a filter is installed)."""
    for mode in ("no-seccomp", "no-landlock"):
        res = degraded(mode, ["/bin/sh", "-c", "grep -E '^Seccomp_filters' /proc/self/status"])
        assert res.data is not None
        filters = int(res.data["stdout"].split()[-1])
        # The wrapper itself installs one filter; the sandbox's would be a second (on top of any filter the
        # tests already run under, a container runtime's).
        assert (filters >= _own_seccomp_filters() + 2) == res.protection["seccomp"], (mode, filters, res.protection)


def _own_seccomp_filters() -> int:
    with open("/proc/self/status") as status:
        return next((int(line.split()[1]) for line in status if line.startswith("Seccomp_filters:")), 0)


# --- the undegraded baseline ---------------------------------------------------------------------------


def test_full_machine_reports_nothing_missing_but_cgroups(cli_run):
    """Positive control: without the wrapper, every layer fires (cgroup v2 limits are unavailable here)."""
    res = cli_run(["true"])
    assert res.data is not None, res.proc
    prot = res.protection
    assert set(prot["namespaces"]) >= {"user", "pid", "mount", "net", "ipc", "uts"}, prot
    assert prot["landlock_abi"] and prot["seccomp"] and prot["fs_isolated"] and prot["network_isolated"]
    assert all("cgroup" in m for m in prot["missing"]), prot["missing"]
