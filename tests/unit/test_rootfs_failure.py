"""A private root that cannot be built must leave the mount namespace as it was: the staging tmpfs covers
/tmp, where workdirs often live, and a command that then cannot even enter its workdir would turn a missing
layer (reported) into a failed call. Seen in containers that mask /proc, where the fresh /proc is refused.

Here the refusal is made on purpose: a user namespace that does not own the current pid namespace may not
mount a fresh /proc (EPERM), on every kernel, as root or not.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _forked import in_child

from hanzo_sandbox_mcp.linux import mounts, namespaces, rootfs
from hanzo_sandbox_mcp.linux.paths import SYSTEM_READ_PATHS

pytestmark = pytest.mark.skipif(os.uname().sysname != "Linux", reason="Linux mount namespaces")


@pytest.fixture
def marker() -> Iterator[Path]:
    path = Path(tempfile.gettempdir()) / f"hanzo-rootfs-marker-{uuid.uuid4().hex}"
    path.write_text("host /tmp\n")
    yield path
    path.unlink()


def _user_and_mount_namespace() -> None:
    uid, gid = os.getuid(), os.getgid()
    namespaces.unshare(namespaces.CLONE_FLAGS["user"] | namespaces.CLONE_FLAGS["mount"])
    namespaces.write_id_maps(uid, uid, gid, gid)
    mounts.make_private()


def _namespaces_or_skip() -> None:
    try:
        in_child(lambda: None, _user_and_mount_namespace)
    except pytest.fail.Exception as exc:
        pytest.skip(f"no user and mount namespace here: {exc}")


def test_a_failed_private_root_leaves_the_hosts_tmp_visible(marker: Path) -> None:
    _namespaces_or_skip()

    def build() -> dict[str, object]:
        try:
            rootfs.build_root(
                list(SYSTEM_READ_PATHS), [], tmp_size_mb=4, uid=os.getuid(), gid=os.getgid(), fresh_proc=True
            )
        except OSError as exc:
            return {"raised": exc.errno, "marker_visible": marker.exists()}
        return {"raised": None, "marker_visible": marker.exists()}

    result = in_child(build, _user_and_mount_namespace)
    if result["raised"] is None:
        pytest.skip("this kernel let a user namespace mount /proc of a pid namespace it does not own")
    assert result["marker_visible"], "the staging tmpfs was left over /tmp"


def test_control_a_tmpfs_over_tmp_hides_the_marker(marker: Path) -> None:
    """The check above can fail: while a tmpfs covers /tmp, the marker is not visible."""
    _namespaces_or_skip()

    def cover() -> bool:
        mounts.mount_tmpfs(tempfile.gettempdir(), 4, os.getuid(), os.getgid(), mode="0755")
        return marker.exists()

    assert in_child(cover, _user_and_mount_namespace) is False
