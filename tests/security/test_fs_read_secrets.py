"""Reading the server user's secrets from inside the sandbox.

Each attack reads a file outside the workdir that the command must not see; each positive control reads an
allowed file with the very same tool, so a refusal cannot come from a broken `cat`. Two layers answer:
the private root (the path does not exist inside: ENOENT) and Landlock (EACCES where a path is visible);
`assert_fs_blocked` checks that the layer matching the error is reported. Each secret is asserted to exist
on the host first, so "No such file" is never a typo. The world-readable secret is the sharp case: DAC
allows the read. Landlock alone (no private root) is exercised in test_degradation.py.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from _security_support import IS_ROOT, assert_fs_blocked, assert_protection, py

from hanzo_sandbox_mcp.linux.paths import python_paths


def _fs_layers_fired(result: object) -> None:
    assert_protection(result, fs_isolated=True, private_root=True)
    abi = result.protection.landlock_abi  # type: ignore[attr-defined]
    assert abi is not None and abi >= 1, f"landlock_abi={abi!r}: {result.protection}"  # type: ignore[attr-defined]


def test_reading_allowed_system_files_works(sandbox_run):
    """Positive control for every denial below: cat, python and ls work on allowlisted paths."""
    result = sandbox_run(
        "cat /etc/passwd | head -1 && "
        + py("print(open('/etc/ld.so.cache','rb').read(4) != b'')")
        + " && ls /usr/bin | grep -c . >/dev/null && echo LS-OK"
    )
    assert result.exit_code == 0, result
    assert "root:" in result.stdout
    assert "True" in result.stdout and "LS-OK" in result.stdout
    _fs_layers_fired(result)


def test_reading_own_workdir_file_works(sandbox_run, workdir):
    """Positive control: a file the command wrote in its workdir reads back."""
    result = sandbox_run('echo workdir-content > mine.txt && cat mine.txt && cat "$PWD/mine.txt"')
    assert result.exit_code == 0, result
    assert result.stdout.count("workdir-content") == 2


def test_sandbox_blocks_reading_server_user_private_key(sandbox_run, private_secret):
    """A 0600 key in a 0700 directory owned by the server uid (a stand-in for ~/.ssh/id_ed25519)."""
    path = shlex.quote(str(private_secret.path))
    result = sandbox_run(f"cat {path}; ls {shlex.quote(str(private_secret.path.parent))}")
    assert private_secret.path.is_file()
    assert result.exit_code != 0
    assert_fs_blocked(result, secret=private_secret.content)
    assert "id_ed25519" not in result.stdout  # the listing failed too


def test_sandbox_blocks_reading_world_readable_file_outside_allowlist(sandbox_run, world_readable_secret):
    """DAC allows this read (0644 in 0755): only Landlock or the mount namespace can stop it."""
    path = str(world_readable_secret.path)
    assert os.access(path, os.R_OK)
    result = sandbox_run(
        f"cat {shlex.quote(path)}; "
        + py(
            "import sys\n"
            "try:\n open(sys.argv[1]).read(); print('READ-OK')\n"
            "except OSError as e: print('ERR', e.errno, e.strerror)",
            path,
        )
    )
    assert_fs_blocked(result, secret=world_readable_secret.content)
    assert "READ-OK" not in result.stdout
    assert "ERR 2 " in result.stdout or "ERR 13 " in result.stdout, result.stdout  # ENOENT (root) / EACCES


def test_sandbox_blocks_listing_directory_outside_allowlist(sandbox_run, world_readable_secret):
    """Directory listing (READ_DIR) is denied too, even where DAC allows it."""
    parent = shlex.quote(str(world_readable_secret.path.parent))
    result = sandbox_run(f"ls -la {parent}")
    assert result.exit_code != 0
    assert "credentials" not in result.stdout
    assert_fs_blocked(result)


def test_sandbox_blocks_reading_etc_files_outside_the_etc_allowlist(sandbox_run):
    """World-readable /etc files not on the partial /etc allowlist (fstab, hostname, machine-id...)."""
    candidates = [
        p
        for p in ("/etc/hostname", "/etc/fstab", "/etc/machine-id", "/etc/environment", "/etc/login.defs")
        if os.path.isfile(p) and os.access(p, os.R_OK) and os.stat(p).st_mode & 0o004
    ]
    if not candidates:
        pytest.skip("no world-readable /etc file outside the allowlist exists on this machine")
    target = candidates[0]
    result = sandbox_run(
        f"cat {shlex.quote(target)} >/dev/null && echo READ-OK; cat /etc/passwd >/dev/null && echo CONTROL-OK"
    )
    assert "READ-OK" not in result.stdout, f"{target} was readable: {result}"
    assert "CONTROL-OK" in result.stdout  # the same cat reads /etc/passwd (allowlisted)
    assert_fs_blocked(result)


def test_sandbox_blocks_reading_shadow_and_ssh_host_keys(sandbox_run):
    targets = [p for p in ("/etc/shadow", "/etc/gshadow") if os.path.exists(p)]
    targets += sorted(str(p) for p in Path("/etc/ssh").glob("ssh_host_*_key")) if Path("/etc/ssh").is_dir() else []
    if not targets:
        pytest.skip("neither /etc/shadow nor ssh host keys exist here")
    quoted = " ".join(shlex.quote(t) for t in targets)
    result = sandbox_run(f'for f in {quoted}; do cat "$f" >/dev/null && echo "READ-OK $f"; done; true')
    assert "READ-OK" not in result.stdout, result
    assert_fs_blocked(result)


def test_sandbox_blocks_reading_real_home_ssh_dir(sandbox_run):
    """The server user's real ~/.ssh (and ~ itself), when they exist."""
    home = Path.home()
    ssh = home / ".ssh"
    if not home.is_dir():
        pytest.skip(f"the server user's home {home} does not exist")
    files = [p for p in ssh.iterdir() if p.is_file()] if ssh.is_dir() else []
    cmds = [f"ls -a {shlex.quote(str(home))} && echo LIST-HOME-OK"]
    home_files = sorted(p for p in home.iterdir() if p.is_file())[:1]  # ~/.profile, say
    cmds += [f"cat {shlex.quote(str(p))} >/dev/null && echo READ-OK" for p in [*files[:5], *home_files]]
    result = sandbox_run("; ".join(cmds) + "; true")
    if "LIST-HOME-OK" in result.stdout:
        # Only a private-root directory may be listed (the private root is listable): one that exists there
        # because an allowlisted path (the server's Python, a checkout's venv) lies below it, holding
        # nothing of the real home but the first step towards that path.
        assert result.protection.private_root, result
        below = [Path(p).relative_to(home).parts[0] for p in python_paths() if Path(p).is_relative_to(home)]
        listed = set(result.stdout.split("LIST-HOME-OK")[0].split())
        assert listed <= {".", "..", *below}, f"the real home was listed: {sorted(listed)}"
    assert "READ-OK" not in result.stdout, result
    assert_fs_blocked(result)


def test_sandbox_blocks_reading_secret_via_proc_self_root(sandbox_run, world_readable_secret):
    """/proc/self/root/<path> and /proc/1/root/<path> are the same files through another name."""
    path = str(world_readable_secret.path)
    result = sandbox_run(
        f"cat /proc/self/root{shlex.quote(path)}; cat /proc/1/root{shlex.quote(path)}; "
        f"cat /proc/self/cwd/../../../../..{shlex.quote(path)}; true"
    )
    assert_fs_blocked(result, secret=world_readable_secret.content)


def test_sandbox_blocks_reading_another_sessions_workdir(sandbox_run, new_workdir):
    """Another session's workdir (same uid as ours): only Landlock keeps sessions apart from each other."""
    other = new_workdir()
    secret = "OTHER-SESSION-SECRET-7f3a"
    first = sandbox_run(f"echo {secret} > notes.txt && cat notes.txt", workdir=other)
    assert secret in first.stdout, first  # positive control: the other session can read its own file
    result = sandbox_run(f"cat {shlex.quote(str(other / 'notes.txt'))}; ls {shlex.quote(str(other))}; true")
    assert_fs_blocked(result, secret=secret)
    assert "notes.txt" not in result.stdout


@pytest.mark.skipif(not IS_ROOT, reason="/root only matters when the server runs as root")
def test_sandbox_blocks_reading_root_home(sandbox_run):
    result = sandbox_run("ls /root && echo LISTED; cat /root/.profile; true")
    assert "LISTED" not in result.stdout
    assert_fs_blocked(result)
