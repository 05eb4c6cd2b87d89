"""The protection report is measured, not echoed: a layer that did not fire is reported missing.

Each attack test breaks one step of the real launcher (a patch executed in the launcher's interpreter
before it is imported, see support/launcher_run.py), runs a plan from `LinuxSandbox.harden`, and checks
that the report built from the launcher's status lines tells the truth, checked against the kernel from
outside (the owner of a file the command created on the host) or from inside (/proc/self/status as the
command sees it). The positive control is the same run without the patch, where the layer is in force.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from support.launcher_run import run_launcher

from hanzo_sandbox_mcp.launch_plan import LaunchPlan
from hanzo_sandbox_mcp.linux import privilege
from hanzo_sandbox_mcp.linux.sandbox import LinuxSandbox
from hanzo_sandbox_mcp.policy import SandboxPolicy
from hanzo_sandbox_mcp.protection import EffectiveProtection

pytestmark = pytest.mark.skipif(os.uname().sysname != "Linux", reason="the Linux launcher")
IS_ROOT = os.geteuid() == 0
#: Root with CAP_SYS_ADMIN: the launcher's root path (the user namespace after the uid switch).
ROOT_PATH = IS_ROOT and privilege.root_path(0, privilege.own_effective_caps())

SKIP_UID_SWITCH = "os.setresuid = os.setresgid = lambda *ids: None; os.setgroups = lambda groups: None"
SKIP_RLIMITS = "import hanzo_sandbox_mcp.linux.rlimits as m; m.apply_rlimits = lambda limits: None"
SKIP_NO_NEW_PRIVS = (
    "import hanzo_sandbox_mcp.linux.libc as m; real = m.prctl; "
    "m.prctl = lambda option, *args: 0 if option == 38 else real(option, *args)"
)
SKIP_SECCOMP = "import hanzo_sandbox_mcp.linux.seccomp as m; m.install_filter = lambda program: None"


@pytest.fixture(scope="module")
def linux() -> LinuxSandbox:
    return LinuxSandbox()


@pytest.fixture
def open_workdir(work_root: Path) -> Path:
    """A root-owned (when root) 0777 workdir: any uid, host root included, can create files in it, so a
    skipped uid switch is not betrayed by EACCES, only by the measurement."""
    path = work_root / f"open-{uuid.uuid4().hex[:10]}"
    path.mkdir()
    path.chmod(0o777)
    return path


def _plan(linux: LinuxSandbox, workdir: Path, script: str) -> tuple[LaunchPlan, SandboxPolicy]:
    policy = SandboxPolicy().with_workdir(workdir)
    return linux.harden(["/bin/sh", "-c", script], policy, env={"PATH": "/usr/bin:/bin"}), policy


def _protection(
    linux: LinuxSandbox, policy: SandboxPolicy, plan: LaunchPlan, mutation: str = ""
) -> tuple[EffectiveProtection, str]:
    run = run_launcher(plan, mutation=mutation)
    assert run.report.rejected == 0, run
    assert run.report.exit is not None and run.report.exit["exit_code"] == 0, run
    return linux.report(run.report, policy), run.stdout


def _missing(protection: EffectiveProtection, layer: str) -> str:
    found = [entry for entry in protection.missing if entry.startswith(layer)]
    assert found, f"{layer} is not reported missing: {protection.missing}"
    return found[0]


@pytest.mark.skipif(not IS_ROOT, reason="only a root server switches uids: there is no switch to skip")
def test_a_skipped_uid_switch_is_reported_as_host_root(linux: LinuxSandbox, open_workdir: Path) -> None:
    """Inside its user namespace the command's `id -u` says 65534 (host root is unmapped there and reads as
    the overflow uid), so a report that trusted it, or the plan, would claim the uid drop."""
    plan, policy = _plan(linux, open_workdir, "touch made-by-me; id -u")
    assert plan.uid == 65534

    control, out = _protection(linux, policy, plan)
    assert (control.uid, out.strip()) == (65534, "65534")
    assert (open_workdir / "made-by-me").stat().st_uid == 65534
    (open_workdir / "made-by-me").unlink()

    broken, out = _protection(linux, policy, plan, SKIP_UID_SWITCH)
    owner = (open_workdir / "made-by-me").stat().st_uid
    assert owner == 0, "the mutation did not take: the command did not run as host root"
    # A root without CAP_SYS_ADMIN (a container's) creates the user namespace before the (skipped) switch,
    # mapping uid 0 itself: there `id -u` says 0; the report must say so either way.
    assert out.strip() == ("65534" if ROOT_PATH else "0"), "precondition: what `id -u` says inside"
    assert broken.uid == owner == 0
    assert "uid drop: " in _missing(broken, "uid drop")


def test_the_reported_uid_owns_what_the_command_creates(linux: LinuxSandbox, workdir: Path) -> None:
    plan, policy = _plan(linux, workdir, "touch mine")
    protection, _ = _protection(linux, policy, plan)
    assert protection.uid is not None
    assert (workdir / "mine").stat().st_uid == protection.uid != 0


@pytest.mark.parametrize(
    ("mutation", "field", "layer"),
    [
        (SKIP_RLIMITS, "rlimits_applied", "rlimits"),
        (SKIP_NO_NEW_PRIVS, "no_new_privs", "no_new_privs"),
        (SKIP_SECCOMP, "seccomp", "seccomp"),
    ],
    ids=["rlimits", "no_new_privs", "seccomp"],
)
def test_a_skipped_layer_is_reported_missing(
    linux: LinuxSandbox, workdir: Path, mutation: str, field: str, layer: str
) -> None:
    # Seccomp_filters too: under a container runtime's own filter the mode reads 2 with or without ours.
    script = "grep -E '^(NoNewPrivs|Seccomp|Seccomp_filters):' /proc/self/status; ulimit -Hn"
    plan, policy = _plan(linux, workdir, script)
    if layer == "seccomp" and plan.seccomp_bpf is None:
        pytest.skip("libseccomp cannot build a filter here: there is no seccomp layer to skip")
    control, control_out = _protection(linux, policy, plan)
    assert getattr(control, field) is True, control.missing
    broken, broken_out = _protection(linux, policy, plan, mutation)
    assert getattr(broken, field) is False
    assert broken_out != control_out, "the mutation did not change what the command sees"
    assert "read-back" in _missing(broken, layer)


def test_the_report_agrees_with_the_commands_own_view(linux: LinuxSandbox, workdir: Path) -> None:
    script = "grep -E '^(NoNewPrivs|Seccomp|CapInh|CapBnd|CapAmb|Groups):' /proc/self/status; ulimit -n"
    plan, policy = _plan(linux, workdir, script)
    protection, out = _protection(linux, policy, plan)
    seen = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    seen = {key: value.strip() for key, value in seen.items()}
    assert protection.no_new_privs is (seen["NoNewPrivs"] == "1")
    assert protection.seccomp is (seen["Seccomp"] == "2")
    assert protection.capabilities_empty is (seen["CapInh"] == seen["CapBnd"] == seen["CapAmb"] == "0" * 16)
    assert out.splitlines()[-1] == str(plan.rlimits["nofile"])
    if IS_ROOT:
        assert protection.groups == () and seen["Groups"] == ""


@pytest.mark.parametrize(
    ("mutation", "layer"),
    [
        pytest.param(
            SKIP_UID_SWITCH,
            "uid_drop",
            marks=pytest.mark.skipif(not IS_ROOT, reason="only a root server switches uids"),
        ),
        (SKIP_RLIMITS, "rlimits"),
        (SKIP_SECCOMP, "seccomp"),
    ],
    ids=["uid_drop", "rlimits", "seccomp"],
)
def test_strict_refuses_to_exec_when_a_layer_reads_back_missing(
    linux: LinuxSandbox, open_workdir: Path, mutation: str, layer: str
) -> None:
    """The broken step raised nothing, so only the read-back can tell: under strict it stops the command."""
    policy = SandboxPolicy(strict=True).with_workdir(open_workdir)
    plan = linux.harden(["/bin/sh", "-c", "touch ran"], policy, env={"PATH": "/usr/bin:/bin"})
    if layer == "seccomp" and plan.seccomp_bpf is None:
        pytest.skip("libseccomp cannot build a filter here: there is no seccomp layer to skip")
    if layer == "uid_drop" and not ROOT_PATH:
        pytest.skip("a root without CAP_SYS_ADMIN (a container's) has no namespaces without the user namespace")
    if layer == "uid_drop":
        # Without the user namespace step, which would fail first: a process still host root may map only
        # its own uid 0 into it, not 65534.
        plan = plan.replace(namespaces=tuple(n for n in plan.namespaces if n != "user"))
    control = run_launcher(plan)  # positive control: strict and unbroken, the command runs
    assert control.report.abort is None and (open_workdir / "ran").exists(), control
    (open_workdir / "ran").unlink()
    broken = run_launcher(plan, mutation=mutation)
    assert broken.report.abort_strict, broken
    assert broken.report.abort is not None and f"{layer}: requested, but the read-back" in broken.report.abort
    assert not (open_workdir / "ran").exists(), "the command ran although a layer was missing"
