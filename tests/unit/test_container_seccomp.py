"""config/container-seccomp.json: the runtime's default profile plus exactly the sandbox's rules.

A profile is read the way runtimes read it: a rule applies to a container without CAP_SYS_ADMIN when its
`includes.caps` do not ask for that capability and its `excludes.caps` do not rule it out; the last rule that
applies to a syscall without argument filters decides, else `defaultAction`.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "config" / "container-seccomp.json"
#: What a container's root holds by default (Docker's and podman's lists); CAP_SYS_ADMIN is not among them.
DEFAULT_CAPS = {
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
}
#: Every syscall the launcher's setup makes that a default profile may gate (namespaces, private root, Landlock).
SANDBOX_SYSCALLS = (
    "unshare",
    "mount",
    "umount2",
    "pivot_root",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
)


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("container_seccomp", ROOT / "tools" / "container_seccomp.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _action(profile: dict[str, Any], name: str, caps: set[str]) -> str:
    action = str(profile["defaultAction"])
    for rule in profile["syscalls"]:
        if name not in rule["names"] or rule.get("args"):
            continue
        if not set(rule.get("includes", {}).get("caps", [])) <= caps:
            continue
        if set(rule.get("excludes", {}).get("caps", [])) & caps:
            continue
        action = str(rule["action"])
    return action


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    data = json.loads(PROFILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("name", SANDBOX_SYSCALLS)
def test_the_profile_allows_the_sandbox_setup_without_cap_sys_admin(profile: dict[str, Any], name: str) -> None:
    assert _action(profile, name, DEFAULT_CAPS) == "SCMP_ACT_ALLOW"


def test_control_a_docker_like_rule_gated_on_cap_sys_admin_is_read_as_denied() -> None:
    """The reading above can fail: a rule that needs CAP_SYS_ADMIN does not allow a default container."""
    docker_like = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["unshare"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}}],
    }
    assert _action(docker_like, "unshare", DEFAULT_CAPS) == "SCMP_ACT_ERRNO"
    assert _action(docker_like, "unshare", DEFAULT_CAPS | {"CAP_SYS_ADMIN"}) == "SCMP_ACT_ALLOW"


def test_the_profile_denies_by_default_and_is_no_unconfined_profile(profile: dict[str, Any]) -> None:
    assert profile["defaultAction"] in ("SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS")
    # Syscalls no default profile lets a container make stay denied.
    for name in ("kexec_load", "init_module", "open_by_handle_at", "swapon"):
        assert _action(profile, name, DEFAULT_CAPS) != "SCMP_ACT_ALLOW", name


def test_the_sandbox_adds_only_its_own_rules_to_a_base() -> None:
    tool = _tool()
    base = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64"}],
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}],
    }
    once = tool.with_sandbox_rules(base)
    assert once["syscalls"][0] == base["syscalls"][0] and once["archMap"] == base["archMap"]
    added = {name for rule in once["syscalls"][1:] for name in rule["names"]}
    assert added == set(SANDBOX_SYSCALLS)
    assert tool.with_sandbox_rules(once) == once  # regenerating replaces, never duplicates


def test_the_shipped_profile_is_podmans_default_plus_the_sandbox_rules() -> None:
    base = Path("/usr/share/containers/seccomp.json")
    if not base.exists():
        pytest.skip(f"{base} is missing (podman's containers-common is not installed): nothing to compare with")
    tool = _tool()
    shipped = json.loads(PROFILE.read_text())
    expected = tool.with_sandbox_rules(json.loads(base.read_text()))
    if shipped != expected:
        kept = tool.with_sandbox_rules(shipped)
        assert kept == shipped, "the shipped profile has sandbox rules that the tool does not make"
        pytest.skip(f"{base} is another version than the one the shipped profile was made from")
