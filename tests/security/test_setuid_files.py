"""No setuid or setgid file can be made in the workdir, whatever syscall the command uses.

The workdir's host path belongs to the command's uid, and `nosuid` covers only the sandbox's own mount: a
setuid copy of a program left there (`cp /usr/bin/cat ./cat; chmod 4755 ./cat`) would run as that uid for any
host user who finds the path (it is in the world-readable /proc/PID/mountinfo), and all sessions share the
uid. The seccomp filter answers EPERM to chmod, fchmod, fchmodat, fchmodat2, creat, mknod, mknodat, and to
open/openat creating a file, whenever the mode carries S_ISUID or S_ISGID; openat2, whose mode BPF cannot
read, answers ENOSYS.

Each attack has its control: the same code, as the same uid, unsandboxed, in a directory that uid owns,
succeeds and leaves the bit set. Plain modes (755, 644) keep working inside.
"""

from __future__ import annotations

import errno
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from _security_support import assert_protection, make_workdir, py, run_in_sandbox
from support.controls import python_as_command_uid, run_as_command_uid

PROBE = r"""
import ctypes, json, os, stat
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
os.umask(0o022)
AT_FDCWD = -100

def new(name, mode=0o755):
    os.close(os.open(name, os.O_CREAT | os.O_WRONLY, mode))
    return name

def syscall(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *args)
    if r == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r

def fchmodat2(name, mode):
    syscall(452, AT_FDCWD, new(name).encode(), mode, 0)
    return name

def openat2(name):
    how = (ctypes.c_uint64 * 3)(os.O_CREAT | os.O_WRONLY, 0o644, 0)  # struct open_how: flags, mode, resolve
    return syscall(437, AT_FDCWD, name.encode(), how, 24)

def setgid_dir(name):
    os.mkdir(name, 0o755)
    os.chmod(name, 0o2755)
    return name

CASES = {
    "os.chmod 4755": lambda: os.chmod(new("f-chmod-suid"), 0o4755) or "f-chmod-suid",
    "os.chmod 2755": lambda: os.chmod(new("f-chmod-sgid"), 0o2755) or "f-chmod-sgid",
    "os.open O_CREAT 4755": lambda: os.open("f-open-suid", os.O_CREAT | os.O_WRONLY, 0o4755),
    "os.open O_TMPFILE 2755": lambda: os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o2755),
    "os.mknod S_IFREG 4755": lambda: os.mknod("f-mknod-suid", stat.S_IFREG | 0o4755) or "f-mknod-suid",
    "fchmodat2 4755": lambda: fchmodat2("f-fchmodat2-suid", 0o4755),
    "chmod g+s on a directory": lambda: setgid_dir("d-sgid"),
    "os.chmod 755": lambda: os.chmod(new("f-plain-755", 0o600), 0o755) or "f-plain-755",
    "os.chmod 644": lambda: os.chmod(new("f-plain-644"), 0o644) or "f-plain-644",
    "openat2 O_CREAT 644": lambda: openat2("f-openat2"),
}
out = {}
for case, attempt in CASES.items():
    try:
        made = attempt()
    except OSError as exc:
        out[case] = [exc.errno, -1]
        continue
    if isinstance(made, int):
        out[case] = [0, stat.S_IMODE(os.fstat(made).st_mode)]
        os.close(made)
    else:
        out[case] = [0, stat.S_IMODE(os.stat(made).st_mode)]
print("PROBE " + json.dumps(out))
"""

SHELL = (
    "cp /usr/bin/cat ./cat && chmod 4755 ./cat; echo suid=$?; stat -c %a ./cat; "
    "cp /usr/bin/cat ./cat2 && chmod g+s ./cat2; echo sgid=$?; stat -c %a ./cat2; "
    "cp /usr/bin/cat ./cat3 && chmod 755 ./cat3; echo plain=$?; stat -c %a ./cat3"
)

#: Attacks and the bit each one must leave (in the control) or never leave (inside).
ATTACKS = {
    "os.chmod 4755": 0o4755,
    "os.chmod 2755": 0o2755,
    "os.open O_CREAT 4755": 0o4755,
    "os.open O_TMPFILE 2755": 0o2755,
    "os.mknod S_IFREG 4755": 0o4755,
    "fchmodat2 4755": 0o4755,
    "chmod g+s on a directory": 0o2755,
}
PLAIN = {"os.chmod 755": 0o755, "os.chmod 644": 0o644}


def _parse(stdout: str) -> dict[str, list[int]]:
    for line in stdout.splitlines():
        if line.startswith("PROBE "):
            rows: dict[str, list[int]] = json.loads(line[len("PROBE ") :])
            return rows
    raise AssertionError(f"the probe printed no result: {stdout!r}")


def _special_bits(root: Path) -> list[str]:
    """Every file or directory under `root` (from the host) that carries S_ISUID or S_ISGID."""
    found = []
    for path in [root, *root.rglob("*")]:
        if path.lstat().st_mode & (stat.S_ISUID | stat.S_ISGID):
            found.append(f"{path.name}: {stat.S_IMODE(path.lstat().st_mode):o}")
    return found


@pytest.fixture(scope="module")
def inside(sandbox: Any, work_root: Path) -> tuple[Any, dict[str, list[int]], Any, Path]:
    workdir = make_workdir(work_root)
    result = run_in_sandbox(sandbox, py(PROBE), workdir=workdir)
    shell = run_in_sandbox(sandbox, SHELL, workdir=workdir)
    return result, _parse(result.stdout), shell, workdir


@pytest.fixture(scope="module")
def control(work_root: Path) -> tuple[dict[str, list[int]], str, Path]:
    """The same probe and shell commands unsandboxed, as the command's uid, in a directory it owns."""
    directory = make_workdir(work_root)
    proc = python_as_command_uid(PROBE, cwd=str(directory))
    assert proc.returncode == 0, proc
    shell = run_as_command_uid(["/bin/sh", "-c", SHELL], cwd=str(directory))
    return _parse(proc.stdout), shell.stdout, directory


@pytest.mark.parametrize("case", ATTACKS)
def test_seccomp_blocks_setuid_and_setgid_files(inside, control, case: str) -> None:
    result, rows, _, _ = inside
    rows_control, _, _ = control
    if rows_control[case][0] == errno.ENOSYS:
        pytest.skip(f"control: {case} answers ENOSYS outside the sandbox (a container runtime's older profile)")
    assert rows_control[case] == [0, ATTACKS[case]], f"control: {case} did not leave the bit: {rows_control[case]}"
    assert rows[case] == [errno.EPERM, -1], f"{case} inside the sandbox: {rows[case]}"
    assert_protection(result, seccomp=True)


def test_plain_modes_still_work_inside(inside) -> None:
    _, rows, _, _ = inside
    assert {case: rows[case] for case in PLAIN} == {case: [0, mode] for case, mode in PLAIN.items()}


def test_openat2_answers_enosys_inside(inside, control) -> None:
    """openat2 carries its mode in a struct seccomp cannot read: ENOSYS, so callers fall back to openat."""
    _, rows, _, _ = inside
    rows_control, _, _ = control
    assert rows_control["openat2 O_CREAT 644"] == [0, 0o644], rows_control
    assert rows["openat2 O_CREAT 644"] == [errno.ENOSYS, -1], rows


def test_seccomp_blocks_a_setuid_copy_of_cat(inside, control) -> None:
    """The repro: `cp /usr/bin/cat ./cat; chmod 4755 ./cat` (and `chmod g+s`), while `chmod 755` works."""
    _, _, shell, workdir = inside
    _, shell_control, directory = control
    assert shell_control.split() == ["suid=0", "4755", "sgid=0", "2755", "plain=0", "755"], shell_control
    assert shell.stdout.split() == ["suid=1", "755", "sgid=1", "755", "plain=0", "755"], shell
    assert "Operation not permitted" in shell.stderr, shell
    assert _special_bits(directory), "the control left no setuid file, so the host check below proves nothing"
    assert _special_bits(workdir) == [], "a setuid or setgid file reached the host side of the workdir"
