"""The env scrub: secrets the server holds never reach a sandboxed command's environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hanzo_sandbox_mcp.env_scrub import ALLOWED_ENV, DEFAULT_PATH, scrub_env
from hanzo_sandbox_mcp.policy import SandboxPolicy
from hanzo_sandbox_mcp.results import ExecResult
from hanzo_sandbox_mcp.sandbox.null import NullSandbox

SECRETS = {
    "OPENAI_API_KEY": "sk-test-openai-0123456789",
    "ANTHROPIC_API_KEY": "sk-ant-test-0123456789",
    "GITHUB_TOKEN": "ghp_test0123456789",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-test-0123456789",
    "AWS_ACCESS_KEY_ID": "AKIATEST0123456789",
    "HANZO_SANDBOX_TOKEN": "server-bearer-token-0123456789",
    "SSH_AUTH_SOCK": "/tmp/ssh-agent.sock",
    "LD_PRELOAD": "/tmp/evil.so",
    "PYTHONPATH": "/tmp/evil",
    "HOME": "/root",
    "TMPDIR": "/var/tmp/server",
}
HARMLESS = {
    "PATH": "/usr/bin:/bin",
    "LANG": "en_US.UTF-8",
    "LC_ALL": "C.UTF-8",
    "LC_CTYPE": "C.UTF-8",
    "TERM": "xterm-256color",
    "TZ": "UTC",
    "NO_COLOR": "1",
}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    directory = tmp_path / "session"
    directory.mkdir()
    return directory


def test_secrets_are_dropped_and_allowlist_passes(workdir: Path) -> None:
    child = scrub_env({**SECRETS, **HARMLESS}, SandboxPolicy(), workdir)
    for name in SECRETS.keys() - {"HOME", "TMPDIR"}:
        assert name not in child, name
    for value in SECRETS.values():
        assert value not in child.values()
    for name, value in HARMLESS.items():
        assert child[name] == value


def test_home_and_tmpdir_point_inside_the_workdir(workdir: Path) -> None:
    child = scrub_env(SECRETS, SandboxPolicy(), workdir)
    assert child["HOME"] == str(workdir)
    assert Path(child["TMPDIR"]).is_relative_to(workdir)
    assert child["PWD"] == str(workdir)


def test_extra_env_passes_only_the_named_variable(workdir: Path) -> None:
    parent = {**SECRETS, "MY_PROJECT_SETTING": "42"}
    child = scrub_env(parent, SandboxPolicy(extra_env=("MY_PROJECT_SETTING",)), workdir)
    assert child["MY_PROJECT_SETTING"] == "42"
    assert "OPENAI_API_KEY" not in child


def test_extra_env_can_let_a_secret_through_deliberately(workdir: Path) -> None:
    child = scrub_env(SECRETS, SandboxPolicy(extra_env=("GITHUB_TOKEN",)), workdir)
    assert child["GITHUB_TOKEN"] == SECRETS["GITHUB_TOKEN"]
    assert "OPENAI_API_KEY" not in child


def test_extra_env_name_absent_from_server_is_not_invented(workdir: Path) -> None:
    assert "NOT_SET_ANYWHERE" not in scrub_env({}, SandboxPolicy(extra_env=("NOT_SET_ANYWHERE",)), workdir)


def test_defaults_when_the_server_has_no_path_or_lang(workdir: Path) -> None:
    child = scrub_env({}, SandboxPolicy(), workdir)
    assert child["PATH"] == DEFAULT_PATH
    assert child["LANG"] == "C.UTF-8"


def test_values_with_nul_bytes_are_dropped(workdir: Path) -> None:
    assert "TERM" not in scrub_env({"TERM": "x\x00y"}, SandboxPolicy(), workdir)


def test_allowlist_holds_no_secret_looking_names() -> None:
    for name in ALLOWED_ENV:
        assert not any(word in name for word in ("KEY", "TOKEN", "SECRET", "PASSWORD", "AUTH")), name


def test_parent_mapping_is_not_modified(workdir: Path) -> None:
    parent = {**SECRETS, **HARMLESS}
    before = dict(parent)
    scrub_env(parent, SandboxPolicy(), workdir)
    assert parent == before


# --- end to end: a real child process's environment ------------------------------------------------------


def _child_env(argv: list[str], env: dict[str, str], cwd: str) -> dict[str, str]:
    out = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=True, timeout=30).stdout
    return dict(line.split("=", 1) for line in out.decode().splitlines() if "=" in line)


def test_child_process_of_the_null_sandbox_plan_lacks_the_secrets(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    policy = SandboxPolicy().with_workdir(workdir)
    (workdir / ".tmp").mkdir()
    plan = NullSandbox().harden(["/usr/bin/env"], policy)
    seen = _child_env(list(plan.argv), plan.env, plan.cwd)
    for name in ("OPENAI_API_KEY", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "HANZO_SANDBOX_TOKEN"):
        assert name not in seen
    assert not set(SECRETS.values()) & set(seen.values())
    assert seen["HOME"] == str(workdir)


def test_runner_child_env_lacks_the_secrets(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import anyio

    from hanzo_sandbox_mcp.runner import run_sandboxed
    from hanzo_sandbox_mcp.sandbox import null

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    policy = SandboxPolicy().with_workdir(workdir)

    async def main() -> ExecResult:
        return await run_sandboxed(null(), policy, ["/usr/bin/env"], timeout_s=30)

    result = anyio.run(main)
    assert result.exit_code == 0, result
    seen = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    for name in SECRETS.keys() - {"HOME", "TMPDIR"}:
        assert name not in seen, name
    assert not set(SECRETS.values()) & set(seen.values())
    assert seen["HOME"] == str(workdir)
    assert result.protection.env_scrubbed is True


@pytest.mark.parametrize("mode", ["off", "auto"])
def test_cli_run_child_env_lacks_the_secrets(tmp_path: Path, mode: str) -> None:
    """End to end through `hanzo-sandbox-mcp run --json`, with the null sandbox and with the OS sandbox."""
    env = {
        "PATH": os.environ.get("PATH", DEFAULT_PATH),
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),  # no user config file
        "HANZO_SANDBOX": mode,
        "MY_HARMLESS": "visible-only-if-allowed",
        **{name: value for name, value in SECRETS.items() if name not in ("HOME", "TMPDIR")},
    }
    done = subprocess.run(
        [sys.executable, "-m", "hanzo_sandbox_mcp", "run", "--json", "--", "/usr/bin/env"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = ExecResult.model_validate_json(done.stdout)
    assert result.exit_code == 0, result
    for name, value in SECRETS.items():
        if name not in ("HOME", "TMPDIR"):
            assert f"{name}=" not in result.stdout
            assert value not in result.stdout
    assert "MY_HARMLESS" not in result.stdout
    assert "Traceback" not in done.stderr
    assert result.protection.env_scrubbed is True
