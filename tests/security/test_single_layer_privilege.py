"""One privilege layer at a time: no_new_privs alone against a setuid-root and a file-capability binary, the
uid drop alone against host root's powers; each control runs the same attack with that layer off too and
gains the privilege.

Everything else is off (no namespaces, so no user namespace that would leave root unmapped and no private
root whose nosuid binds would ignore the setuid bit; no Landlock or seccomp, which would set no_new_privs
themselves). The all-layers versions are in test_privileges.py.
"""

from __future__ import annotations

import pytest
from _security_support import (
    IS_ROOT,
    NO_UID_DROP,
    NOBODY,
    SANDBOX_PYTHON,
    SETUID_ZERO,
    ZERO_CAPS,
    assert_protection,
    status_fields,
)
from support.layers import BASE

NO_NEW_PRIVS = BASE | {"no_new_privs"}


def test_no_new_privs_alone_blocks_setuid_root_binary(layered_run, setuid_root_id):
    result = layered_run(NO_NEW_PRIVS, f"./{setuid_root_id.name}")
    assert result.exit_code == 0, result
    assert "euid=0" not in result.stdout, f"no_new_privs alone let the setuid bit through: {result}"
    assert_protection(result, no_new_privs=True, seccomp=False, landlock_abi=None, namespaces=())
    control = layered_run(BASE, f"./{setuid_root_id.name}")
    assert "euid=0" in control.stdout, f"control: without no_new_privs the setuid bit raises euid: {control}"
    assert_protection(control, no_new_privs=False)


def test_no_new_privs_alone_blocks_file_capabilities(layered_run, setuid_capable_python):
    cmd = f"./{setuid_capable_python.name} -I -S -c '{SETUID_ZERO}'"
    result = layered_run(NO_NEW_PRIVS, cmd)
    assert "ROOT" not in result.stdout and "ERR 1" in result.stdout, result
    control = layered_run(BASE, cmd)
    assert "ROOT 0" in control.stdout, f"control: without no_new_privs the file capability works: {control}"


@pytest.mark.skipif(not IS_ROOT, reason=NO_UID_DROP)
def test_uid_drop_alone_makes_commands_files_unprivileged(layered_run, workdir):
    """The file a command creates belongs, on the host, to the uid the report names: nobody with the uid
    drop, root without it (the control, which a report that echoes the plan would get wrong)."""
    result = layered_run(BASE, "touch by-nobody")
    owner = (workdir / "by-nobody").stat()
    assert (owner.st_uid, owner.st_gid) == (NOBODY, NOBODY), owner
    assert_protection(result, uid=NOBODY, gid=NOBODY)
    control = layered_run(BASE - {"uid_drop"}, "touch by-root")
    owner = (workdir / "by-root").stat()
    assert (owner.st_uid, owner.st_gid) == (0, 0), f"control: without the uid drop the file is root's: {owner}"
    assert_protection(control, uid=0, gid=0)


@pytest.mark.skipif(not IS_ROOT, reason=NO_UID_DROP)
def test_uid_drop_alone_empties_capabilities_and_blocks_setuid(layered_run):
    cmd = f"grep '^CapEff' /proc/self/status; {SANDBOX_PYTHON} -I -S -c '{SETUID_ZERO}'"
    result = layered_run(BASE, cmd)
    assert status_fields(result.stdout)["CapEff"] == ZERO_CAPS, result
    assert "ERR 1" in result.stdout and "ROOT" not in result.stdout, result
    control = layered_run(BASE - {"uid_drop"}, cmd)
    assert status_fields(control.stdout)["CapEff"] != ZERO_CAPS, control
    assert "ROOT 0" in control.stdout, f"control: as root setuid(0) works: {control}"
