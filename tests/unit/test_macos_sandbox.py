"""`MacosSandbox` on any platform: its plans, its truthful reports, and how `detect()` and `doctor` pick
and describe it when the platform looks like macOS (`sys.platform` patched; nothing here runs Seatbelt)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hanzo_sandbox_mcp import sandbox as sandbox_module
from hanzo_sandbox_mcp.doctor import diagnose, render_text
from hanzo_sandbox_mcp.launch import LaunchReport
from hanzo_sandbox_mcp.macos import sandbox as macos_module
from hanzo_sandbox_mcp.macos.profile import NETWORK_DETAIL, SEATBELT_EXECUTABLE, build_profile, resolve_macos_path
from hanzo_sandbox_mcp.macos.sandbox import MacosSandbox
from hanzo_sandbox_mcp.policy import NetworkMode, SandboxMode, SandboxPolicy
from hanzo_sandbox_mcp.protection import Layer
from hanzo_sandbox_mcp.sandbox import NullSandbox, Sandbox, detect

MiB = 1024 * 1024
ARGV = ["/bin/sh", "-c", "echo 'a b' \"$HOME\"; exit 3"]
LINUX_ONLY = (
    Layer.NAMESPACES,
    Layer.UID_DROP,
    Layer.PRIVATE_TMP,
    Layer.CGROUP,
    Layer.NO_NEW_PRIVS,
    Layer.LANDLOCK,
    Layer.SECCOMP,
)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def macos(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The platform reports itself as macOS; the null-sandbox warning flag starts cleared."""
    monkeypatch.setattr(sys, "platform", "darwin")
    was_set = sandbox_module._warned.is_set()
    sandbox_module._warned.clear()
    yield
    if was_set:
        sandbox_module._warned.set()
    else:
        sandbox_module._warned.clear()


# --- harden --------------------------------------------------------------------------------------------


def test_macos_sandbox_satisfies_the_protocol() -> None:
    assert isinstance(MacosSandbox(), Sandbox)
    assert MacosSandbox().name == "macos-seatbelt"


@pytest.mark.parametrize("network", list(NetworkMode))
def test_harden_wraps_the_command_in_sandbox_exec(workdir: Path, network: NetworkMode) -> None:
    policy = SandboxPolicy(network=network).with_workdir(workdir)
    plan = MacosSandbox().harden(ARGV, policy, env={"PATH": "/usr/bin:/bin"})
    assert plan.wrapper[:2] == (SEATBELT_EXECUTABLE, "-p")
    assert SEATBELT_EXECUTABLE == "/usr/bin/sandbox-exec"
    assert plan.wrapper[-1] == "--"
    assert plan.argv == tuple(ARGV)
    real = Path(os.path.realpath(workdir))
    profile = build_profile(policy, real, home=Path.home())
    assert [*plan.wrapper, *plan.argv] == profile.argv(ARGV)
    assert plan.wrapper[2] == profile.text
    assert f"WORKDIR={resolve_macos_path(real)}" in plan.wrapper  # /tmp is /private/tmp to Seatbelt


def test_harden_keeps_awkward_arguments_intact(workdir: Path) -> None:
    argv = ["printf", "%s\n", "--", "-p", "a\nb", "", "$(id)", "é"]
    plan = MacosSandbox().harden(argv, SandboxPolicy().with_workdir(workdir), env={})
    assert plan.argv == tuple(argv)
    assert [*plan.wrapper, *plan.argv][-len(argv) :] == argv


def test_harden_sets_rlimits_without_nproc(workdir: Path) -> None:
    policy = SandboxPolicy(max_memory_mb=300, max_cpu_secs=5, max_procs=3, max_open_fds=77, max_file_sz_mb=2)
    plan = MacosSandbox().harden(["true"], policy.with_workdir(workdir), env={})
    # RLIMIT_NPROC on macOS counts every process of the user, not the command's own.
    assert plan.rlimits == {"as": 300 * MiB, "cpu": 5, "nofile": 77, "fsize": 2 * MiB, "core": 0}


def test_harden_uses_no_linux_layer(workdir: Path) -> None:
    plan = MacosSandbox().harden(["true"], SandboxPolicy().with_workdir(workdir), env={})
    assert plan.namespaces == ()
    assert plan.landlock is None
    assert plan.seccomp_bpf is None
    assert plan.uid is None and plan.gid is None
    assert plan.tmp_size_mb is None


def test_harden_resolves_the_workdir_and_scrubs_the_environment(workdir: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(workdir)
    env = {"PATH": "/usr/bin", "AWS_SECRET_ACCESS_KEY": "x", "LANG": "en_US.UTF-8"}
    plan = MacosSandbox().harden(["true"], SandboxPolicy().with_workdir(alias), env=env)
    real = os.path.realpath(workdir)
    assert plan.cwd == real
    assert plan.env == {
        "PATH": "/usr/bin",
        "LANG": "en_US.UTF-8",
        "HOME": real,
        "TMPDIR": f"{real}/.tmp",
        "PWD": real,
        "PYTHONDONTWRITEBYTECODE": "1",
    }


@pytest.mark.parametrize("strict", [True, False])
def test_strict_flows_into_the_plan(workdir: Path, strict: bool) -> None:
    plan = MacosSandbox().harden(["true"], SandboxPolicy(strict=strict).with_workdir(workdir), env={})
    assert plan.strict is strict


def test_harden_needs_a_workdir() -> None:
    with pytest.raises(ValueError, match="session_workdir"):
        MacosSandbox().harden(["true"], SandboxPolicy(), env={})


# --- effective and report ------------------------------------------------------------------------------


@pytest.mark.parametrize("network", list(NetworkMode))
def test_effective_claims_seatbelt_and_names_what_macos_lacks(network: NetworkMode) -> None:
    eff = MacosSandbox().effective(SandboxPolicy(network=network))
    assert eff.sandbox == "macos-seatbelt"
    assert eff.seatbelt is True
    assert eff.fs_isolated is True
    assert eff.rlimits_applied is True
    assert eff.env_scrubbed is True
    assert eff.network is network
    # Seatbelt cannot make loopback private (host services on localhost stay reachable).
    assert eff.network_isolated is (network is NetworkMode.NONE)
    # Nothing Linux-only is claimed.
    assert eff.namespaces == ()
    assert eff.landlock_abi is None
    assert eff.seccomp is False
    assert eff.no_new_privs is False
    assert eff.cgroup_limits is False
    assert eff.private_tmp is False
    assert eff.uid == os.getuid()
    if network is NetworkMode.LOOPBACK:
        assert eff.missing == (f"private loopback: {NETWORK_DETAIL[network]}",)
    else:
        assert eff.missing == ()


def test_report_follows_what_the_launcher_said() -> None:
    launch = LaunchReport(applied=True, rlimits=True, uid=501, gid=20)
    eff = MacosSandbox().report(launch, SandboxPolicy())
    assert eff.rlimits_applied is True
    assert (eff.uid, eff.gid) == (501, 20)
    assert not any(m.startswith("rlimits") for m in eff.missing)


def test_report_admits_rlimits_that_did_not_apply() -> None:
    launch = LaunchReport(applied=True, rlimits=False, uid=501, gid=20, errors={"rlimits": "EPERM"})
    eff = MacosSandbox().report(launch, SandboxPolicy())
    assert eff.rlimits_applied is False
    assert "rlimits: the launcher could not apply them" in eff.missing
    assert eff.any() is True  # Seatbelt still confines the filesystem


def test_loopback_is_not_claimed_isolated_when_host_services_are_reachable() -> None:
    eff = MacosSandbox().effective(SandboxPolicy(network=NetworkMode.LOOPBACK))
    assert eff.network_isolated is False


def test_layers_describe_the_macos_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(macos_module, "seatbelt_available", lambda: True)
    layers = {status.layer: status for status in MacosSandbox().layers()}
    assert set(layers) >= {Layer.ENV_SCRUB, Layer.RLIMITS, Layer.SEATBELT, *LINUX_ONLY}
    assert len(layers) == len(MacosSandbox().layers())  # no layer listed twice
    assert layers[Layer.SEATBELT].available is True
    assert layers[Layer.SEATBELT].detail == "Seatbelt profile via /usr/bin/sandbox-exec"
    assert layers[Layer.ENV_SCRUB].available and layers[Layer.RLIMITS].available
    for layer in LINUX_ONLY:
        assert layers[layer].available is False
        assert layers[layer].detail == "not available on macOS"


def test_layers_cover_every_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(macos_module, "seatbelt_available", lambda: True)
    assert {status.layer for status in MacosSandbox().layers()} == set(Layer)


def test_layers_without_sandbox_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(macos_module, "seatbelt_available", lambda: False)
    seatbelt = next(s for s in MacosSandbox().layers() if s.layer is Layer.SEATBELT)
    assert seatbelt.available is False
    assert "/usr/bin/sandbox-exec is missing" in seatbelt.detail


def test_seatbelt_is_not_available_on_linux() -> None:
    if sys.platform == "darwin":
        pytest.skip("this is macOS")
    assert macos_module.seatbelt_available() is os.access(SEATBELT_EXECUTABLE, os.X_OK)


# --- detect() on a mocked macOS ------------------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("hanzo_sandbox_mcp")
    ]


@pytest.mark.usefixtures("macos")
def test_detect_picks_seatbelt_on_macos(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hanzo_sandbox_mcp")
    monkeypatch.setattr(macos_module, "seatbelt_available", lambda: True)
    chosen = detect()
    assert isinstance(chosen, MacosSandbox)
    assert _warnings(caplog) == []


@pytest.mark.usefixtures("macos")
def test_detect_falls_back_to_null_loudly_without_sandbox_exec(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hanzo_sandbox_mcp")
    monkeypatch.setattr(macos_module, "seatbelt_available", lambda: False)
    chosen = detect()
    assert isinstance(chosen, NullSandbox)
    messages = _warnings(caplog)
    assert len(messages) == 1
    assert "/usr/bin/sandbox-exec is missing" in messages[0]
    assert "full host access" in messages[0]


@pytest.mark.usefixtures("macos")
def test_mode_on_refuses_a_macos_without_sandbox_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    from hanzo_sandbox_mcp.errors import SandboxUnavailable
    from hanzo_sandbox_mcp.sandbox import for_mode

    monkeypatch.setattr(macos_module, "seatbelt_available", lambda: False)
    with pytest.raises(SandboxUnavailable, match="HANZO_SANDBOX=on"):
        for_mode(SandboxMode.ON)
    monkeypatch.setattr(macos_module, "seatbelt_available", lambda: True)
    assert isinstance(for_mode(SandboxMode.ON), MacosSandbox)


# --- doctor on a mocked macOS --------------------------------------------------------------------------


@pytest.mark.usefixtures("macos")
def test_doctor_describes_the_macos_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(macos_module, "seatbelt_available", lambda: True)
    report = diagnose(detect(), SandboxPolicy(), SandboxMode.AUTO)
    assert report.platform.startswith("darwin ")
    assert report.sandbox == "macos-seatbelt"
    assert report.effective.seatbelt is True
    assert report.effective.fs_isolated is True
    layers = {s.layer: s for s in report.layers}
    assert layers[Layer.SEATBELT].available is True
    assert all(not layers[layer].available for layer in LINUX_ONLY)

    text = render_text(report)
    assert text.splitlines()[0].startswith("platform: darwin ")
    assert "sandbox:  macos-seatbelt (HANZO_SANDBOX=auto" in text
    assert "[ok  ] seatbelt      Seatbelt profile via /usr/bin/sandbox-exec" in text
    assert "[n/a ] landlock      not available on macOS" in text
    assert "[n/a ] namespaces    not available on macOS" in text
    assert "fs_isolated=True" in text
    assert "  missing: private loopback: Seatbelt" in text


@pytest.mark.usefixtures("macos")
def test_doctor_on_a_macos_without_sandbox_exec_says_nothing_is_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(macos_module, "seatbelt_available", lambda: False)
    report = diagnose(detect(), SandboxPolicy(), SandboxMode.AUTO)
    assert report.sandbox == "null"
    assert report.ok is False
    assert report.effective.any() is False
    assert "verdict: some layers are missing" in render_text(report)


@pytest.mark.usefixtures("macos")
def test_doctor_is_ok_on_a_working_macos_with_network_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(macos_module, "seatbelt_available", lambda: True)
    report = diagnose(detect(), SandboxPolicy(network=NetworkMode.NONE), SandboxMode.AUTO)
    assert report.ok is True


@pytest.mark.usefixtures("macos")
def test_capabilities_describe_the_macos_backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The `capabilities` tool (through the library service) on a mocked macOS: the Seatbelt backend, its
    layers (Linux-only ones not applicable) and a truthful protection report."""
    import anyio

    from hanzo_sandbox_mcp.config import SessionSettings, Settings
    from hanzo_sandbox_mcp.service import SandboxService

    monkeypatch.setattr(macos_module, "seatbelt_available", lambda: True)
    settings = Settings(policy=SandboxPolicy(network=NetworkMode.NONE), sessions=SessionSettings(root=tmp_path))

    async def capabilities() -> object:
        async with SandboxService(settings, sandbox=detect()) as service:
            return await service.capabilities()

    caps = anyio.run(capabilities)
    assert caps.platform.startswith("darwin ")  # type: ignore[attr-defined]
    assert caps.sandbox == "macos-seatbelt"  # type: ignore[attr-defined]
    protection = caps.protection  # type: ignore[attr-defined]
    assert protection.seatbelt and protection.fs_isolated and protection.network_isolated
    assert protection.landlock_abi is None and protection.namespaces == () and protection.missing == ()
    layers = {status.layer: status for status in caps.layers}  # type: ignore[attr-defined]
    assert layers[Layer.SEATBELT].available
    assert all(not layers[layer].applicable for layer in LINUX_ONLY)
