"""The root path or the user-namespace-first path: the pure decision, and a root launcher without
CAP_SYS_ADMIN (a container's root, made here with `setpriv`) getting every namespace through the latter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.processes import kill_marker, unique_sleep, wait_marker_gone

from hanzo_sandbox_mcp.linux.privilege import CAP_SYS_ADMIN, effective_caps, root_path

ALL_CAPS = (1 << 41) - 1
WITHOUT_SYS_ADMIN = ALL_CAPS & ~(1 << CAP_SYS_ADMIN)


def test_root_with_sys_admin_takes_the_root_path() -> None:
    assert root_path(0, ALL_CAPS)
    assert root_path(0, 1 << CAP_SYS_ADMIN)


def test_root_without_sys_admin_takes_the_user_namespace_first() -> None:
    assert not root_path(0, WITHOUT_SYS_ADMIN)
    assert not root_path(0, 0)


def test_a_normal_user_never_takes_the_root_path() -> None:
    assert not root_path(1000, ALL_CAPS)  # ambient or file capabilities do not make it root


def test_effective_caps_reads_the_capeff_line() -> None:
    status = "Name:\tpython3\nCapInh:\t0000000000000000\nCapEff:\t000001fffedfffff\nCapBnd:\t000001ffffffffff\n"
    assert effective_caps(status) == 0x000001FFFEDFFFFF
    assert not effective_caps(status) >> CAP_SYS_ADMIN & 1
    assert effective_caps("Name:\tx\n") == 0


def _run_without_sys_admin(*argv: str) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).with_name("hanzo-sandbox-mcp")
    # Out of the bounding and inheritable sets, root's exec cannot regain it: CapEff lacks CAP_SYS_ADMIN.
    command = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--", str(cli), *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the path under test is root's without CAP_SYS_ADMIN")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
@pytest.mark.skipif(os.uname().sysname != "Linux", reason="the Linux launcher")
def test_root_without_sys_admin_gets_every_namespace_and_the_private_root() -> None:
    probe = _run_without_sys_admin("run", "--", "grep", "CapEff", "/proc/self/status")
    if probe.returncode != 0:
        pytest.skip(f"the CLI does not run under setpriv here: {probe.stderr.strip()[:300]}")
    result = _run_without_sys_admin("run", "--json", "--", "sh", "-c", "id -u; cat /proc/self/uid_map")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    protection = report["protection"]
    if not protection["namespaces"]:
        pytest.skip(f"no namespaces even for a normal user here: {protection['missing']}")
    assert protection["namespaces"] == ["user", "pid", "mount", "net", "ipc", "uts"], protection["missing"]
    assert protection["private_root"] and protection["private_tmp"], protection["missing"]
    uid_line = report["stdout"].split("\n")[1].split()
    assert report["stdout"].split("\n")[0] == "65534"  # never root inside
    assert uid_line == ["65534", "65534", "1"]  # the only id mapped into its user namespace


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_setpriv_really_removes_sys_admin() -> None:
    """The precondition of the test above: under setpriv the CLI's process lacks CAP_SYS_ADMIN."""
    result = subprocess.run(
        ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--", "grep", "CapEff", "/proc/self/status"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert not root_path(0, effective_caps(result.stdout))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the path under test is root's without CAP_SYS_ADMIN")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
@pytest.mark.skipif(os.uname().sysname != "Linux", reason="the Linux launcher")
def test_root_without_sys_admin_sandbox_still_dies_with_its_server() -> None:
    """The early uid drop clears the parent-death signal; it is armed again, so SIGKILL of the server (here the
    CLI, the launcher's parent) still takes the command with it."""
    marker = unique_sleep()
    cli = Path(sys.executable).with_name("hanzo-sandbox-mcp")
    command = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--", str(cli), "run"]
    server = subprocess.Popen(
        [*command, "--", "sleep", marker], env={"PATH": "/usr/bin:/bin"}, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while not _sleeping(marker):  # the command itself, not the CLI whose argv also holds the marker
            assert server.poll() is None and time.monotonic() < deadline, "the sandboxed sleep never started"
            time.sleep(0.05)
        server.kill()  # setpriv execs the CLI: this is the launcher's parent
        server.wait(timeout=30)
        assert wait_marker_gone(marker) == [], "the command outlived its server"
    finally:
        server.kill()
        server.wait(timeout=30)
        kill_marker(marker)


def _sleeping(marker: str) -> bool:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if handle.read().split(b"\0")[:2] == [b"sleep", marker.encode()]:
                    return True
        except OSError:
            continue
    return False
