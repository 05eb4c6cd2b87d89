"""`WorkdirFactory.create` in polled mode: the owner per workdir, and no scratch directories (the sandbox
gives a polled session tmpfs mounts instead, so there is nothing to clear). Filesystem mode: test_quota_fs.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import anyio
import pytest

from hanzo_sandbox_mcp.quota import QuotaLimits, WorkdirFactory
from hanzo_sandbox_mcp.workdir import command_owner

IS_ROOT = os.geteuid() == 0


def _factory(tmp_path: Path) -> WorkdirFactory:
    root = tmp_path / "root"
    root.mkdir(mode=0o711)
    return WorkdirFactory(root, command_owner(65534, 65534), QuotaLimits.of(8), force_polled=True)


def test_a_polled_workdir_has_no_scratch_dirs_and_nothing_to_clear(tmp_path: Path) -> None:
    factory = _factory(tmp_path)

    async def go() -> None:
        quota = await factory.create()
        try:
            assert quota.mode == "polled" and quota.tmp_dir is None and quota.shm_dir is None
            (quota.path / "kept").write_text("a workdir file is not scratch")
            assert await quota.clear_scratch()
            assert (quota.path / "kept").exists()
            st = os.stat(quota.path)
            assert ((st.st_uid, st.st_gid), stat.S_IMODE(st.st_mode)) == (factory.owner, 0o700)
        finally:
            assert await factory.release(quota)

    anyio.run(go)


@pytest.mark.skipif(not IS_ROOT, reason="only root can give a workdir to another uid")
def test_each_polled_workdir_can_have_its_own_owner(tmp_path: Path) -> None:
    factory = _factory(tmp_path)

    async def go() -> None:
        mine, theirs = await factory.create(), await factory.create(owner=(54321, 54322))
        try:
            assert (os.stat(mine.path).st_uid, os.stat(mine.path).st_gid) == factory.owner  # control: the default
            assert (os.stat(theirs.path).st_uid, os.stat(theirs.path).st_gid) == (54321, 54322)
        finally:
            assert await factory.release(mine) and await factory.release(theirs)

    anyio.run(go)
