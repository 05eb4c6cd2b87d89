"""Writing outside the workdir: files the server user owns, world-writable directories, /proc/sys, ~.

Every denial is paired with the same write succeeding in the workdir (or the private /tmp), so the
refusal is the sandbox's and not a broken command. Outside paths are absent from the private root (ENOENT)
or read-only binds (EROFS), and Landlock refuses what stays visible (EACCES); `assert_fs_blocked` checks
the matching layer is reported. chmod/utimes/xattr are the case Landlock cannot cover on its own. With
every layer on, the private root answers first; test_single_layer_fs.py runs each layer alone.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import uuid
from pathlib import Path

import pytest
from _security_support import assert_fs_blocked, assert_protection, py


def _fs_layers_fired(result: object) -> None:
    assert_protection(result, fs_isolated=True, private_root=True)
    abi = result.protection.landlock_abi  # type: ignore[attr-defined]
    assert abi is not None and abi >= 1, result.protection  # type: ignore[attr-defined]


WRITE_OPS = {
    "create": "echo pwned > {d}/new-file",
    "append": "echo pwned >> {d}/existing",
    "truncate": ": > {d}/existing",
    "mkdir": "mkdir {d}/newdir",
    "symlink": "ln -s /etc/passwd {d}/link",
    "fifo": "mkfifo {d}/fifo",
    "rename": "mv {d}/existing {d}/renamed",
    "unlink": "rm {d}/existing",
    "chmod": "chmod 777 {d}/existing",
    "touch-mtime": "touch -d 2001-01-01 {d}/existing",
}


def test_writing_in_workdir_works(sandbox_run):
    """Positive control: every write operation below succeeds inside the workdir."""
    setup = "mkdir -p d && echo original > d/existing && "
    ops = " && ".join(op.format(d="d") for name, op in WRITE_OPS.items() if name not in ("rename", "unlink"))
    result = sandbox_run(setup + ops + " && mv d/existing d/renamed && rm d/renamed && echo ALL-OK")
    assert result.exit_code == 0, result
    assert "ALL-OK" in result.stdout
    _fs_layers_fired(result)


@pytest.mark.parametrize("op", sorted(WRITE_OPS))
def test_sandbox_blocks_write_to_world_writable_dir_outside_workdir(sandbox_run, world_writable_dir, op):
    """DAC allows these writes (1777 dir, 0666 file): the private root hides the directory, and Landlock
    would refuse it (each alone: test_single_layer_fs.py)."""
    existing = world_writable_dir / "existing"
    existing.write_text("original\n")
    existing.chmod(0o666)
    before = sorted(os.listdir(world_writable_dir))
    result = sandbox_run(WRITE_OPS[op].format(d=shlex.quote(str(world_writable_dir))))
    assert result.exit_code != 0, f"{op} succeeded outside the workdir: {result}"
    assert_fs_blocked(result)
    assert sorted(os.listdir(world_writable_dir)) == before
    assert existing.read_text() == "original\n"
    if op == "chmod":
        assert existing.stat().st_mode & 0o777 == 0o666


def test_sandbox_blocks_write_to_server_user_private_dir(sandbox_run, private_secret):
    """Overwriting the server user's own file (like ~/.bashrc or ~/.ssh/authorized_keys)."""
    path = shlex.quote(str(private_secret.path))
    result = sandbox_run(f"echo pwned > {path}; echo pwned >> {path}; rm -f {path}; true")
    assert private_secret.path.read_text().strip() == private_secret.content
    assert_fs_blocked(result)


def test_sandbox_blocks_write_to_server_home(sandbox_run):
    """A new dotfile in the server user's home (persistence via ~/.bashrc, ~/.profile, ~/.config)."""
    home = Path.home()
    name = f".hanzo-sec-probe-{uuid.uuid4().hex[:8]}"
    try:
        result = sandbox_run(
            f"echo pwned > {shlex.quote(str(home / name))}; "
            f"echo pwned >> {shlex.quote(str(home / '.bashrc'))}; "
            f"mkdir -p {shlex.quote(str(home / '.config' / name))}; true"
        )
        assert not (home / name).exists()
        assert not (home / ".config" / name).exists()
        assert_fs_blocked(result)
    finally:
        (home / name).unlink(missing_ok=True)
        if (home / ".config" / name).is_dir():
            (home / ".config" / name).rmdir()


def test_sandbox_blocks_write_to_the_server_code(sandbox_run):
    """The package itself (a poisoned launcher would run unconfined for every later call)."""
    import hanzo_sandbox_mcp

    pkg = Path(hanzo_sandbox_mcp.__file__).parent
    target = pkg / "launch_plan.py"
    before = target.read_bytes()
    result = sandbox_run(
        f"echo 'import os; os.system(\"id\")' >> {shlex.quote(str(target))}; "
        f"echo x > {shlex.quote(str(pkg / 'evil.py'))}; true"
    )
    assert target.read_bytes() == before
    assert not (pkg / "evil.py").exists()
    assert_fs_blocked(result)


def test_sandbox_blocks_kernel_tunables_via_proc_sys(sandbox_run):
    """Writes to /proc/sys (kernel.core_pattern would run a host program as root)."""
    before = Path("/proc/sys/kernel/core_pattern").read_text()
    result = sandbox_run(
        "echo '|/tmp/evil' > /proc/sys/kernel/core_pattern; echo 3 > /proc/sys/vm/drop_caches; "
        "echo 1 > /proc/sysrq-trigger; true"
    )
    assert Path("/proc/sys/kernel/core_pattern").read_text() == before
    assert_fs_blocked(result)


def test_private_tmp_writes_stay_in_the_sandbox(sandbox_run):
    """/tmp is writable (positive control) but private: the host /tmp never sees the file, and the next
    call starts with an empty /tmp."""
    name = f"hanzo-sec-tmp-{uuid.uuid4().hex}"
    result = sandbox_run(f"echo hi > /tmp/{name} && cat /tmp/{name} && echo hi > /dev/shm/{name} && echo OK")
    assert "OK" in result.stdout, result
    assert not Path("/tmp", name).exists()
    assert not Path("/dev/shm", name).exists()
    again = sandbox_run(f"ls /tmp/{name}; true")
    assert "No such file or directory" in again.stderr
    assert_protection(result, private_tmp=True)


def test_sandbox_blocks_chmod_of_server_user_secret(sandbox_run, private_secret):
    """chmod 0644 on the server user's 0600 key (and 0777 on its 0700 directory) would expose it to every
    local user. Landlock has no access right for chmod/chown/utimes: only DAC (a different uid) or a
    read-only mount stops this, so it is a real risk when commands keep the server's uid."""
    key, parent = private_secret.path, private_secret.path.parent
    try:
        result = sandbox_run(
            f"chmod 0644 {shlex.quote(str(key))}; chmod 0777 {shlex.quote(str(parent))}; "
            f"touch -d 2001-01-01 {shlex.quote(str(key))}; "
            + py(
                "import os, sys\ntry: os.setxattr(sys.argv[1], 'user.hanzo', b'x')\nexcept OSError as e: print(e)",
                str(key),
            )
            + "; true"
        )
        assert key.stat().st_mode & 0o777 == 0o600, f"key mode is now {key.stat().st_mode & 0o777:o}: {result}"
        assert parent.stat().st_mode & 0o777 == 0o700, f"dir mode is now {parent.stat().st_mode & 0o777:o}"
        assert key.stat().st_mtime > 1e9 + 1e8, "the key's mtime was rewritten from inside the sandbox"
        with contextlib.suppress(OSError):
            assert os.getxattr(key, "user.hanzo") != b"x", "an xattr was set on the key from inside the sandbox"
        assert_fs_blocked(result)
    finally:
        key.chmod(0o600)
        parent.chmod(0o700)
