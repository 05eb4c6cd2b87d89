"""Switch sandbox layers off one by one, so that a test can leave a single layer standing.

`PlanEditingSandbox(detect(), keep_only({...}))` is the real sandbox whose launch plans pass through an
edit before the real launcher applies them: the kernel, the launcher and the report are the production
ones, only the plan asks for less. A single-layer test runs an attack with `keep_only(BASE | {"landlock_fs"})`
and its control runs the same attack with `keep_only(BASE)`: the same uid, the layer under test off too.

Layer names (`LAYERS`):

- `env_scrub`: the allowlisted environment (off: the server's whole environment reaches the command);
- `user`, `pid`, `mount`, `net`, `ipc`, `uts`: the namespaces (`mount` brings the private root with it);
- `uid_drop`: a root server runs the command as an unprivileged uid (off: as root; a no-op for a
  non-root server, whose commands keep its uid anyway);
- `rlimits`, `no_new_privs`, `seccomp`;
- `landlock_fs`, `landlock_net`, `landlock_scope`: Landlock's filesystem rules, its TCP rules and its
  signal/abstract-socket scopes. Without `landlock_fs` but with another Landlock layer, the domain grants
  every filesystem right under `/`, so only the other rules bite. `landlock_domain` alone is a domain with
  no rule that bites: what every Landlock domain enforces (no ptrace of processes outside it).

The launcher sets no_new_privs whenever Landlock or seccomp is requested (both need it); `keep_only` cannot
separate them, and `no_new_privs` alone means neither of those.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence

from hanzo_sandbox_mcp.launch import LaunchReport
from hanzo_sandbox_mcp.launch_plan import NAMESPACE_NAMES, LandlockSpec, LaunchPlan
from hanzo_sandbox_mcp.policy import SandboxPolicy
from hanzo_sandbox_mcp.protection import EffectiveProtection, LayerStatus
from hanzo_sandbox_mcp.sandbox import Attachment, Sandbox

__all__ = ["BASE", "LAYERS", "PlanEdit", "PlanEditingSandbox", "keep_only"]

LANDLOCK_LAYERS = ("landlock_domain", "landlock_fs", "landlock_net", "landlock_scope")
LAYERS = frozenset({"env_scrub", *NAMESPACE_NAMES, "uid_drop", "rlimits", "no_new_privs", "seccomp", *LANDLOCK_LAYERS})
#: What every single-layer test and its control keep: the command's uid and environment stay the
#: production ones, so "the same attack as the same uid" holds between a test and its control.
BASE = frozenset({"uid_drop", "env_scrub"})

PlanEdit = Callable[[LaunchPlan], LaunchPlan]


def keep_only(keep: Iterable[str]) -> PlanEdit:
    """An edit that switches off every layer of a plan not named in `keep` (names from `LAYERS`)."""
    wanted = frozenset(keep)
    unknown = wanted - LAYERS
    if unknown:
        raise ValueError(f"unknown layer name(s) {sorted(unknown)}; known: {sorted(LAYERS)}")

    def edit(plan: LaunchPlan) -> LaunchPlan:
        changes: dict[str, object] = {
            "namespaces": tuple(name for name in plan.namespaces if name in wanted),
            "loopback": plan.loopback and "net" in wanted,
        }
        if "env_scrub" not in wanted:
            changes["env"] = {**os.environ, **plan.env}
        if "uid_drop" not in wanted:
            changes.update(uid=None, gid=None)
        if "rlimits" not in wanted:
            changes["rlimits"] = {}
        if "no_new_privs" not in wanted:
            changes["no_new_privs"] = False
        if "seccomp" not in wanted:
            changes["seccomp_bpf"] = None
        changes["landlock"] = _landlock(plan.landlock, wanted)
        return plan.replace(**changes)

    return edit


def _landlock(spec: LandlockSpec | None, wanted: frozenset[str]) -> LandlockSpec | None:
    if spec is None or not wanted.intersection(LANDLOCK_LAYERS):
        return None
    fields = spec.as_dict()
    if "landlock_fs" not in wanted:
        fields.update(read_exec=(), read_write=("/",))  # every filesystem right everywhere: no fs rule bites
    fields["deny_tcp"] = bool(fields["deny_tcp"]) and "landlock_net" in wanted
    fields["scope"] = bool(fields["scope"]) and "landlock_scope" in wanted
    return LandlockSpec(**fields)  # type: ignore[arg-type]


class PlanEditingSandbox:
    """The real sandbox `inner`, with every launch plan passed through `edit` before the launcher runs it."""

    def __init__(self, inner: Sandbox, edit: PlanEdit) -> None:
        self.inner = inner
        self.edit = edit

    @property
    def name(self) -> str:
        return self.inner.name

    def harden(self, argv: Sequence[str], policy: SandboxPolicy, *, env: Mapping[str, str] | None = None) -> LaunchPlan:
        return self.edit(self.inner.harden(argv, policy, env=env))

    def attach(self, pid: int, policy: SandboxPolicy) -> Attachment:
        return self.inner.attach(pid, policy)

    def effective(self, policy: SandboxPolicy) -> EffectiveProtection:
        return self.inner.effective(policy)

    def report(self, launch: LaunchReport, policy: SandboxPolicy) -> EffectiveProtection:
        return self.inner.report(launch, policy)

    def layers(self) -> tuple[LayerStatus, ...]:
        return self.inner.layers()
