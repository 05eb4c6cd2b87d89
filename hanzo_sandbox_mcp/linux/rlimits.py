"""Resource limits (stdlib only: runs inside the launcher, after the uid switch)."""

from __future__ import annotations

import resource

__all__ = ["RLIMIT_NAMES", "apply_rlimits"]

#: Names used in `LaunchPlan.rlimits` -> resource constants.
RLIMIT_NAMES = {
    "as": resource.RLIMIT_AS,
    "cpu": resource.RLIMIT_CPU,
    "nproc": resource.RLIMIT_NPROC,
    "nofile": resource.RLIMIT_NOFILE,
    "fsize": resource.RLIMIT_FSIZE,
    "core": resource.RLIMIT_CORE,
}


def apply_rlimits(limits: dict[str, int]) -> None:
    """Set soft and hard limit of each resource to the value (hard too, so the command cannot raise it).

    A value above an existing hard limit is clamped to it, since only privileged processes may raise one.
    """
    for name, value in limits.items():
        which = RLIMIT_NAMES[name]
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))
