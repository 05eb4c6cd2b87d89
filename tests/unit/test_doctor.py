"""`doctor`: the verdict logic on stand-in sandboxes, the exact text table, and the real Linux probe."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

import pytest

from hanzo_sandbox_mcp.doctor import DoctorReport, diagnose, render_text
from hanzo_sandbox_mcp.launch import LaunchReport
from hanzo_sandbox_mcp.launch_plan import LaunchPlan
from hanzo_sandbox_mcp.policy import NetworkMode, SandboxMode, SandboxPolicy
from hanzo_sandbox_mcp.protection import EffectiveProtection, Layer, LayerStatus
from hanzo_sandbox_mcp.sandbox import NoAttachment, NullSandbox, Sandbox

ON_LINUX = sys.platform.startswith("linux")


class StandIn:
    """A Sandbox whose prediction is given: isolates diagnose() and render_text() from any machine."""

    def __init__(self, effective: EffectiveProtection, layers: tuple[LayerStatus, ...] = ()) -> None:
        self._effective = effective
        self._layers = layers
        self.effective_calls = 0

    @property
    def name(self) -> str:
        return "stand-in"

    def harden(self, argv: Sequence[str], policy: SandboxPolicy, *, env: Mapping[str, str] | None = None) -> LaunchPlan:
        raise AssertionError("diagnose must not plan a command")

    def attach(self, pid: int, policy: SandboxPolicy) -> NoAttachment:
        raise AssertionError("diagnose must not attach anything")

    def effective(self, policy: SandboxPolicy) -> EffectiveProtection:
        self.effective_calls += 1
        return self._effective

    def report(self, launch: LaunchReport, policy: SandboxPolicy) -> EffectiveProtection:
        return self._effective

    def layers(self) -> tuple[LayerStatus, ...]:
        return self._layers


def _protection(
    *, missing: tuple[str, ...] = (), fs: bool = True, net: bool = True, rl: bool = True
) -> EffectiveProtection:
    return EffectiveProtection(
        fs_isolated=fs,
        network_isolated=net,
        rlimits_applied=rl,
        sandbox="stand-in",
        network=NetworkMode.LOOPBACK,
        missing=missing,
    )


# --- the verdict ---------------------------------------------------------------------------------------


def test_stand_in_is_a_sandbox() -> None:
    assert isinstance(StandIn(_protection()), Sandbox)


def test_ok_when_nothing_is_missing() -> None:
    stand_in = StandIn(_protection())
    report = diagnose(stand_in, SandboxPolicy(), SandboxMode.AUTO)
    assert report.ok is True
    assert stand_in.effective_calls == 1


def test_missing_cgroup_limits_alone_keep_the_verdict_ok() -> None:
    """cgroup limits are optional: rlimits already cap memory, processes and CPU."""
    report = diagnose(
        StandIn(_protection(missing=("cgroup limits: not delegated",))), SandboxPolicy(), SandboxMode.AUTO
    )
    assert report.ok is True


@pytest.mark.parametrize("missing", ["landlock: ENOSYS", "seccomp: no libseccomp", "namespaces user: EPERM"])
def test_any_other_missing_layer_fails_the_verdict(missing: str) -> None:
    report = diagnose(StandIn(_protection(missing=(missing, "cgroup limits: x"))), SandboxPolicy(), SandboxMode.AUTO)
    assert report.ok is False


def test_nothing_enforced_is_never_ok() -> None:
    report = diagnose(StandIn(_protection(fs=False, net=False, rl=False)), SandboxPolicy(), SandboxMode.AUTO)
    assert report.ok is False


def test_the_report_carries_identity_mode_and_layers() -> None:
    layers = (LayerStatus(layer=Layer.ENV_SCRUB, available=True, detail="scrubbed"),)
    report = diagnose(StandIn(_protection(), layers), SandboxPolicy(), SandboxMode.ON)
    uname = os.uname()
    assert report.platform == f"{sys.platform} {uname.release} {uname.machine}"
    assert report.sandbox == "stand-in"
    assert report.mode is SandboxMode.ON
    assert report.running_as_uid == os.getuid()
    assert report.layers == layers
    assert report.effective == _protection()


def test_the_report_survives_a_json_round_trip() -> None:
    layers = (LayerStatus(layer=Layer.SECCOMP, available=False, detail="why"),)
    report = diagnose(StandIn(_protection(missing=("seccomp: why",)), layers), SandboxPolicy(), SandboxMode.AUTO)
    assert DoctorReport.model_validate_json(report.model_dump_json()) == report


# --- the text table ------------------------------------------------------------------------------------


def test_render_text_exactly() -> None:
    layers = (
        LayerStatus(layer=Layer.ENV_SCRUB, available=True, detail="only allowlisted variables pass"),
        LayerStatus(layer=Layer.LANDLOCK, available=False, detail="kernel too old"),
    )
    report = DoctorReport(
        platform="linux 6.1.0 x86_64",
        sandbox="stand-in",
        mode=SandboxMode.AUTO,
        running_as_uid=1000,
        layers=layers,
        effective=_protection(missing=("landlock: kernel too old", "cgroup limits: not delegated"), fs=False),
        ok=False,
    )
    assert render_text(report) == "\n".join(
        [
            "platform: linux 6.1.0 x86_64",
            "sandbox:  stand-in (HANZO_SANDBOX=auto, server uid 1000)",
            "",
            "layers:",
            "  [ok  ] env_scrub     only allowlisted variables pass",
            "  [MISS] landlock      kernel too old",
            "",
            "default policy gets:",
            "  fs_isolated=False network_isolated=True rlimits_applied=True (network=loopback)",
            "  missing: landlock: kernel too old",
            "  missing: cgroup limits: not delegated",
            "",
            "verdict: some layers are missing",
        ]
    )


def test_render_text_verdict_when_ok() -> None:
    report = diagnose(StandIn(_protection()), SandboxPolicy(), SandboxMode.AUTO)
    text = render_text(report)
    assert text.endswith("verdict: all requested layers in force")
    assert "missing:" not in text


# --- the null sandbox ----------------------------------------------------------------------------------


def test_null_sandbox_is_reported_as_enforcing_nothing() -> None:
    report = diagnose(NullSandbox(), SandboxPolicy(), SandboxMode.OFF)
    assert report.sandbox == "null"
    assert report.ok is False
    text = render_text(report)
    assert "HANZO_SANDBOX=off" in text
    assert "  [ok  ] env_scrub" in text
    for layer in Layer:
        if layer is not Layer.ENV_SCRUB:
            assert f"  [MISS] {layer.value:<13} the null sandbox applies no isolation" in text
    assert text.endswith("verdict: some layers are missing")


# --- the real Linux backend ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def linux_report() -> DoctorReport:
    if not ON_LINUX:
        pytest.skip("the Linux backend needs Linux")
    from hanzo_sandbox_mcp.linux.sandbox import LinuxSandbox

    return diagnose(LinuxSandbox(), SandboxPolicy(), SandboxMode.AUTO)


def test_linux_report_lists_every_layer_once_with_a_detail(linux_report: DoctorReport) -> None:
    assert linux_report.sandbox == "linux"
    layers = [status.layer for status in linux_report.layers]
    assert sorted(layers) == sorted(Layer)
    assert all(status.detail for status in linux_report.layers)
    seatbelt = next(s for s in linux_report.layers if s.layer is Layer.SEATBELT)
    assert (seatbelt.available, seatbelt.detail) == (False, "macOS only")


def test_linux_cgroup_layer_matches_discovery(linux_report: DoctorReport) -> None:
    from hanzo_sandbox_mcp.linux.cgroups import discover

    manager, reason = discover()
    cgroup = next(s for s in linux_report.layers if s.layer is Layer.CGROUP)
    assert cgroup.available is (manager is not None)
    assert cgroup.detail == reason
    assert linux_report.effective.cgroup_limits is (manager is not None)
    if manager is None:
        assert f"cgroup limits: {reason}" in linux_report.effective.missing


def test_linux_verdict_is_consistent_with_what_is_missing(linux_report: DoctorReport) -> None:
    eff = linux_report.effective
    required = [m for m in eff.missing if not m.startswith("cgroup")]
    assert linux_report.ok is (eff.any() and not required)
    for status in linux_report.layers:
        if not status.available and status.layer not in (Layer.CGROUP, Layer.SEATBELT):
            assert linux_report.ok is False, f"{status.layer} is unavailable but the verdict is ok"


def test_linux_layers_on_this_machine(linux_report: DoctorReport) -> None:
    """This machine (Linux 6.x, Landlock ABI 7, userns, seccomp) has every Linux layer but cgroup v2 limits."""
    layers = {s.layer: s for s in linux_report.layers}
    for layer in set(Layer) - {Layer.CGROUP, Layer.SEATBELT}:
        assert layers[layer].available, f"{layer}: {layers[layer].detail}"
    assert layers[Layer.NAMESPACES].detail == "namespaces: user, pid, mount, net, ipc, uts"
    expected_uid = 65534 if os.geteuid() == 0 else os.getuid()
    assert layers[Layer.UID_DROP].detail == f"commands run as uid {expected_uid}"
    assert linux_report.ok is True
    text = render_text(linux_report)
    assert "verdict: all requested layers in force" in text
    assert f"server uid {os.getuid()}" in text
