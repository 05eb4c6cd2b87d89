"""Landlock binding against the real kernel.

Every restriction is applied in a forked child (never in the pytest process), and most tests measure the
same operation before and after `restrict_self` in that child, so each one fails if Landlock does nothing.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _forked as forked
import pytest

from hanzo_sandbox_mcp.linux import landlock
from hanzo_sandbox_mcp.linux.landlock import LandlockError, LandlockResult, restrict_self

KERNEL_ABI = landlock.abi_version()
pytestmark = pytest.mark.skipif(KERNEL_ABI == 0, reason="this kernel has no Landlock")

SYSTEM_READ = ("/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache")
_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_NO_NEW_PRIVS = 38


def in_child(body: Callable[[], Any], *, no_new_privs: bool = True) -> Any:
    """Run `body` in a forked child (after no_new_privs, which Landlock requires, unless told not to)."""
    return forked.in_child(body, forked.set_no_new_privs if no_new_privs else None)


def err(action: Callable[[], object]) -> int:
    """0 when `action` succeeds, else the errno of the OSError it raised."""
    try:
        action()
    except OSError as exc:
        return exc.errno or -1
    return 0


def _write(path: Path | str, text: str = "x") -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _read(path: Path | str) -> str:
    with open(path) as handle:
        return handle.read()


def _fd_count(proc_fd_dir: int) -> int:
    # Listing through a directory fd opened before restrict_self keeps working after it.
    return len(os.listdir(proc_fd_dir))


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """rw/ (read-write), ro/ (read-exec), outside/ (not listed), all on one filesystem."""
    paths = {name: tmp_path / name for name in ("rw", "ro", "outside")}
    for path in paths.values():
        path.mkdir()
    (paths["rw"] / "a").mkdir()
    (paths["rw"] / "b").mkdir()
    for name in ("own", "own2", "a/moved"):
        _write(paths["rw"] / name)
    _write(paths["ro"] / "file", "read-only content")
    for name in ("secret", "secret2"):
        _write(paths["outside"] / name, "secret")
    (paths["rw"] / "link").symlink_to(paths["outside"] / "secret")
    shutil.copy("/bin/true", paths["outside"] / "true")
    yield paths


def confine(tree: dict[str, Path], **options: Any) -> LandlockResult:
    options.setdefault("deny_tcp", False)
    options.setdefault("scope", False)
    return restrict_self([*SYSTEM_READ, str(tree["ro"])], [str(tree["rw"]), "/dev/null"], **options)


def test_abi_version_is_a_positive_int() -> None:
    assert isinstance(KERNEL_ABI, int) and KERNEL_ABI >= 1


@pytest.mark.parametrize(
    ("abi", "expected"),
    [(1, 0x1FFF), (2, 0x3FFF), (3, 0x7FFF), (4, 0x7FFF), (5, 0xFFFF), (6, 0xFFFF), (7, 0xFFFF)],
)
def test_handled_fs_rights_follow_the_abi(abi: int, expected: int) -> None:
    assert landlock.handled_fs_rights(abi) == expected


def test_handled_fs_rights_rejects_abi_zero() -> None:
    with pytest.raises(ValueError):
        landlock.handled_fs_rights(0)


def test_reads_outside_the_allowlist_are_denied(tree: dict[str, Path]) -> None:
    def body() -> dict[str, list[int]]:
        targets = ("/etc/hostname", str(tree["outside"] / "secret"))

        def attempts() -> list[int]:
            return [err(lambda: _read(targets[0])), err(lambda: _read(targets[1]))]

        before = attempts()
        confine(tree)
        return {"before": before, "after": attempts()}

    assert in_child(body) == {"before": [0, 0], "after": [errno.EACCES, errno.EACCES]}


def test_read_exec_paths_are_readable_but_not_writable(tree: dict[str, Path]) -> None:
    ro = tree["ro"]

    def body() -> dict[str, int | str]:
        before = err(lambda: _write(ro / "created-before"))
        confine(tree)
        return {
            "before": before,
            "read": _read(ro / "file"),
            "list": len(os.listdir(ro)),
            "ld_cache": err(lambda: open("/etc/ld.so.cache", "rb").close()),
            "append": err(lambda: open(ro / "file", "a").close()),
            "create": err(lambda: _write(ro / "new")),
            "mkdir": err(lambda: os.mkdir(ro / "dir")),
            "unlink": err(lambda: os.unlink(ro / "file")),
        }

    assert in_child(body) == {
        "before": 0,
        "read": "read-only content",
        "list": 2,
        "ld_cache": 0,
        "append": errno.EACCES,
        "create": errno.EACCES,
        "mkdir": errno.EACCES,
        "unlink": errno.EACCES,
    }


def test_list_only_dirs_can_be_listed_but_their_files_not_read(tree: dict[str, Path]) -> None:
    outside = tree["outside"]

    def body() -> dict[str, list[int]]:
        def attempts() -> list[int]:
            return [
                err(lambda: os.listdir(outside)),
                err(lambda: _read(outside / "secret")),
                err(lambda: _write(outside / "new")),
            ]

        before = attempts()
        confine(tree, list_only=[str(outside)])
        return {"before": before, "after": attempts()}

    result = in_child(body)
    assert result["before"] == [0, 0, 0]  # control: each of them works without Landlock
    assert result["after"] == [0, errno.EACCES, errno.EACCES]


def test_read_write_dir_allows_every_operation(tree: dict[str, Path]) -> None:
    rw = tree["rw"]

    def body() -> list[int]:
        confine(tree)
        return [
            err(lambda: _write(rw / "new", "data")),
            err(lambda: os.truncate(rw / "new", 1)),
            err(lambda: os.mkdir(rw / "dir")),
            err(lambda: os.rename(rw / "new", rw / "dir" / "renamed")),
            err(lambda: os.link(rw / "dir" / "renamed", rw / "hard")),
            err(lambda: os.symlink("dir", rw / "sym")),
            err(lambda: os.mkfifo(rw / "fifo")),
            err(lambda: os.unlink(rw / "hard")),
            err(lambda: os.rename(rw / "a" / "moved", rw / "b" / "moved")),
        ]

    assert in_child(body) == [0] * 9


def test_dev_null_in_read_write_is_writable_and_other_devices_are_not(tree: dict[str, Path]) -> None:
    def body() -> dict[str, int]:
        before = err(lambda: open("/dev/zero", "rb").close())
        result = confine(tree)
        assert "/dev/null" in result.ruled
        return {
            "before": before,
            "null_write": err(lambda: _write("/dev/null")),
            "null_read": err(lambda: _read("/dev/null")),
            "zero_read": err(lambda: open("/dev/zero", "rb").close()),
            "full_write": err(lambda: _write("/dev/full")),
        }

    assert in_child(body) == {
        "before": 0,
        "null_write": 0,
        "null_read": 0,
        "zero_read": errno.EACCES,
        "full_write": errno.EACCES,
    }


def test_exec_is_allowed_only_from_listed_paths(tree: dict[str, Path]) -> None:
    outside_true = str(tree["outside"] / "true")

    def body() -> dict[str, int]:
        before = subprocess.run([outside_true], check=False).returncode
        confine(tree)
        return {
            "before": before,
            "system": subprocess.run(["/bin/true"], check=False).returncode,
            "outside": err(lambda: subprocess.run([outside_true], check=False)),
        }

    assert in_child(body) == {"before": 0, "system": 0, "outside": errno.EACCES}


def test_hard_link_of_an_outside_file_into_the_rw_dir_is_denied(tree: dict[str, Path]) -> None:
    rw, outside = tree["rw"], tree["outside"]

    def body() -> dict[str, int]:
        before = err(lambda: os.link(outside / "secret2", rw / "pulled-before"))
        confine(tree)
        return {"before": before, "after": err(lambda: os.link(outside / "secret", rw / "pulled"))}

    result = in_child(body)
    assert result["before"] == 0
    assert result["after"] in (errno.EXDEV, errno.EACCES)
    assert not (rw / "pulled").exists()


def test_rename_out_of_the_rw_dir_is_denied(tree: dict[str, Path]) -> None:
    rw, outside = tree["rw"], tree["outside"]

    def body() -> dict[str, int]:
        before = err(lambda: os.rename(rw / "own2", outside / "own2"))
        confine(tree)
        return {
            "before": before,
            "rename_out": err(lambda: os.rename(rw / "own", outside / "own")),
            "link_out": err(lambda: os.link(rw / "own", outside / "linked")),
        }

    result = in_child(body)
    assert result["before"] == 0
    assert result["rename_out"] in (errno.EXDEV, errno.EACCES)
    assert result["link_out"] in (errno.EXDEV, errno.EACCES)
    assert (rw / "own").exists() and not (outside / "own").exists()


def test_symlink_in_rw_dir_cannot_be_followed_outside(tree: dict[str, Path]) -> None:
    link = tree["rw"] / "link"

    def body() -> dict[str, int]:
        before = err(lambda: _read(link))
        confine(tree)
        return {"before": before, "after": err(lambda: _read(link))}

    assert in_child(body) == {"before": 0, "after": errno.EACCES}


def test_missing_paths_are_skipped_and_reported(tree: dict[str, Path]) -> None:
    missing = str(tree["outside"] / "does-not-exist")

    def body() -> dict[str, Any]:
        result = restrict_self(
            [*SYSTEM_READ, missing], [str(tree["rw"]), "/etc/hostname/x"], deny_tcp=False, scope=False
        )
        return {"skipped": list(result.skipped), "ruled": list(result.ruled)}

    result = in_child(body)
    assert result["skipped"] == [missing, "/etc/hostname/x"]
    assert str(tree["rw"]) in result["ruled"] and missing not in result["ruled"]


@pytest.fixture
def tcp_listener() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


@pytest.mark.skipif(KERNEL_ABI < 4, reason="TCP restrictions need Landlock ABI 4")
@pytest.mark.parametrize("deny_tcp", [True, False])
def test_deny_tcp_blocks_connect_and_bind(tree: dict[str, Path], tcp_listener: int, deny_tcp: bool) -> None:
    def body() -> dict[str, Any]:
        result = confine(tree, deny_tcp=deny_tcp)

        def connect() -> None:
            socket.create_connection(("127.0.0.1", tcp_listener), timeout=5).close()

        def bind() -> None:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))

        return {"tcp_denied": result.tcp_denied, "connect": err(connect), "bind": err(bind)}

    expected = errno.EACCES if deny_tcp else 0
    assert in_child(body) == {"tcp_denied": deny_tcp, "connect": expected, "bind": expected}


@pytest.mark.skipif(KERNEL_ABI < 6, reason="scopes need Landlock ABI 6")
@pytest.mark.parametrize("scope", [True, False])
def test_scope_blocks_signals_to_processes_outside(tree: dict[str, Path], scope: bool) -> None:
    def body() -> dict[str, Any]:
        result = confine(tree, scope=scope)
        return {
            "scoped": result.scoped,
            "parent": err(lambda: os.kill(os.getppid(), 0)),
            "self": err(lambda: os.kill(os.getpid(), 0)),
        }

    expected = errno.EPERM if scope else 0
    assert in_child(body) == {"scoped": scope, "parent": expected, "self": 0}


@pytest.mark.skipif(KERNEL_ABI < 6, reason="scopes need Landlock ABI 6")
@pytest.mark.parametrize("scope", [True, False])
def test_scope_blocks_abstract_unix_sockets_created_outside(tree: dict[str, Path], scope: bool) -> None:
    name = f"\0hanzo-landlock-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(name)
        server.listen()

        def body() -> int:
            confine(tree, scope=scope)

            def connect() -> None:
                with socket.socket(socket.AF_UNIX) as client:
                    client.connect(name)

            return err(connect)

        assert in_child(body) == (errno.EPERM if scope else 0)


def test_max_abi_1_masks_rights_and_keeps_working(tree: dict[str, Path]) -> None:
    """ABI 1 does not handle REFER (reparenting is always denied) nor TRUNCATE (truncate is not controlled)."""
    rw, ro = tree["rw"], tree["ro"]

    def body(max_abi: int | None) -> dict[str, Any]:
        result = confine(tree, max_abi=max_abi, deny_tcp=True, scope=True)
        return {
            "abi": result.abi,
            "handled_fs": result.handled_fs,
            "tcp_denied": result.tcp_denied,
            "scoped": result.scoped,
            "unenforced": len(result.unenforced),
            "reparent": err(lambda: os.rename(rw / "a" / "moved", rw / "b" / "moved")),
            "truncate_ro": err(lambda: os.truncate(ro / "file", 0)),
            "hostname": err(lambda: _read("/etc/hostname")),
        }

    old = in_child(lambda: body(1))
    assert old == {
        "abi": 1,
        "handled_fs": 0x1FFF,
        "tcp_denied": False,
        "scoped": False,
        "unenforced": 4,
        "reparent": errno.EXDEV,
        "truncate_ro": 0,
        "hostname": errno.EACCES,
    }
    _write(ro / "file", "read-only content")
    current = in_child(lambda: body(None))
    assert current["abi"] == KERNEL_ABI and current["handled_fs"] == landlock.handled_fs_rights(KERNEL_ABI)
    assert current["reparent"] == 0
    assert current["truncate_ro"] == (errno.EACCES if KERNEL_ABI >= 3 else 0)


def test_fds_are_closed_on_success_and_on_every_error(tree: dict[str, Path]) -> None:
    def body() -> dict[str, Any]:
        proc_fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
        baseline = _fd_count(proc_fd)
        errors: dict[str, Any] = {}
        # add_rule refuses nsfs inodes (EBADFD): fails after the ruleset fd and a path fd were opened.
        try:
            restrict_self([*SYSTEM_READ, "/proc/self/ns/net"], [], deny_tcp=True, scope=True)
        except LandlockError as exc:
            errors["add_rule"] = [exc.errno, exc.step, exc.path]
        errors["after_add_rule"] = _fd_count(proc_fd)
        confine(tree)
        errors["after_success"] = _fd_count(proc_fd)
        # A domain stacks at most 16 layers: the 17th restrict_self fails at the last step.
        try:
            for _ in range(16):
                confine(tree)
        except LandlockError as exc:
            errors["restrict"] = [exc.errno, exc.step, exc.path]
        errors["after_restrict"] = _fd_count(proc_fd)
        return {"baseline": baseline, **errors}

    result = in_child(body)
    baseline = result["baseline"]
    assert result["add_rule"] == [errno.EBADFD, "add_rule", "/proc/self/ns/net"]
    assert result["restrict"] == [errno.E2BIG, "restrict_self", None]
    assert result["after_add_rule"] == result["after_success"] == result["after_restrict"] == baseline


def test_unreachable_path_is_skipped_not_fatal(tmp_path: Path) -> None:
    """A path the process cannot open (a venv under a mode-700 /root after the uid switch) gets no rule
    instead of failing the whole layer; it stays denied. As root the child first drops to nobody, as the
    launcher does."""
    locked = tmp_path / "locked"
    (locked / "inside").mkdir(parents=True)
    locked.chmod(0)
    try:

        def body() -> list[Any]:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
            result = restrict_self([str(locked / "inside"), "/usr"], [], deny_tcp=False, scope=False)
            return [list(result.skipped), list(result.ruled)]

        assert in_child(body) == [[str(locked / "inside")], ["/usr"]]
    finally:
        locked.chmod(0o700)


def test_refuses_without_no_new_privs() -> None:
    with open("/proc/self/status") as status:
        if "NoNewPrivs:\t1" in status.read():
            pytest.skip("the test process already runs with no_new_privs")

    def body() -> list[Any]:
        try:
            restrict_self(list(SYSTEM_READ), [], deny_tcp=False, scope=False)
        except LandlockError as exc:
            return [exc.errno, exc.step, "no_new_privs" in str(exc), err(lambda: _read("/etc/hostname"))]
        return []

    assert in_child(body, no_new_privs=False) == [errno.EPERM, "restrict_self", True, 0]


@pytest.mark.parametrize("bad", ["relative/path", "/with\0nul"])
def test_rejects_unusable_paths_before_touching_the_kernel(bad: str) -> None:
    def body() -> list[Any]:
        try:
            restrict_self(["/usr"], [bad], deny_tcp=False, scope=False)
        except LandlockError as exc:
            return [exc.errno, exc.step, err(lambda: _read("/etc/hostname"))]
        return []

    assert in_child(body) == [errno.EINVAL, "rule", 0]


def test_result_is_immutable_and_comparable() -> None:
    fields: dict[str, Any] = {
        "abi": 7,
        "handled_fs": 0xFFFF,
        "tcp_denied": True,
        "scoped": True,
        "ruled": ("/usr",),
        "skipped": (),
        "unenforced": (),
    }
    result = LandlockResult(**fields)
    assert result == LandlockResult(**fields) and hash(result) == hash(LandlockResult(**fields))
    assert result != LandlockResult(**{**fields, "abi": 6})
    assert "abi=7" in repr(result)
    with pytest.raises(AttributeError):
        setattr(result, "abi", 1)  # noqa: B010 (the attribute is what is under test)


def test_restrictions_are_inherited_across_exec(tree: dict[str, Path]) -> None:
    def cat_hostname() -> int:
        return subprocess.run(["/bin/cat", "/etc/hostname"], capture_output=True, check=False).returncode

    def body() -> list[int]:
        before = cat_hostname()
        confine(tree)
        return [before, cat_hostname()]

    assert in_child(body) == [0, 1]


def test_child_killed_by_signal_is_reported() -> None:
    """The helper itself must not hide a dead child (otherwise every test above could pass vacuously)."""
    with pytest.raises(AssertionError, match="child died"):
        in_child(lambda: os.kill(os.getpid(), signal.SIGKILL))
