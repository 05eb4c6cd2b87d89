"""`MacosSandbox`: env scrub, rlimits (applied by the launcher) and a Seatbelt profile via `sandbox-exec`.

Importable on every platform so `capabilities` and `doctor` can describe it, and so its plans can be tested
on Linux; `detect()` picks it only on macOS, when `/usr/bin/sandbox-exec` exists.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..env_scrub import scrub_env
from ..launch import LaunchReport
from ..launch_plan import LaunchPlan
from ..policy import NetworkMode, SandboxPolicy
from ..protection import EffectiveProtection, Layer, LayerStatus
from ..sandbox.base import Attachment, NoAttachment, require_workdir
from .profile import NETWORK_DETAIL, SEATBELT_EXECUTABLE, build_profile

__all__ = ["MacosSandbox", "seatbelt_available"]

_MiB = 1024 * 1024
_NOT_ON_MACOS = "not available on macOS"


def seatbelt_available() -> bool:
    """True when `sandbox-exec` exists (it ships with every macOS release so far, deprecated but working)."""
    return os.path.isfile(SEATBELT_EXECUTABLE) and os.access(SEATBELT_EXECUTABLE, os.X_OK)


def _rlimits(policy: SandboxPolicy) -> dict[str, int]:
    # No RLIMIT_NPROC on purpose: on macOS it counts every process of the user, not the command's.
    return {
        "as": policy.max_memory_mb * _MiB,
        "cpu": policy.max_cpu_secs,
        "nofile": policy.max_open_fds,
        "fsize": policy.max_file_sz_mb * _MiB,
        "core": 0,
    }


class MacosSandbox:
    """Seatbelt confinement of the filesystem and network, with the launcher's rlimits."""

    @property
    def name(self) -> str:
        return "macos-seatbelt"

    def harden(self, argv: Sequence[str], policy: SandboxPolicy, *, env: Mapping[str, str] | None = None) -> LaunchPlan:
        workdir = require_workdir(policy)
        real_workdir = Path(os.path.realpath(workdir))
        profile = build_profile(policy, real_workdir, home=Path.home())
        wrapped = profile.argv(list(argv))
        return LaunchPlan(
            argv=tuple(argv),
            env=scrub_env(os.environ if env is None else env, policy, real_workdir),
            cwd=str(real_workdir),
            rlimits=_rlimits(policy),
            strict=policy.strict,
            wrapper=tuple(wrapped[: len(wrapped) - len(argv)]),
        )

    def attach(self, pid: int, policy: SandboxPolicy) -> Attachment:
        return NoAttachment()

    def effective(self, policy: SandboxPolicy) -> EffectiveProtection:
        return self._protection(policy, rlimits=True)

    def report(self, launch: LaunchReport, policy: SandboxPolicy) -> EffectiveProtection:
        return self._protection(policy, rlimits=launch.rlimits, uid=launch.uid, gid=launch.gid)

    def _protection(
        self, policy: SandboxPolicy, *, rlimits: bool, uid: int | None = None, gid: int | None = None
    ) -> EffectiveProtection:
        missing = []
        if policy.network is NetworkMode.LOOPBACK:
            missing.append(f"private loopback: {NETWORK_DETAIL[policy.network]}")
        if not rlimits:
            missing.append("rlimits: the launcher could not apply them")
        return EffectiveProtection(
            fs_isolated=True,
            # Seatbelt cannot make loopback private: host services on localhost stay reachable.
            network_isolated=policy.network is NetworkMode.NONE,
            rlimits_applied=rlimits,
            sandbox=self.name,
            network=policy.network,
            env_scrubbed=True,
            seatbelt=True,
            uid=uid if uid is not None else (os.getuid() if hasattr(os, "getuid") else None),
            gid=gid,
            missing=tuple(missing),
        )

    def layers(self) -> tuple[LayerStatus, ...]:
        available = seatbelt_available()
        seatbelt = LayerStatus(
            layer=Layer.SEATBELT,
            available=available,
            detail="Seatbelt profile via /usr/bin/sandbox-exec"
            if available
            else "/usr/bin/sandbox-exec is missing: this macOS cannot confine commands",
        )
        return (
            LayerStatus(layer=Layer.ENV_SCRUB, available=True, detail="only allowlisted variables pass"),
            LayerStatus(layer=Layer.RLIMITS, available=True, detail="memory, CPU, fd, file-size and core limits"),
            seatbelt,
            *(
                LayerStatus(layer=layer, available=False, detail=_NOT_ON_MACOS, applicable=False)
                for layer in (
                    Layer.NAMESPACES,
                    Layer.PRIVATE_ROOT,
                    Layer.UID_DROP,
                    Layer.PRIVATE_TMP,
                    Layer.CGROUP,
                    Layer.NO_NEW_PRIVS,
                    Layer.LANDLOCK,
                    Layer.SECCOMP,
                )
            ),
        )
