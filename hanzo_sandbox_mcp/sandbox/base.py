"""The `Sandbox` interface every platform backend implements (the crate's `Sandbox` trait).

`harden` is pure: command + policy -> a `LaunchPlan` that the runner hands to the launcher, so tests can
compare whole plans. `attach` runs after spawn (cgroup membership), `effective` predicts what will fire for
a policy without side effects, and `layers` explains each layer's availability for `doctor`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..launch import LaunchReport
from ..launch_plan import LaunchPlan
from ..policy import SandboxPolicy
from ..protection import EffectiveProtection, LayerStatus

__all__ = ["Attachment", "NoAttachment", "Sandbox"]


class Attachment(Protocol):
    """Post-spawn resources tied to one call (a cgroup on Linux); released when the call ends."""

    def kill(self) -> None:
        """Kill every process attached (used on timeout, as `cgroup.kill`)."""

    def memory_peak_bytes(self) -> int | None:
        """Peak memory of the attached processes, when the backend measures it."""

    def release(self) -> None:
        """Free the resources (remove the cgroup). Safe to call twice."""


class NoAttachment:
    """The attachment of backends that have nothing to attach."""

    def kill(self) -> None:
        return None

    def memory_peak_bytes(self) -> int | None:
        return None

    def release(self) -> None:
        return None


@runtime_checkable
class Sandbox(Protocol):
    """Confines one command according to a policy."""

    @property
    def name(self) -> str:
        """Human-readable name for logs and reports."""

    def harden(self, argv: Sequence[str], policy: SandboxPolicy, *, env: Mapping[str, str] | None = None) -> LaunchPlan:
        """Turn a command into the launch plan that confines it. `policy.session_workdir` must be set."""

    def attach(self, pid: int, policy: SandboxPolicy) -> Attachment:
        """Attach the spawned launcher (pid) to per-call resources such as a cgroup."""

    def effective(self, policy: SandboxPolicy) -> EffectiveProtection:
        """What will fire for this policy here. Cheap and free of side effects."""

    def report(self, launch: LaunchReport, policy: SandboxPolicy) -> EffectiveProtection:
        """The protection one call really had, from what its launcher reported before exec."""

    def layers(self) -> tuple[LayerStatus, ...]:
        """Each layer's availability on this machine, with the reason and fix when missing."""


def require_workdir(policy: SandboxPolicy) -> Path:
    """The policy's workdir, or a clear error when the caller forgot to bind one."""
    if policy.session_workdir is None:
        raise ValueError("policy.session_workdir must be set before harden(): use policy.with_workdir(path)")
    return policy.session_workdir
