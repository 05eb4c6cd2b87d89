"""The descriptor-based tree walker: deep trees, paths past PATH_MAX, swapped links, mode-000 directories,
hard links, and entries vanishing mid-walk. Every tree is built the way an attacking command would build
it: with `openat` relative to the previous directory, never by a long path."""

from __future__ import annotations

import ctypes
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hanzo_sandbox_mcp.treewalk import DEFAULT_MAX_OPEN, TreeUsage, remove_tree, tree_usage

IS_ROOT = os.geteuid() == 0
MiB = 1024 * 1024
RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _exchange(dir_fd: int, first: str, second: str) -> None:
    """renameat2(RENAME_EXCHANGE): the atomic swap an attacker uses."""
    if _libc.renameat2(dir_fd, first.encode(), dir_fd, second.encode(), RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _chain(root: Path, levels: int, name: str = "d") -> Iterator[int]:
    """Create `levels` nested directories below `root` with openat; yields each level's descriptor (the
    caller may write there) and closes it afterwards."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
            yield fd
    finally:
        os.close(fd)


def _write(dir_fd: int, name: str, size: int) -> None:
    out = os.open(name, os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=dir_fd)
    try:
        os.write(out, os.urandom(size))
        os.fsync(out)
    finally:
        os.close(out)


def _blocks(path: Path) -> int:
    return os.lstat(path).st_blocks * 512


@pytest.fixture
def tmp_path(tmp_path: Path) -> Iterator[Path]:
    """pytest's own clean-up uses shutil.rmtree, which these trees defeat: remove them here first."""
    yield tmp_path
    assert remove_tree(tmp_path)
    tmp_path.mkdir()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- usage ---------------------------------------------------------------------------------------------


def test_usage_counts_blocks_and_inodes_of_every_entry(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "top").write_bytes(os.urandom(100_000))
    (tmp_path / "a" / "b" / "deep").write_bytes(os.urandom(300_000))
    (tmp_path / "link").symlink_to("top")
    entries = [tmp_path / n for n in ("a", "a/b", "top", "a/b/deep", "link")]
    usage = tree_usage(tmp_path)
    assert usage == TreeUsage(bytes=sum(_blocks(p) for p in entries), inodes=5, complete=True)
    assert usage.bytes >= 400_000


def test_usage_counts_a_hard_linked_file_once(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(os.urandom(1 * MiB))
    for index in range(10):
        os.link(tmp_path / "f", tmp_path / f"alias{index}")
    usage = tree_usage(tmp_path)
    assert usage.inodes == 1
    assert usage.bytes == _blocks(tmp_path / "f")


def test_usage_counts_sparse_files_by_their_blocks(tmp_path: Path) -> None:
    with open(tmp_path / "sparse", "wb") as handle:
        handle.truncate(1 << 30)
    assert tree_usage(tmp_path).bytes == _blocks(tmp_path / "sparse") < MiB


def test_usage_of_a_missing_root_is_zero(tmp_path: Path) -> None:
    assert tree_usage(tmp_path / "gone") == TreeUsage()


def test_usage_counts_10000_levels_with_a_bounded_number_of_descriptors(tmp_path: Path) -> None:
    for level, fd in enumerate(_chain(tmp_path, 10_000), start=1):
        if level == 10_000:
            _write(fd, "bottom", 64 * 1024)
    before = _open_fds()
    peak = 0

    def count(_parent: int, _name: str) -> None:
        nonlocal peak
        peak = max(peak, _open_fds())

    usage = tree_usage(tmp_path, before_open=count)
    assert usage.inodes == 10_001
    assert usage.bytes >= 64 * 1024 + 10_000 * 512
    assert usage.complete
    assert peak - before <= DEFAULT_MAX_OPEN + 3, f"{peak - before} descriptors open at once"
    assert _open_fds() == before


def test_usage_counts_data_below_a_path_longer_than_path_max(tmp_path: Path) -> None:
    name = "n" * 255
    for level, fd in enumerate(_chain(tmp_path, 20, name), start=1):  # 20 x 256 bytes: over 4,096
        if level == 20:
            _write(fd, "hidden", 2 * MiB)
    assert tree_usage(tmp_path).bytes >= 2 * MiB

    # Control: the path-based walk this replaced loses the data to ENAMETOOLONG.
    seen = 0
    for directory, _dirs, files in os.walk(tmp_path):
        for file in files:
            seen += os.lstat(os.path.join(directory, file)).st_blocks * 512
    assert seen < 2 * MiB


def test_usage_reenters_frames_through_dotdot_with_one_descriptor(tmp_path: Path) -> None:
    for fd in _chain(tmp_path, 50):
        _write(fd, "f", 4096)
    assert tree_usage(tmp_path, max_open=1) == tree_usage(tmp_path)


def test_a_directory_swapped_for_a_link_is_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(os.urandom(4 * MiB))
    root = tmp_path / "work"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "small").write_bytes(b"x")
    (root / "lnk").symlink_to(outside)

    def swap(parent: int, name: str) -> None:
        if name == "sub":
            _exchange(parent, "sub", "lnk")  # between the walker's lstat and its open

    usage = tree_usage(root, before_open=swap)
    assert usage.bytes < MiB, usage
    assert (root / "sub").is_symlink()  # the swap did happen

    # Control: lstat, then a walk by path, as before, follows the swapped link out of the tree.
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _exchange(fd, "sub", "lnk")  # back: `sub` is the directory again
        assert stat.S_ISDIR(os.lstat(root / "sub").st_mode)
        swap(fd, "sub")
    finally:
        os.close(fd)
    followed = sum(e.stat(follow_symlinks=False).st_blocks * 512 for e in os.scandir(root / "sub"))
    assert followed >= 4 * MiB


def test_entries_that_vanish_mid_walk_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "c").mkdir(parents=True)
    (tmp_path / "b" / "c" / "f").write_bytes(b"x" * 10000)
    (tmp_path / "z").write_bytes(b"x")

    def vanish(_parent: int, name: str) -> None:
        for victim in (tmp_path / "b" / "c" / "f", tmp_path / "z"):
            victim.unlink(missing_ok=True)

    usage = tree_usage(tmp_path, before_open=vanish)
    assert usage.complete
    assert usage.inodes >= 2


def test_usage_enters_mode_000_directories_and_restores_their_mode(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    (locked / "inner").mkdir(parents=True)
    (locked / "inner" / "data").write_bytes(os.urandom(1 * MiB))
    os.chmod(locked / "inner", 0)
    os.chmod(locked, 0)
    try:
        usage = tree_usage(tmp_path)
        assert usage.bytes >= MiB and usage.inodes == 3
        assert stat.S_IMODE(os.lstat(locked).st_mode) == 0
        os.chmod(locked, 0o700)
        assert stat.S_IMODE(os.lstat(locked / "inner").st_mode) == 0
    finally:
        os.chmod(locked, 0o700)
        os.chmod(locked / "inner", 0o700)


def test_usage_of_a_mode_000_root(tmp_path: Path) -> None:
    root = tmp_path / "w"
    root.mkdir()
    (root / "f").write_bytes(os.urandom(100_000))
    os.chmod(root, 0)
    try:
        assert tree_usage(root).bytes >= 100_000
        assert stat.S_IMODE(os.lstat(root).st_mode) == 0
    finally:
        os.chmod(root, 0o700)


# --- removal -------------------------------------------------------------------------------------------


def test_remove_tree_deletes_10000_levels(tmp_path: Path) -> None:
    root = tmp_path / "w"
    root.mkdir()
    for fd in _chain(root, 10_000):
        _write(fd, "f", 10)
    before = _open_fds()
    assert remove_tree(root)
    assert not root.exists()
    assert _open_fds() == before


def test_remove_tree_deletes_below_path_max(tmp_path: Path) -> None:
    root = tmp_path / "w"
    root.mkdir()
    for fd in _chain(root, 30, "n" * 255):
        _write(fd, "f", 10)
    assert remove_tree(root)
    assert not root.exists()


def test_remove_tree_deletes_locked_directories(tmp_path: Path) -> None:
    top = tmp_path / "w"
    (top / "a" / "b").mkdir(parents=True)
    (top / "a" / "b" / "f").write_text("x")
    (top / "ro").mkdir()
    (top / "ro" / "g").write_text("y")
    os.chmod(top / "a" / "b", 0)
    os.chmod(top / "a", 0o500)
    os.chmod(top / "ro", 0o500)
    os.chmod(top, 0)
    assert remove_tree(top)
    assert not top.exists()


def test_remove_tree_never_follows_a_link_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    top = tmp_path / "w"
    top.mkdir()
    (top / "link").symlink_to(outside)
    assert remove_tree(top)
    assert not top.exists()
    assert (outside / "keep.txt").read_text() == "keep"


def test_remove_tree_never_follows_a_directory_swapped_for_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    top = tmp_path / "w"
    (top / "sub").mkdir(parents=True)
    (top / "sub" / "f").write_text("x")
    (top / "lnk").symlink_to(outside)

    def swap(parent: int, name: str) -> None:
        if name == "sub" and os.path.isdir(top / "sub") and not os.path.islink(top / "sub"):
            _exchange(parent, "sub", "lnk")

    assert remove_tree(top, before_open=swap)
    assert not top.exists()
    assert (outside / "keep.txt").read_text() == "keep"


def test_remove_tree_of_a_link_removes_only_the_link(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_text("k")
    (tmp_path / "link").symlink_to(target)
    assert remove_tree(tmp_path / "link")
    assert not (tmp_path / "link").is_symlink()
    assert (target / "keep").read_text() == "k"


def test_remove_tree_of_a_missing_path_is_done(tmp_path: Path) -> None:
    assert remove_tree(tmp_path / "missing")


def test_remove_tree_with_one_descriptor_and_hard_links(tmp_path: Path) -> None:
    root = tmp_path / "w"
    root.mkdir()
    for fd in _chain(root, 40):
        _write(fd, "f", 10)
    (root / "x").write_text("x")
    os.link(root / "x", root / "d" / "x2")
    assert remove_tree(root, max_open=1)
    assert not root.exists()


@pytest.mark.skipif(not IS_ROOT, reason="mounting needs root")
def test_remove_tree_never_deletes_inside_a_mount_point(tmp_path: Path) -> None:
    import subprocess

    root = tmp_path / "w"
    (root / "mnt").mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root / "mnt")], capture_output=True)
    if mounted.returncode != 0:  # root without CAP_SYS_ADMIN, as in a container
        pytest.skip(f"this root cannot mount: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        (root / "mnt" / "keep").write_text("k")
        (root / "f").write_text("x")
        assert not remove_tree(root, attempts=1)
        assert (root / "mnt" / "keep").read_text() == "k"
        assert not (root / "f").exists()
    finally:
        subprocess.run(["umount", str(root / "mnt")], check=True)
    assert remove_tree(root)


def test_the_walker_runs_as_a_stdlib_script_for_a_child_process(tmp_path: Path) -> None:
    """The polled quota counts large trees with `python -I -S treewalk.py ROOT` (no GIL held in the server)."""
    import subprocess
    import sys

    import hanzo_sandbox_mcp.treewalk as treewalk

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(os.urandom(100_000))
    proc = subprocess.run(
        [sys.executable, "-I", "-S", treewalk.__file__, str(tmp_path)],
        capture_output=True,
        text=True,
        env={},
        timeout=60,
        check=True,
    )
    usage = tree_usage(tmp_path)
    assert proc.stdout.split() == [str(usage.bytes), str(usage.inodes), "1"]


@pytest.mark.skipif(not IS_ROOT, reason="needs a directory owned by another uid")
def test_usage_skips_a_directory_it_may_not_enter_even_by_chmod() -> None:
    """Root makes a mode-000 directory owned by root; a count as another uid skips it and goes on."""
    import shutil
    import subprocess
    import tempfile

    import hanzo_sandbox_mcp.treewalk as treewalk

    base = Path(tempfile.mkdtemp(prefix="hanzo-walk-", dir="/var/tmp"))
    try:
        base.chmod(0o711)
        script = base / "treewalk.py"  # a copy the other uid can read, whatever the checkout's modes
        shutil.copyfile(treewalk.__file__, script)
        script.chmod(0o644)
        tree = base / "tree"
        (tree / "theirs").mkdir(parents=True)
        (tree / "theirs" / "f").write_bytes(os.urandom(100_000))
        os.chmod(tree / "theirs", 0)
        (tree / "mine").write_bytes(os.urandom(50_000))
        os.chown(tree / "mine", 65534, 65534)
        os.chown(tree, 65534, 65534)
        proc = subprocess.run(
            ["/usr/bin/python3", "-I", "-S", str(script), str(tree)],
            user=65534,
            group=65534,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert proc.stdout.split() == [str(_blocks(tree / "theirs") + _blocks(tree / "mine")), "2", "1"]
    finally:
        assert remove_tree(base)
