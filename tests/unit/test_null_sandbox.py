"""The null sandbox: no isolation, reported honestly, with one loud warning per process."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hanzo_sandbox_mcp import sandbox as sandbox_module
from hanzo_sandbox_mcp.errors import SandboxUnavailable
from hanzo_sandbox_mcp.policy import NetworkMode, SandboxMode, SandboxPolicy
from hanzo_sandbox_mcp.protection import Layer
from hanzo_sandbox_mcp.sandbox import NullSandbox, Sandbox, for_mode, null


@pytest.fixture
def fresh_warning() -> Iterator[None]:
    """Forget that the warning was logged, and restore the flag afterwards."""
    was_set = sandbox_module._warned.is_set()
    sandbox_module._warned.clear()
    yield
    if was_set:
        sandbox_module._warned.set()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("hanzo_sandbox_mcp")]


def test_null_warns_once_per_process(fresh_warning: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hanzo_sandbox_mcp")
    first = null()
    second = null()
    assert isinstance(first, NullSandbox)
    assert isinstance(second, NullSandbox)
    records = _warnings(caplog)
    assert len(records) == 1
    message = records[0].getMessage()
    assert "sandbox disabled" in message
    assert "full filesystem, network, and subprocess access" in message


def test_mode_off_gives_the_null_sandbox_and_warns(fresh_warning: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hanzo_sandbox_mcp")
    assert isinstance(for_mode(SandboxMode.OFF), NullSandbox)
    assert len(_warnings(caplog)) == 1


def test_null_sandbox_satisfies_the_protocol() -> None:
    assert isinstance(NullSandbox(), Sandbox)
    assert NullSandbox().name == "null"


@pytest.mark.parametrize("network", list(NetworkMode))
def test_effective_reports_no_isolation(network: NetworkMode) -> None:
    protection = NullSandbox().effective(SandboxPolicy(network=network))
    assert protection.any() is False
    assert not (protection.fs_isolated or protection.network_isolated or protection.rlimits_applied)
    assert protection.sandbox == "null"
    assert protection.network is network
    assert protection.env_scrubbed is True
    assert protection.landlock_abi is None
    assert protection.seccomp is False
    assert protection.namespaces == ()
    assert protection.missing, "the report must say that nothing is enforced"


def test_mode_on_refuses_a_sandbox_that_enforces_nothing() -> None:
    ensure_required = getattr(sandbox_module, "ensure_required", None)
    if ensure_required is None:
        pytest.skip("sandbox.ensure_required has not landed yet")
    with pytest.raises(SandboxUnavailable, match="HANZO_SANDBOX=on"):
        ensure_required(SandboxMode.ON, NullSandbox(), SandboxPolicy())
    ensure_required(SandboxMode.AUTO, NullSandbox(), SandboxPolicy())


def test_layers_only_env_scrub_available() -> None:
    layers = {status.layer: status for status in NullSandbox().layers()}
    assert set(layers) == set(Layer)
    assert layers[Layer.ENV_SCRUB].available is True
    for layer, status in layers.items():
        if layer is not Layer.ENV_SCRUB:
            assert status.available is False
            assert status.detail


def test_harden_needs_a_workdir() -> None:
    with pytest.raises(ValueError, match="session_workdir"):
        NullSandbox().harden(["true"], SandboxPolicy())


def test_harden_runs_the_command_as_is_with_a_scrubbed_env(tmp_path: Path) -> None:
    policy = SandboxPolicy().with_workdir(tmp_path)
    plan = NullSandbox().harden(["echo", "hi"], policy, env={"OPENAI_API_KEY": "sk-x", "PATH": "/bin"})
    assert plan.argv == ("echo", "hi")
    assert plan.cwd == str(tmp_path)
    assert plan.env["PATH"] == "/bin"
    assert "OPENAI_API_KEY" not in plan.env
    assert plan.namespaces == ()
    assert plan.landlock is None
    assert plan.seccomp_bpf is None
    assert plan.rlimits == {}
    assert plan.wrapper == ()


def test_harden_defaults_to_the_server_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_secret")
    monkeypatch.setenv("TZ", "UTC")
    plan = NullSandbox().harden(["true"], SandboxPolicy().with_workdir(tmp_path))
    assert "GITHUB_TOKEN" not in plan.env
    assert plan.env["TZ"] == "UTC"
    assert "GITHUB_TOKEN" in os.environ
