"""The explicit no-op sandbox: the command runs with the server's full access (env scrub only)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from ..env_scrub import scrub_env
from ..launch import LaunchReport
from ..launch_plan import LaunchPlan
from ..policy import SandboxPolicy
from ..protection import EffectiveProtection, Layer, LayerStatus
from .base import Attachment, NoAttachment, require_workdir

__all__ = ["NullSandbox"]

_NOTHING = "the null sandbox applies no isolation"


class NullSandbox:
    """No isolation at all, reported as such. The environment is still scrubbed so secrets stay out."""

    @property
    def name(self) -> str:
        return "null"

    def harden(self, argv: Sequence[str], policy: SandboxPolicy, *, env: Mapping[str, str] | None = None) -> LaunchPlan:
        workdir = require_workdir(policy)
        return LaunchPlan(
            argv=tuple(argv),
            env=scrub_env(os.environ if env is None else env, policy, workdir),
            cwd=str(workdir),
        )

    def attach(self, pid: int, policy: SandboxPolicy) -> Attachment:
        return NoAttachment()

    def effective(self, policy: SandboxPolicy) -> EffectiveProtection:
        return EffectiveProtection(
            fs_isolated=False,
            network_isolated=False,
            rlimits_applied=False,
            sandbox=self.name,
            network=policy.network,
            env_scrubbed=True,
            uid=os.getuid() if hasattr(os, "getuid") else None,
            missing=("all isolation: the null sandbox gives commands the server's full access",),
        )

    def report(self, launch: LaunchReport, policy: SandboxPolicy) -> EffectiveProtection:
        return self.effective(policy)

    def layers(self) -> tuple[LayerStatus, ...]:
        scrub = LayerStatus(layer=Layer.ENV_SCRUB, available=True, detail="only allowlisted variables pass")
        others = (
            LayerStatus(layer=layer, available=False, detail=_NOTHING)
            for layer in Layer
            if layer is not Layer.ENV_SCRUB
        )
        return (scrub, *others)
