"""What this machine can enforce: the report behind `hanzo-sandbox-mcp doctor` and the `capabilities` tool."""

from __future__ import annotations

import os
import sys

from pydantic import BaseModel, Field

from .policy import SandboxMode, SandboxPolicy
from .protection import EffectiveProtection, Layer, LayerStatus
from .sandbox import Sandbox

__all__ = ["DoctorReport", "diagnose", "render_text"]


class DoctorReport(BaseModel):
    """The sandbox in use, each layer's availability with its reason, and what a policy gets."""

    platform: str = Field(description="sys.platform and kernel release.")
    sandbox: str = Field(description="Name of the sandbox implementation in use.")
    mode: SandboxMode = Field(description="The effective HANZO_SANDBOX mode.")
    running_as_uid: int | None = Field(description="uid of the server process.")
    layers: tuple[LayerStatus, ...]
    effective: EffectiveProtection = Field(description="What the policy gets on this machine.")
    ok: bool = Field(description="True when every layer the policy asks for is in force.")


def diagnose(sandbox: Sandbox, policy: SandboxPolicy, mode: SandboxMode) -> DoctorReport:
    """Probe (once) and report; free of side effects beyond running the launcher on /bin/true."""
    uname = os.uname()
    effective = sandbox.effective(policy)
    layers = sandbox.layers()
    # cgroup limits are optional (they need a delegated cgroup v2 subtree); every other layer the
    # platform has must be in force.
    required = [s for s in layers if s.applicable and s.layer is not Layer.CGROUP]
    missing_required = [m for m in effective.missing if not m.startswith("cgroup")]
    return DoctorReport(
        platform=f"{sys.platform} {uname.release} {uname.machine}",
        sandbox=sandbox.name,
        mode=mode,
        running_as_uid=os.getuid() if hasattr(os, "getuid") else None,
        layers=layers,
        effective=effective,
        ok=effective.any() and all(s.available for s in required) and not missing_required,
    )


def render_text(report: DoctorReport) -> str:
    """A human-readable table."""
    eff = report.effective
    lines = [
        f"platform: {report.platform}",
        f"sandbox:  {report.sandbox} (HANZO_SANDBOX={report.mode.value}, server uid {report.running_as_uid})",
        "",
        "layers:",
    ]
    for status in report.layers:
        mark = "ok  " if status.available else ("n/a " if not status.applicable else "MISS")
        lines.append(f"  [{mark}] {status.layer.value:<13} {status.detail}")
    lines += [
        "",
        "default policy gets:",
        f"  fs_isolated={eff.fs_isolated} network_isolated={eff.network_isolated} "
        f"rlimits_applied={eff.rlimits_applied} (network={eff.network.value})",
    ]
    lines += [f"  missing: {item}" for item in eff.missing]
    lines.append("")
    lines.append("verdict: " + ("all requested layers in force" if report.ok else "some layers are missing"))
    return "\n".join(lines)
