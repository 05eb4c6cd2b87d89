"""`LinuxSandbox.harden` is pure: command + policy -> one `LaunchPlan`, compared here as a whole.

Also the choice of the command's uid (never 0), the PATH the sandbox uid can actually use, and the DAC
reachability check behind it. Tests that need a root or a non-root server run for real when the test
process is one, and by patching `os.geteuid` (harden only reads ids and stats paths) when it is not.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from hanzo_sandbox_mcp.launch_plan import NAMESPACE_NAMES, LandlockSpec, LaunchPlan, RootSpec
from hanzo_sandbox_mcp.linux import sandbox as linux_sandbox
from hanzo_sandbox_mcp.linux.paths import RW_DEVICES, SYSTEM_READ_PATHS, python_paths, reachable_by
from hanzo_sandbox_mcp.linux.sandbox import LinuxSandbox, command_ids
from hanzo_sandbox_mcp.netproxy.env import proxy_env
from hanzo_sandbox_mcp.policy import NetworkMode, SandboxPolicy

IS_ROOT = os.geteuid() == 0
MiB = 1024 * 1024
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "OPENAI_API_KEY": "sk-secret", "HOME": "/root"}


def _filter(network: NetworkMode) -> bytes | None:
    try:
        from hanzo_sandbox_mcp.linux import seccomp

        return seccomp.build_filter(network.value)
    except (ImportError, OSError, RuntimeError, ValueError):
        return None


@pytest.fixture(scope="module")
def linux() -> LinuxSandbox:
    return LinuxSandbox()


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server is root (for real, or as harden sees it)."""
    if not IS_ROOT:
        monkeypatch.setattr(os, "geteuid", lambda: 0)


@pytest.fixture
def as_user(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """The server is an unprivileged user (for real, or as harden sees it); returns its ids."""
    if IS_ROOT:
        monkeypatch.setattr(os, "geteuid", lambda: 1000)
        monkeypatch.setattr(os, "getuid", lambda: 1000)
        monkeypatch.setattr(os, "getgid", lambda: 1001)
        return 1000, 1001
    return os.getuid(), os.getgid()


@pytest.fixture
def root_owned_dir() -> Path:
    """An existing directory owned by uid 0 (harden only stats the workdir)."""
    assert os.stat("/").st_uid == 0
    return Path("/")


# --- the whole plan ------------------------------------------------------------------------------------


@pytest.mark.parametrize("network", list(NetworkMode))
def test_plan_for_each_network_mode(linux: LinuxSandbox, tmp_path: Path, network: NetworkMode) -> None:
    policy = SandboxPolicy(network=network).with_workdir(tmp_path)
    uid, gid = (65534, 65534) if IS_ROOT else (os.getuid(), os.getgid())  # tmp_path is the server's own

    plan = linux.harden(["/bin/sh", "-c", "echo hi"], policy, env=ENV)

    assert plan == LaunchPlan(
        argv=("/bin/sh", "-c", "echo hi"),
        env={
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C",
            "HOME": str(tmp_path),
            "TMPDIR": str(tmp_path / ".tmp"),
            "PWD": str(tmp_path),
            "PYTHONDONTWRITEBYTECODE": "1",
            **(proxy_env(3128) if network is NetworkMode.ALLOWLIST else {}),
        },
        cwd=str(tmp_path),
        namespaces=("user", "pid", "mount", "ipc", "uts")
        if network is NetworkMode.FULL
        else ("user", "pid", "mount", "net", "ipc", "uts"),
        uid=uid,
        gid=gid,
        loopback=network in (NetworkMode.LOOPBACK, NetworkMode.ALLOWLIST),
        proxy_port=3128 if network is NetworkMode.ALLOWLIST else None,
        tmp_size_mb=64,
        rlimits={"as": 2048 * MiB, "cpu": 300, "nproc": 64, "nofile": 1024, "fsize": 256 * MiB, "core": 0},
        no_new_privs=True,
        landlock=LandlockSpec(
            read_exec=(*SYSTEM_READ_PATHS, *python_paths()),
            read_write=(str(tmp_path), "/dev/null", "/dev/zero", "/dev/full", "/dev/tty"),
            deny_tcp=network is NetworkMode.NONE,
            scope=True,
        ),
        root=RootSpec(
            read_only=(*SYSTEM_READ_PATHS, *python_paths()),
            read_write=(str(tmp_path), "/dev/null", "/dev/zero", "/dev/full", "/dev/tty"),
        ),
        seccomp_bpf=_filter(network),
        strict=False,
        wrapper=(),
    )


def test_every_known_namespace_is_requested_unless_the_network_is_full(linux: LinuxSandbox, tmp_path: Path) -> None:
    for network in NetworkMode:
        plan = linux.harden(["true"], SandboxPolicy(network=network).with_workdir(tmp_path), env=ENV)
        expected = [n for n in NAMESPACE_NAMES if not (network is NetworkMode.FULL and n == "net")]
        assert list(plan.namespaces) == expected


def test_network_none_gets_its_own_seccomp_filter(linux: LinuxSandbox, tmp_path: Path) -> None:
    plans = {n: linux.harden(["true"], SandboxPolicy(network=n).with_workdir(tmp_path), env=ENV) for n in NetworkMode}
    if plans[NetworkMode.NONE].seccomp_bpf is None:
        pytest.skip("libseccomp is not available here: no filter is compiled")
    assert plans[NetworkMode.NONE].seccomp_bpf != plans[NetworkMode.LOOPBACK].seccomp_bpf
    assert all(p.seccomp_bpf for p in plans.values())


def test_policy_limits_flow_into_the_plan(linux: LinuxSandbox, tmp_path: Path) -> None:
    policy = SandboxPolicy(
        max_memory_mb=512, max_cpu_secs=7, max_procs=9, max_open_fds=99, max_file_sz_mb=3, tmp_size_mb=32
    ).with_workdir(tmp_path)
    plan = linux.harden(["true"], policy, env=ENV)
    assert plan.rlimits == {"as": 512 * MiB, "cpu": 7, "nproc": 9, "nofile": 99, "fsize": 3 * MiB, "core": 0}
    assert plan.tmp_size_mb == 32


def test_extra_fs_read_and_write_flow_into_landlock(linux: LinuxSandbox, tmp_path: Path) -> None:
    policy = SandboxPolicy(
        extra_fs_read=(Path("/opt/tools"), Path("/srv/data")), extra_fs_write=(Path("/var/cache/build"),)
    ).with_workdir(tmp_path)
    spec = linux.harden(["true"], policy, env=ENV).landlock
    assert spec is not None
    assert spec.read_exec[-2:] == ("/opt/tools", "/srv/data")
    assert spec.read_exec[: len(SYSTEM_READ_PATHS)] == SYSTEM_READ_PATHS
    assert spec.read_write == (str(tmp_path), *RW_DEVICES, "/var/cache/build")
    assert "/var/cache/build" not in spec.read_exec


def test_the_private_root_holds_the_same_allowlist_as_landlock(linux: LinuxSandbox, tmp_path: Path) -> None:
    policy = SandboxPolicy(extra_fs_read=(Path("/opt/tools"),), extra_fs_write=(Path("/var/cache/build"),))
    plan = linux.harden(["true"], policy.with_workdir(tmp_path), env=ENV)
    assert plan.root is not None and plan.landlock is not None
    assert plan.root.read_only == plan.landlock.read_exec
    assert plan.root.read_write == plan.landlock.read_write


def test_extra_env_flows_into_the_environment(linux: LinuxSandbox, tmp_path: Path) -> None:
    policy = SandboxPolicy(extra_env=("CI", "MY_FLAG")).with_workdir(tmp_path)
    plan = linux.harden(["true"], policy, env={**ENV, "CI": "1", "MY_FLAG": "on", "GITHUB_TOKEN": "ghp_x"})
    assert plan.env["CI"] == "1"
    assert plan.env["MY_FLAG"] == "on"
    assert "GITHUB_TOKEN" not in plan.env
    assert "OPENAI_API_KEY" not in plan.env
    assert plan.env["HOME"] == str(tmp_path)


def test_the_server_environment_is_scrubbed_when_no_env_is_given(
    linux: LinuxSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    monkeypatch.setenv("TZ", "UTC")
    plan = linux.harden(["true"], SandboxPolicy().with_workdir(tmp_path))
    assert "AWS_SECRET_ACCESS_KEY" not in plan.env
    assert "hunter2" not in repr(plan)
    assert plan.env["TZ"] == "UTC"


@pytest.mark.parametrize("strict", [True, False])
def test_strict_flows_into_the_plan(linux: LinuxSandbox, tmp_path: Path, strict: bool) -> None:
    plan = linux.harden(["true"], SandboxPolicy(strict=strict).with_workdir(tmp_path), env=ENV)
    assert plan.strict is strict


def test_harden_needs_a_workdir(linux: LinuxSandbox) -> None:
    with pytest.raises(ValueError, match="session_workdir must be set"):
        linux.harden(["true"], SandboxPolicy(), env=ENV)


def test_harden_touches_nothing_on_disk(linux: LinuxSandbox, tmp_path: Path) -> None:
    before = sorted(tmp_path.iterdir())
    mode = tmp_path.stat().st_mode
    linux.harden(["true"], SandboxPolicy().with_workdir(tmp_path), env=ENV)
    assert sorted(tmp_path.iterdir()) == before
    assert tmp_path.stat().st_mode == mode


# --- the command's uid ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("as_root")
def test_as_root_a_root_owned_workdir_runs_as_the_sandbox_uid(linux: LinuxSandbox, root_owned_dir: Path) -> None:
    plan = linux.harden(["true"], SandboxPolicy().with_workdir(root_owned_dir), env=ENV)
    assert (plan.uid, plan.gid) == (65534, 65534)
    custom = SandboxPolicy(sandbox_uid=4242, sandbox_gid=4243).with_workdir(root_owned_dir)
    plan = linux.harden(["true"], custom, env=ENV)
    assert (plan.uid, plan.gid) == (4242, 4243)


@pytest.mark.usefixtures("as_root")
def test_as_root_a_missing_workdir_falls_back_to_the_sandbox_uid(linux: LinuxSandbox, tmp_path: Path) -> None:
    plan = linux.harden(
        ["true"], SandboxPolicy(sandbox_uid=777, sandbox_gid=778).with_workdir(tmp_path / "gone"), env=ENV
    )
    assert (plan.uid, plan.gid) == (777, 778)


@pytest.fixture
def user_owned_workdir(tmp_path: Path) -> Path:
    """A workdir owned by a non-root user: chowned to 1234:1235 as root, the test user's own otherwise."""
    path = tmp_path / "user-dir"
    path.mkdir()
    if IS_ROOT:
        os.chown(path, 1234, 1235)
    return path


@pytest.mark.usefixtures("as_root")
def test_as_root_a_user_owned_workdir_runs_as_its_owner(linux: LinuxSandbox, user_owned_workdir: Path) -> None:
    """A directory the user passed in is never chowned: the command runs as whoever owns it."""
    st = user_owned_workdir.stat()
    assert st.st_uid != 0
    policy = SandboxPolicy(sandbox_uid=4242, sandbox_gid=4243).with_workdir(user_owned_workdir)
    plan = linux.harden(["true"], policy, env=ENV)
    assert (plan.uid, plan.gid) == (st.st_uid, st.st_gid)
    assert (user_owned_workdir.stat().st_uid, user_owned_workdir.stat().st_gid) == (st.st_uid, st.st_gid)


@pytest.mark.skipif(not IS_ROOT, reason="needs root to chown the workdir to group 0")
def test_as_root_the_command_never_gets_gid_0(linux: LinuxSandbox, tmp_path: Path) -> None:
    workdir = tmp_path / "alice"
    workdir.mkdir()
    os.chown(workdir, 1234, 0)
    plan = linux.harden(["true"], SandboxPolicy().with_workdir(workdir), env=ENV)
    assert plan.uid == 1234
    assert plan.gid != 0


def test_the_sandbox_uid_can_never_be_root() -> None:
    for field in ("sandbox_uid", "sandbox_gid"):
        with pytest.raises(ValidationError):
            SandboxPolicy(**{field: 0})


def test_as_a_user_commands_run_as_that_user(
    linux: LinuxSandbox, as_user: tuple[int, int], root_owned_dir: Path, tmp_path: Path
) -> None:
    for workdir in (root_owned_dir, tmp_path):
        policy = SandboxPolicy(sandbox_uid=4242, sandbox_gid=4243).with_workdir(workdir)
        plan = linux.harden(["true"], policy, env=ENV)
        assert (plan.uid, plan.gid) == as_user
        assert command_ids(policy, workdir) == as_user


def test_as_a_user_path_is_passed_verbatim(linux: LinuxSandbox, as_user: tuple[int, int], tmp_path: Path) -> None:
    path = "/nonexistent/bin::/usr/bin:/bin"
    plan = linux.harden(["true"], SandboxPolicy().with_workdir(tmp_path), env={"PATH": path})
    assert plan.env["PATH"] == path


# --- PATH the sandbox uid can use ----------------------------------------------------------------------


@pytest.fixture
def locked_bin(tmp_path: Path) -> Iterator[Path]:
    """`<tmp>/locked/bin` where `locked` is mode 0000: no uid but root may search it."""
    outer = tmp_path / "open"
    locked = outer / "locked"
    (locked / "bin").mkdir(parents=True)
    outer.chmod(0o755)
    locked.chmod(0)
    yield locked / "bin"
    locked.chmod(0o700)


@pytest.mark.usefixtures("as_root")
def test_as_root_path_entries_the_command_uid_cannot_reach_are_dropped(
    linux: LinuxSandbox, root_owned_dir: Path, locked_bin: Path
) -> None:
    path = f"/usr/local/bin:{locked_bin}:/usr/bin::/nonexistent/bin:/bin"
    plan = linux.harden(["true"], SandboxPolicy().with_workdir(root_owned_dir), env={"PATH": path})
    assert plan.env["PATH"] == "/usr/local/bin:/usr/bin:/bin"


@pytest.mark.skipif(not IS_ROOT, reason="/root is only unreachable for a uid other than its owner")
def test_as_root_pyenv_style_entries_under_a_private_home_are_dropped(linux: LinuxSandbox, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".pyenv" / "shims").mkdir(parents=True)
    home.chmod(0o700)
    plan = linux.harden(["true"], SandboxPolicy().with_workdir(tmp_path), env={"PATH": f"{home}/.pyenv/shims:/usr/bin"})
    assert plan.env["PATH"] == "/usr/bin"


# --- reachable_by and python_paths ---------------------------------------------------------------------


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A 0755 directory under /tmp that any uid can reach (pytest's own tmp_path lives under a 0700 dir)."""
    path = Path(tempfile.mkdtemp(prefix="hanzo-reach-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    for sub in path.rglob("*"):
        if sub.is_dir() and not sub.is_symlink():
            sub.chmod(0o755)
    shutil.rmtree(path)


def test_reachable_by_checks_every_directory_on_the_way(open_tmp: Path) -> None:
    top = open_tmp / "top"
    (top / "mid" / "leaf").mkdir(parents=True)
    if IS_ROOT:
        os.chown(top, 4321, 4322)  # an owner that is not root, which searches anything
    st = os.stat(top)
    owner, group = st.st_uid, st.st_gid
    stranger = 54321 if owner != 54321 else 54322

    top.chmod(0o755)
    assert reachable_by(top / "mid" / "leaf", stranger, stranger)
    assert reachable_by("/", stranger, stranger)

    top.chmod(0o750)  # group may search, others may not
    assert not reachable_by(top / "mid" / "leaf", stranger, stranger)
    assert reachable_by(top / "mid" / "leaf", stranger, group)

    top.chmod(0o075)  # the owner may not search, even though group and others may
    assert not reachable_by(top / "mid", owner, group)
    if IS_ROOT:  # (a non-root caller cannot stat below `top` itself, so it cannot answer for root)
        assert reachable_by(top / "mid", 0, 0)  # root searches anything
    top.chmod(0o755)


def test_reachable_by_a_missing_path_is_false(tmp_path: Path) -> None:
    assert not reachable_by(tmp_path / "missing" / "bin", os.getuid(), os.getgid())


def test_reachable_by_a_file_needs_only_its_parents(open_tmp: Path) -> None:
    target = open_tmp / "file"
    target.write_text("x")
    target.chmod(0)
    assert reachable_by(target, 54321, 54321)


def test_python_paths_cover_the_server_interpreter_but_never_system_roots() -> None:
    paths = python_paths()
    assert list(paths) == sorted(set(paths))
    for path in paths:
        assert path != "/"
        assert not path.startswith("/usr")
    for prefix in (sys.prefix, sys.base_prefix):
        if prefix != "/" and not prefix.startswith("/usr"):
            assert prefix in paths


def test_python_paths_enter_the_plan(linux: LinuxSandbox, tmp_path: Path) -> None:
    spec = linux.harden(["true"], SandboxPolicy().with_workdir(tmp_path), env=ENV).landlock
    assert spec is not None
    for path in python_paths():
        assert path in spec.read_exec
    assert stat.S_ISDIR(os.stat(sys.prefix).st_mode)


def test_command_ids_is_what_harden_uses(linux: LinuxSandbox, tmp_path: Path) -> None:
    policy = SandboxPolicy().with_workdir(tmp_path)
    plan = linux.harden(["true"], policy, env=ENV)
    assert (plan.uid, plan.gid) == linux_sandbox.command_ids(policy, tmp_path)
    assert plan.uid != 0


def test_a_session_scratch_on_its_filesystem_becomes_the_plans_tmp_and_shm(linux: LinuxSandbox, tmp_path: Path) -> None:
    tmp, shm = tmp_path / "tmp", tmp_path / "shm"
    policy = SandboxPolicy().with_workdir(tmp_path / "work", (tmp, shm))
    assert linux.harden(["true"], policy, env=ENV).scratch == (str(tmp), str(shm))
    assert linux.harden(["true"], SandboxPolicy().with_workdir(tmp_path), env=ENV).scratch is None
