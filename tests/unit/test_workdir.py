"""Workdir helpers: `resolve_inside` refuses every way out of the workdir (the model plants symlinks), and
workdirs are private and owned by the command's uid. Measuring a tree: test_treewalk.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hanzo_sandbox_mcp.errors import RequestError
from hanzo_sandbox_mcp.workdir import command_owner, create_workdir, resolve_inside

IS_ROOT = os.geteuid() == 0


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    (path / "sub" / "deeper").mkdir(parents=True)
    return path


# --- resolve_inside: allowed -------------------------------------------------------------------------


@pytest.mark.parametrize("relative", [None, "", ".", Path(".")])
def test_no_cwd_means_the_workdir_itself(workdir: Path, relative: str | Path | None) -> None:
    assert resolve_inside(workdir, relative) == workdir.resolve()


@pytest.mark.parametrize("relative", ["sub", "sub/deeper", "sub/./deeper/", "sub/deeper/..", Path("sub")])
def test_relative_directories_inside_resolve(workdir: Path, relative: str | Path) -> None:
    expected = (workdir / relative).resolve()
    assert resolve_inside(workdir, relative) == expected
    assert workdir.resolve() in (expected, *expected.parents)


def test_a_symlink_that_stays_inside_is_followed(workdir: Path) -> None:
    (workdir / "link").symlink_to("sub/deeper")
    assert resolve_inside(workdir, "link") == (workdir / "sub" / "deeper").resolve()


def test_a_symlinked_workdir_resolves_to_its_target(workdir: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(workdir)
    assert resolve_inside(alias, "sub") == (workdir / "sub").resolve()


# --- resolve_inside: refused ---------------------------------------------------------------------------


@pytest.mark.parametrize("relative", ["..", "../elsewhere", "sub/../..", "sub/deeper/../../.."])
def test_dotdot_out_of_the_workdir_is_refused(workdir: Path, relative: str) -> None:
    with pytest.raises(RequestError, match="leads outside the session workdir"):
        resolve_inside(workdir, relative)


@pytest.mark.parametrize("relative", ["/", "/etc", str(Path("/tmp"))])
def test_absolute_paths_are_refused(workdir: Path, relative: str) -> None:
    with pytest.raises(RequestError, match="is absolute"):
        resolve_inside(workdir, relative)


def test_an_absolute_path_into_the_workdir_is_refused_too(workdir: Path) -> None:
    with pytest.raises(RequestError, match="is absolute"):
        resolve_inside(workdir, str(workdir / "sub"))


def test_nul_is_refused(workdir: Path) -> None:
    with pytest.raises(RequestError, match="NUL"):
        resolve_inside(workdir, "sub\x00/etc")


def test_a_symlink_to_root_is_refused(workdir: Path) -> None:
    (workdir / "root").symlink_to("/")
    with pytest.raises(RequestError, match="leads outside"):
        resolve_inside(workdir, "root")
    with pytest.raises(RequestError, match="leads outside"):
        resolve_inside(workdir, "root/etc")


def test_a_symlink_to_a_sibling_with_the_same_prefix_is_refused(workdir: Path) -> None:
    """`/x/work2` starts with `/x/work` as a string but is not inside it."""
    sibling = workdir.parent / (workdir.name + "2")
    sibling.mkdir()
    (workdir / "sib").symlink_to(sibling)
    with pytest.raises(RequestError, match="leads outside"):
        resolve_inside(workdir, "sib")


def test_a_nested_symlink_chain_out_is_refused(workdir: Path) -> None:
    (workdir / "sub" / "up").symlink_to("../..")
    (workdir / "hop").symlink_to("sub/up")
    with pytest.raises(RequestError, match="leads outside"):
        resolve_inside(workdir, "hop")


def test_missing_directories_and_files_are_refused(workdir: Path) -> None:
    (workdir / "file").write_text("x")
    with pytest.raises(RequestError, match="not a directory"):
        resolve_inside(workdir, "nope")
    with pytest.raises(RequestError, match="not a directory"):
        resolve_inside(workdir, "file")


def test_a_dangling_symlink_is_refused(workdir: Path) -> None:
    (workdir / "dangling").symlink_to("does-not-exist")
    with pytest.raises(RequestError, match="not a directory"):
        resolve_inside(workdir, "dangling")


# --- command_owner and create_workdir ------------------------------------------------------------------


def test_command_owner_is_the_policy_uid_as_root_else_the_server_user() -> None:
    if IS_ROOT:
        assert command_owner(65534, 65533) == (65534, 65533)
    else:
        assert command_owner(65534, 65533) == (os.getuid(), os.getgid())


def test_create_workdir_is_private_fresh_and_under_the_parent(tmp_path: Path) -> None:
    first = create_workdir(tmp_path, "hanzo-t-", command_owner(65534, 65534))
    second = create_workdir(tmp_path, "hanzo-t-", command_owner(65534, 65534))
    assert first != second
    for path in (first, second):
        assert path.parent == tmp_path
        assert path.name.startswith("hanzo-t-")
        st = path.stat()
        assert stat.S_ISDIR(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o700
        assert list(path.iterdir()) == []


def test_create_workdir_is_owned_by_the_command_uid(tmp_path: Path) -> None:
    path = create_workdir(tmp_path, "hanzo-t-", command_owner(65534, 65534))
    st = path.stat()
    if IS_ROOT:
        assert (st.st_uid, st.st_gid) == (65534, 65534)
    else:
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


@pytest.mark.skipif(not IS_ROOT, reason="only root can chown")
def test_create_workdir_as_root_chowns_to_any_owner(tmp_path: Path) -> None:
    path = create_workdir(tmp_path, "hanzo-t-", (4321, 4322))
    assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4322)
    kept = create_workdir(tmp_path, "hanzo-t-", (0, 0))
    assert (kept.stat().st_uid, kept.stat().st_gid) == (0, 0)


def test_dotdot_back_into_the_workdir_is_allowed(workdir: Path) -> None:
    assert resolve_inside(workdir, f"../{workdir.name}/sub") == (workdir / "sub").resolve()
