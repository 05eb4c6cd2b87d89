"""Workdirs with a real quota for the attack tests, in either mode, and a way to run a command in one.

`quota_workdir(mode, parent, quota_mb=..., inodes=..., owner=...)` yields a `WorkdirQuota` made by the
server's own `WorkdirFactory` ("filesystem": an ext4 image loop-mounted nosuid,nodev; "polled": a background
count) and releases it afterwards. Filesystem mode skips (naming why) where this machine cannot make one.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from _security_support import OUTPUT_CAP, expected_command_uid

MODES = ("filesystem", "polled")


@contextlib.contextmanager
def quota_workdir(
    mode: str, parent: Path, *, quota_mb: int, inodes: int | None = None, owner: tuple[int, int] | None = None
) -> Iterator[Any]:
    from hanzo_sandbox_mcp.quota import QuotaLimits, WorkdirFactory
    from hanzo_sandbox_mcp.treewalk import remove_tree

    root = Path(tempfile.mkdtemp(prefix="hanzo-quota-", dir=parent))
    root.chmod(0o711)
    uid = expected_command_uid()
    factory = WorkdirFactory(
        root, (uid, uid), QuotaLimits.of(quota_mb, inodes), force_polled=mode == "polled", disk_reserve_bytes=0
    )
    got, why = anyio.run(factory.mode)
    if got != mode:
        pytest.skip(f"no {mode} quota here: {why}")
    quota = anyio.run(lambda: factory.create(owner=owner))
    try:
        yield quota
    finally:
        assert anyio.run(factory.release, quota), f"the workdir {quota.path} was not removed"
        assert remove_tree(root)


def run_with_quota(
    sandbox: Any,
    cmd: str,
    quota: Any,
    *,
    timeout_s: float = 60,
    policy_overrides: dict[str, Any] | None = None,
) -> Any:
    """`/bin/sh -c cmd` through `run_sandboxed` in the quota's workdir, with that quota supervising."""
    from hanzo_sandbox_mcp import runner
    from hanzo_sandbox_mcp.config import OutputSettings
    from hanzo_sandbox_mcp.policy import SandboxPolicy

    overrides = {"workdir_quota_mb": quota.limits.bytes >> 20, **(policy_overrides or {})}
    policy = SandboxPolicy(**overrides).with_workdir(quota.path)
    output = OutputSettings(max_stdout_bytes=OUTPUT_CAP, max_stderr_bytes=OUTPUT_CAP)

    async def go() -> Any:
        with anyio.fail_after(timeout_s + 90):  # hang guard only
            return await runner.run_sandboxed(
                sandbox, policy, ["/bin/sh", "-c", cmd], timeout_s=timeout_s, output=output, quota=quota
            )

    return anyio.run(go)
