"""One filesystem layer at a time: the private root alone (no Landlock), Landlock alone (no mount namespace),
and the uid drop alone (a root server: neither of the two). Each attack's control runs it as the same uid
with that layer off too, and it works: DAC allows every one of them.

The targets live outside the workdir: a world-readable secret, a 1777 directory holding a 0666 file that
belongs to the command's uid (so that even chmod and utime are allowed by DAC), and another session's
workdir. The all-layers versions are in test_fs_read_secrets.py, test_fs_write_escape.py and
test_link_escapes.py.
"""

from __future__ import annotations

import os
import shlex
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _security_support import (
    DENIED,
    HIDDEN,
    IS_ROOT,
    NO_UID_DROP,
    NOBODY,
    assert_blocked_output,
    expected_command_uid,
    make_workdir,
    make_world_readable_secret,
)
from support.layers import BASE

#: An unprivileged server needs a user namespace for a mount namespace; alone it refuses none of these.
USER_NS = BASE | {"user"}
#: Each layer under test: what it keeps, what its control keeps, the refusals it gives.
LAYERS = {
    "private_root": (USER_NS | {"mount"}, USER_NS, HIDDEN),
    "landlock": (BASE | {"landlock_fs"}, BASE, (*DENIED, "Invalid cross-device link")),
}
#: Landlock has no access right for chmod or utime: only the private root (or DAC) stops them.
NOT_LANDLOCK = ("chmod", "touch_mtime")


@dataclass(frozen=True)
class Targets:
    workdir: Path
    secret: Path
    secret_text: str
    shared: Path
    other: Path
    other_text: str

    @property
    def existing(self) -> Path:
        return self.shared / "existing"

    def fill(self, template: str) -> str:
        return template.format(
            secret=shlex.quote(str(self.secret)),
            secret_dir=shlex.quote(str(self.secret.parent)),
            shared=shlex.quote(str(self.shared)),
            other=shlex.quote(str(self.other)),
        )


def _own(path: Path) -> None:
    if IS_ROOT:
        os.chown(path, expected_command_uid(), expected_command_uid())


@pytest.fixture
def make_targets(outside_root: Path, work_root: Path, workdir: Path) -> Callable[[], Targets]:
    def make() -> Targets:
        secret = make_world_readable_secret(outside_root)
        shared = outside_root / f"shared-{uuid.uuid4().hex[:8]}"
        shared.mkdir()
        shared.chmod(0o1777)
        existing = shared / "existing"
        existing.write_text("original\n")
        existing.chmod(0o666)
        os.utime(existing, (2e9, 2e9))
        _own(existing)
        other = make_workdir(work_root)
        other_text = f"OTHER-SESSION-SECRET-{uuid.uuid4().hex}"
        (other / "notes.txt").write_text(other_text + "\n")
        _own(other / "notes.txt")
        return Targets(workdir, secret.path, secret.content, shared, other, other_text)

    return make


@dataclass(frozen=True)
class FsAttack:
    command: str
    worked: Callable[[Targets, Any], bool]


def _changed(t: Targets) -> bool:
    return not t.existing.exists() or t.existing.read_text() != "original\n"


ATTACKS = {
    "read": FsAttack("cat {secret}", lambda t, r: t.secret_text in r.stdout),
    "read_via_proc_self_root": FsAttack("cat /proc/self/root{secret}", lambda t, r: t.secret_text in r.stdout),
    "list": FsAttack("ls {secret_dir}", lambda t, r: "credentials" in r.stdout),
    "symlink_in_workdir": FsAttack("ln -s {secret} link && cat link", lambda t, r: t.secret_text in r.stdout),
    "other_session": FsAttack("cat {other}/notes.txt", lambda t, r: t.other_text in r.stdout),
    "create": FsAttack("echo pwned > {shared}/new-file", lambda t, r: (t.shared / "new-file").exists()),
    "append": FsAttack("echo pwned >> {shared}/existing", lambda t, r: _changed(t)),
    "truncate": FsAttack(": > {shared}/existing", lambda t, r: _changed(t)),
    "mkdir": FsAttack("mkdir {shared}/newdir", lambda t, r: (t.shared / "newdir").exists()),
    "symlink_outside": FsAttack("ln -s /etc/passwd {shared}/link", lambda t, r: (t.shared / "link").is_symlink()),
    "fifo": FsAttack("mkfifo {shared}/fifo", lambda t, r: (t.shared / "fifo").exists()),
    "rename": FsAttack("mv {shared}/existing {shared}/renamed", lambda t, r: (t.shared / "renamed").exists()),
    "unlink": FsAttack("rm {shared}/existing", lambda t, r: not t.existing.exists()),
    "chmod": FsAttack("chmod 0600 {shared}/existing", lambda t, r: t.existing.stat().st_mode & 0o777 != 0o666),
    "touch_mtime": FsAttack("touch -d 2001-01-01 {shared}/existing", lambda t, r: t.existing.stat().st_mtime < 2e9),
    "hardlink_in": FsAttack("ln {shared}/existing hard", lambda t, r: (t.workdir / "hard").exists()),
    "move_out": FsAttack("echo payload > f && mv f {shared}/", lambda t, r: (t.shared / "f").exists()),
}
CASES = [
    (layer, name) for layer in LAYERS for name in sorted(ATTACKS) if not (layer == "landlock" and name in NOT_LANDLOCK)
]


@pytest.mark.parametrize(("layer", "name"), CASES)
def test_one_fs_layer_alone_blocks_escape(layered_run, make_targets, layer, name):
    keep, _, reasons = LAYERS[layer]
    targets = make_targets()
    result = layered_run(keep, targets.fill(ATTACKS[name].command))
    assert not ATTACKS[name].worked(targets, result), f"{layer} alone let {name} through: {result}"
    assert_blocked_output(result, secret=targets.secret_text, reasons=reasons)
    prot = result.protection
    if layer == "private_root":
        assert prot.private_root and prot.landlock_abi is None, prot
    else:
        assert prot.landlock_abi and not prot.private_root and "mount" not in prot.namespaces, prot


@pytest.mark.parametrize(("layer", "name"), CASES)
def test_fs_escape_works_with_the_layer_off_too_positive_control(layered_run, make_targets, layer, name):
    _, control_keep, _ = LAYERS[layer]
    targets = make_targets()
    control = layered_run(control_keep, targets.fill(ATTACKS[name].command))
    assert ATTACKS[name].worked(targets, control), f"control: {name} should work with no fs layer: {control}"
    assert not control.protection.private_root and control.protection.landlock_abi is None, control.protection


# --- the uid drop alone: a root server's own files ------------------------------------------------------

ROOT_FILE_ATTACKS = {
    "read": ("cat {key}", lambda key, r: "ROOT-SECRET" in r.stdout),
    "append": ("echo pwned >> {key}", lambda key, r: key.read_text() != "ROOT-SECRET\n"),
    "chmod": ("chmod 0644 {key}", lambda key, r: key.stat().st_mode & 0o777 != 0o600),
}


@pytest.mark.skipif(not IS_ROOT, reason=NO_UID_DROP)
@pytest.mark.parametrize("name", sorted(ROOT_FILE_ATTACKS))
def test_uid_drop_alone_blocks_root_files(layered_run, outside_root, name):
    """A root-owned 0600 file outside the private root and Landlock's reach: DAC, thanks to the uid drop."""
    command, worked = ROOT_FILE_ATTACKS[name]
    results = {}
    for keep in (BASE, BASE - {"uid_drop"}):
        key = outside_root / f"root-key-{uuid.uuid4().hex[:8]}"
        key.write_text("ROOT-SECRET\n")
        key.chmod(0o600)
        results[keep] = (key, layered_run(keep, command.format(key=shlex.quote(str(key)))))
    key, result = results[BASE]
    assert not worked(key, result), f"the uid drop alone let {name} of a root file through: {result}"
    assert_blocked_output(result, secret="ROOT-SECRET", reasons=(*DENIED, "Operation not permitted"))
    assert result.protection.uid == NOBODY, result.protection
    key, control = results[BASE - {"uid_drop"}]
    assert worked(key, control), f"control: as root, {name} works: {control}"
