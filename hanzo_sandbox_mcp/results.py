"""The result of one sandboxed command, as the library, the CLI and the MCP tools return it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .netproxy.decisions import NetworkDenial
from .protection import EffectiveProtection

__all__ = ["ExecResult", "ResourceUsage"]


class ResourceUsage(BaseModel):
    """What the kernel reported for the command's whole process tree."""

    model_config = ConfigDict(frozen=True)

    cpu_user_s: float = Field(description="User CPU seconds.")
    cpu_sys_s: float = Field(description="System CPU seconds.")
    peak_rss_kb: int = Field(description="Largest resident set of any process in the tree (KiB).")


class ExecResult(BaseModel):
    """Output, exit status and the protections that were in force for one command."""

    model_config = ConfigDict(frozen=True)

    exit_code: int | None = Field(description="Exit status; None when the command was killed by a signal.")
    signal: int | None = Field(None, description="Number of the signal that killed the command, if any.")
    stdout: str = Field(description="Standard output (UTF-8, invalid bytes replaced), capped.")
    stderr: str = Field(description="Standard error (UTF-8, invalid bytes replaced), capped.")
    stdout_truncated_bytes: int = Field(0, description="Bytes of stdout dropped by the cap.")
    stderr_truncated_bytes: int = Field(0, description="Bytes of stderr dropped by the cap.")
    timed_out: bool = Field(False, description="The wall-clock timeout killed the process tree.")
    quota_exceeded: bool = Field(
        False,
        description="The workdir's disk quota (bytes or files) was exceeded: with quota_mode 'filesystem' its "
        "filesystem was full at the end of the call (writes failed with ENOSPC, the command was not stopped); "
        "with 'polled' the background count found it over the quota and the call was stopped.",
    )
    quota_mode: Literal["filesystem", "polled"] = Field(
        description="How the quota was enforced: 'filesystem' (the workdir is a filesystem of its own, limited "
        "by the kernel) or 'polled' (a background count of the workdir stops calls that exceed it)."
    )
    duration_ms: float = Field(description="Wall-clock duration in milliseconds.")
    resource_usage: ResourceUsage | None = Field(None, description="CPU time and peak memory, when known.")
    protection: EffectiveProtection = Field(description="The protections that actually fired for this call.")
    error: str | None = Field(
        None, description="Why the command did not run or was stopped (sandbox setup failure, quota), if so."
    )
    network_denied: tuple[NetworkDenial, ...] = Field(
        (),
        description="network = 'allowlist': the destinations the egress proxy refused for this session since "
        "its previous result (host, port, why), so a failed download says what to allow. Calls and background "
        "processes of a session share its network, so a refusal is the session's, not this call's alone.",
    )
    sandbox_restarted: str | None = Field(
        None,
        description="Set when the session's sandbox had to be made again for this call (it had died, or a "
        "call in it could not be stopped): every process the session had started and its /tmp and /dev/shm "
        "were lost; the workdir and its files were kept.",
    )

    @property
    def returncode(self) -> int:
        """Shell-style status: the exit code, or 128 + signal when killed."""
        if self.exit_code is not None:
            return self.exit_code
        return 128 + (self.signal or 0)
