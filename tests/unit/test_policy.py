"""SandboxPolicy defaults and serialization, validation messages, and EffectiveProtection.any()."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from hanzo_sandbox_mcp.policy import (
    DEFAULT_MAX_CPU_SECS,
    DEFAULT_MAX_FILE_SZ_MB,
    DEFAULT_MAX_MEMORY_MB,
    DEFAULT_MAX_OPEN_FDS,
    DEFAULT_MAX_PROCS,
    SANDBOX_ENV_VAR,
    NetworkMode,
    SandboxMode,
    SandboxPolicy,
)
from hanzo_sandbox_mcp.protection import EffectiveProtection, Layer

# --- defaults ------------------------------------------------------------------------------------------


def test_defaults_match_the_reference_crate() -> None:
    policy = SandboxPolicy()
    assert policy.max_memory_mb == DEFAULT_MAX_MEMORY_MB == 2048
    assert policy.max_cpu_secs == DEFAULT_MAX_CPU_SECS == 300
    assert policy.max_procs == DEFAULT_MAX_PROCS == 64
    assert policy.max_open_fds == DEFAULT_MAX_OPEN_FDS == 1024
    assert policy.max_file_sz_mb == DEFAULT_MAX_FILE_SZ_MB == 256
    assert policy.network is NetworkMode.LOOPBACK
    assert policy.extra_fs_read == ()
    assert policy.extra_fs_write == ()
    assert policy.extra_env == ()
    assert policy.strict is False
    assert policy.session_workdir is None


def test_default_sandbox_ids_are_nobody() -> None:
    policy = SandboxPolicy()
    assert (policy.sandbox_uid, policy.sandbox_gid) == (65534, 65534)


def test_env_var_name() -> None:
    assert SANDBOX_ENV_VAR == "HANZO_SANDBOX"


# --- serialization -------------------------------------------------------------------------------------


def test_network_mode_values_are_kebab_case() -> None:
    assert [mode.value for mode in NetworkMode] == ["none", "loopback", "full", "allowlist"]
    assert [mode.value for mode in SandboxMode] == ["auto", "on", "off"]


def test_network_mode_serializes_as_its_value() -> None:
    dumped = json.loads(SandboxPolicy(network=NetworkMode.NONE).model_dump_json())
    assert dumped["network"] == "none"
    assert SandboxPolicy.model_validate({"network": "full"}).network is NetworkMode.FULL


def test_json_round_trip_of_a_full_policy(tmp_path: Path) -> None:
    policy = SandboxPolicy(
        max_memory_mb=512,
        max_cpu_secs=10,
        max_procs=8,
        max_open_fds=64,
        max_file_sz_mb=4,
        network=NetworkMode.NONE,
        extra_fs_read=(Path("/opt/data"),),
        extra_fs_write=(Path("/srv/out"),),
        extra_env=("MY_VAR", "_X1"),
        strict=True,
        session_workdir=tmp_path,
        sandbox_uid=1000,
        sandbox_gid=1000,
        tmp_size_mb=16,
        workdir_quota_mb=32,
    )
    text = policy.model_dump_json()
    assert SandboxPolicy.model_validate_json(text) == policy
    assert SandboxPolicy.model_validate(json.loads(text)) == policy
    assert json.loads(text)["extra_fs_read"] == ["/opt/data"]


_env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
_abs_paths = st.lists(st.from_regex(r"[a-z0-9_.-]{1,8}", fullmatch=True), min_size=1, max_size=4).map(
    lambda parts: Path("/", *parts)
)


@given(
    memory=st.integers(16, 1 << 20),
    cpu=st.integers(1, 1 << 20),
    procs=st.integers(1, 4096),
    network=st.sampled_from(list(NetworkMode)),
    env=st.lists(_env_names, max_size=4),
    read=st.lists(_abs_paths, max_size=3),
    strict=st.booleans(),
)
def test_round_trip_property(
    memory: int, cpu: int, procs: int, network: NetworkMode, env: list[str], read: list[Path], strict: bool
) -> None:
    policy = SandboxPolicy(
        max_memory_mb=memory,
        max_cpu_secs=cpu,
        max_procs=procs,
        network=network,
        extra_env=tuple(env),
        extra_fs_read=tuple(read),
        strict=strict,
    )
    assert SandboxPolicy.model_validate_json(policy.model_dump_json()) == policy


def test_policy_is_frozen_and_hashable() -> None:
    policy = SandboxPolicy()
    with pytest.raises(ValidationError):
        policy.max_procs = 1  # type: ignore[misc]
    assert hash(policy) == hash(SandboxPolicy())


def test_with_workdir_binds_and_copies(tmp_path: Path) -> None:
    base = SandboxPolicy()
    bound = base.with_workdir(tmp_path)
    assert bound.session_workdir == tmp_path
    assert base.session_workdir is None
    assert bound.model_copy(update={"session_workdir": None}) == base


def test_with_workdir_rejects_relative_paths() -> None:
    with pytest.raises(ValueError, match="must be absolute"):
        SandboxPolicy().with_workdir(Path("relative"))


# --- invalid values: clear messages naming the field --------------------------------------------------


def _error_text(**fields: object) -> str:
    with pytest.raises(ValidationError) as info:
        SandboxPolicy.model_validate(fields)
    return str(info.value)


def test_relative_extra_fs_read_names_the_field_and_path() -> None:
    text = _error_text(extra_fs_read=["/ok", "data/dir"])
    assert "extra_fs_read" in text
    assert "'data/dir' must be absolute" in text


def test_relative_extra_fs_write_and_workdir() -> None:
    assert "extra_fs_write" in _error_text(extra_fs_write=["out"])
    assert "session_workdir" in _error_text(session_workdir="work")


def test_nul_byte_in_path_is_rejected() -> None:
    assert "NUL" in _error_text(extra_fs_read=["/tmp/a\x00b"])


@pytest.mark.parametrize("name", ["1ABC", "MY-VAR", "A B", "", "X=1", "ÄPFEL"])
def test_bad_env_names_are_rejected(name: str) -> None:
    text = _error_text(extra_env=[name])
    assert "extra_env" in text
    assert "is not an environment variable name" in text


@pytest.mark.parametrize(
    "field",
    [
        "max_memory_mb",
        "max_cpu_secs",
        "max_procs",
        "max_open_fds",
        "max_file_sz_mb",
        "tmp_size_mb",
        "workdir_quota_mb",
    ],
)
def test_negative_limits_are_rejected(field: str) -> None:
    text = _error_text(**{field: -1})
    assert field in text
    assert "greater than or equal" in text


@pytest.mark.parametrize("field", ["sandbox_uid", "sandbox_gid"])
def test_sandbox_ids_cannot_be_root(field: str) -> None:
    assert field in _error_text(**{field: 0})


def test_unknown_network_mode_names_the_choices() -> None:
    text = _error_text(network="internet")
    assert "network" in text
    for choice in ("none", "loopback", "full"):
        assert choice in text


def test_unknown_fields_are_rejected() -> None:
    assert "max_memory" in _error_text(max_memory=5)


def test_tiny_memory_limit_is_rejected() -> None:
    assert "max_memory_mb" in _error_text(max_memory_mb=1)


# --- EffectiveProtection -------------------------------------------------------------------------------


def _protection(**flags: bool) -> EffectiveProtection:
    base = {"fs_isolated": False, "network_isolated": False, "rlimits_applied": False}
    return EffectiveProtection(sandbox="test", network=NetworkMode.LOOPBACK, **{**base, **flags})


def test_any_is_false_when_nothing_is_enforced() -> None:
    assert _protection().any() is False


@pytest.mark.parametrize("flag", ["fs_isolated", "network_isolated", "rlimits_applied"])
def test_any_is_true_when_one_layer_is_enforced(flag: str) -> None:
    assert _protection(**{flag: True}).any() is True


def test_any_ignores_the_detail_fields() -> None:
    # env scrub and seccomp alone are not among the crate's three guarantees.
    protection = _protection().model_copy(update={"env_scrubbed": True, "seccomp": True})
    assert protection.any() is False


def test_protection_round_trips_through_json() -> None:
    protection = EffectiveProtection(
        fs_isolated=True,
        network_isolated=True,
        rlimits_applied=True,
        sandbox="linux",
        network=NetworkMode.NONE,
        env_scrubbed=True,
        namespaces=("user", "net"),
        landlock_abi=7,
        seccomp=True,
        missing=("cgroup: no delegated cgroup v2 subtree",),
    )
    data = json.loads(protection.model_dump_json())
    assert data["network"] == "none"
    assert EffectiveProtection.model_validate(data) == protection


def test_layer_names_are_stable() -> None:
    assert Layer.LANDLOCK.value == "landlock"
    assert Layer.ENV_SCRUB.value == "env_scrub"
