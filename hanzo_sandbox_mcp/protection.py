"""What a sandbox enforces: predicted by `Sandbox.effective()`, measured per call by the launcher.

`EffectiveProtection` keeps the reference crate's three booleans and `any()`, and adds per-layer detail so
a model (or a person) can reason about its limits. The report for a call is built from what the command
process read back from the kernel right before `exec` (ids through the user namespace's maps,
/proc/self/status, getrlimit), never from what was merely requested.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from .policy import NetworkMode

__all__ = ["EffectiveProtection", "Layer", "LayerStatus"]


class Layer(StrEnum):
    """The isolation layers, in the order the launcher applies them."""

    ENV_SCRUB = "env_scrub"
    NAMESPACES = "namespaces"
    PRIVATE_ROOT = "private_root"
    UID_DROP = "uid_drop"
    PRIVATE_TMP = "private_tmp"
    RLIMITS = "rlimits"
    CGROUP = "cgroup"
    NO_NEW_PRIVS = "no_new_privs"
    LANDLOCK = "landlock"
    SECCOMP = "seccomp"
    SEATBELT = "seatbelt"


class LayerStatus(BaseModel):
    """Whether one layer is (or can be) in force, and why not when it is not."""

    model_config = ConfigDict(frozen=True)

    layer: Layer
    available: bool
    detail: str = Field(description="What is in force, or why the layer is missing and how to fix it.")
    applicable: bool = Field(True, description="False for a layer this platform does not have at all.")


class EffectiveProtection(BaseModel):
    """The protections in force for a command (the crate's three booleans plus per-layer detail)."""

    model_config = ConfigDict(frozen=True)

    fs_isolated: bool = Field(
        description="Reads and writes outside the allowlist are denied by the kernel (Landlock, a private "
        "root of read-only binds, or Seatbelt)."
    )
    network_isolated: bool = Field(
        description="Network is restricted to the policy (no sockets for 'none', a private loopback for "
        "'loopback', that loopback plus the egress proxy to allowed_domains for 'allowlist', true only when the "
        "proxy path is in force too). False for 'full'."
    )
    rlimits_applied: bool = Field(
        description="Memory, CPU, process, fd and file-size limits are in force (read back with getrlimit: "
        "soft equals hard and none is looser than the policy)."
    )
    sandbox: str = Field(description="Name of the sandbox implementation.")
    network: NetworkMode = Field(description="The policy's network mode.")
    env_scrubbed: bool = Field(False, description="Only allowlisted environment variables reach the command.")
    namespaces: tuple[str, ...] = Field((), description="Linux namespaces the command runs in.")
    landlock_abi: int | None = Field(
        None, description="Landlock ABI of the ruleset the kernel accepted (restrict_self returned 0); None: none."
    )
    seccomp: bool = Field(
        False, description="The seccomp deny-list is installed (/proc/self/status: Seccomp 2, one filter more)."
    )
    no_new_privs: bool = Field(
        False, description="setuid/file capabilities cannot raise privileges (/proc/self/status: NoNewPrivs 1)."
    )
    cgroup_limits: bool = Field(False, description="cgroup v2 memory/pids/cpu limits are in force.")
    private_root: bool = Field(
        False,
        description="The command sees only allowlisted host paths (read-only binds; workdir read-write): "
        "nothing else exists for it, sockets included.",
    )
    private_tmp: bool = Field(False, description="/tmp and /dev/shm are private, size-capped and discarded.")
    seatbelt: bool = Field(False, description="A macOS Seatbelt profile is in force.")
    uid: int | None = Field(
        None,
        description="Host uid the command runs as: real, effective and saved uid read back before exec and "
        "mapped out of its user namespace (inside it, `id -u` may differ). None when they disagree.",
    )
    gid: int | None = Field(None, description="Host gid the command runs as, read back like `uid`.")
    groups: tuple[int, ...] | None = Field(
        None,
        description="Host gids of the command's supplementary groups (empty: none). None when not all are "
        "known: a non-root server's command keeps that user's groups, which its user namespace cannot map.",
    )
    capabilities_empty: bool = Field(
        False,
        description="The command holds no Linux capability after exec and cannot gain one: its inheritable, "
        "ambient and bounding sets were read back empty.",
    )
    missing: tuple[str, ...] = Field(
        (), description="Protections not in force, each with the reason (empty when all layers fired)."
    )

    def any(self) -> bool:
        """True if any layer is actually enforcing something (as the crate's `any()`)."""
        return self.fs_isolated or self.network_isolated or self.rlimits_applied
