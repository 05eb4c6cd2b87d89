"""The server's environment (API keys, tokens, agent sockets) must not reach the command by any route:
`env`, `/proc/1/environ` (the sandbox's init), `/proc/<ppid>/environ`, every `/proc/*/environ`.

Positive controls: allowlisted variables (TZ, LANG) do pass, a policy's `extra_env` name passes, and the
scan does find a variable the command sets itself.
"""

from __future__ import annotations

import uuid

import pytest
from _security_support import assert_protection
from support.layers import BASE

SECRET_NAMES = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "GITHUB_TOKEN",
    "HANZO_SANDBOX_TOKEN",
    "DATABASE_URL",
    "SSH_AUTH_SOCK",
    "LD_PRELOAD",
    "PYTHONPATH",
)

SCAN = (
    "env; echo ---; tr '\\0' '\\n' < /proc/1/environ; echo ---; tr '\\0' '\\n' < /proc/$PPID/environ; "
    "echo ---; for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < \"$f\"; done 2>/dev/null; true"
)


@pytest.fixture
def server_secrets(monkeypatch):
    values = {}
    for name in SECRET_NAMES:
        value = f"SRV-{name}-{uuid.uuid4().hex}"
        if name == "LD_PRELOAD":
            value = f"/nonexistent/{value}.so"
        values[name] = value
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TZ", "UTC")
    return values


def _assert_no_secret(text: str, secrets: dict[str, str]) -> None:
    for name, value in secrets.items():
        assert value not in text, f"{name}'s value reached the command"
        assert f"{name}=" not in text, f"{name} is set in the command's environment"


def test_sandbox_blocks_server_secrets_in_env_and_proc_environ(sandbox_run, server_secrets):
    result = sandbox_run(SCAN)
    assert result.exit_code == 0, result
    _assert_no_secret(result.stdout + result.stderr, server_secrets)
    assert "TZ=UTC" in result.stdout, "positive control: the allowlisted TZ should pass"
    assert_protection(result, env_scrubbed=True)


def test_sandbox_blocks_secrets_passed_as_explicit_env(sandbox_run, server_secrets):
    """An `env=` mapping handed to the runner is scrubbed like the server's own environment."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **server_secrets}
    result = sandbox_run(SCAN, env=env)
    _assert_no_secret(result.stdout + result.stderr, server_secrets)
    assert "LANG=C.UTF-8" in result.stdout


def test_extra_env_lets_a_named_variable_through_positive_control(sandbox_run, monkeypatch):
    value = f"visible-{uuid.uuid4().hex}"
    monkeypatch.setenv("HANZO_TEST_VISIBLE", value)
    result = sandbox_run('echo "$HANZO_TEST_VISIBLE"', policy_overrides={"extra_env": ("HANZO_TEST_VISIBLE",)})
    assert value in result.stdout, result


def test_environ_scan_finds_the_commands_own_variables_positive_control(sandbox_run):
    """The /proc scan really reads environ files (so finding nothing above means something)."""
    marker = f"OWN-{uuid.uuid4().hex}"
    result = sandbox_run(f'export MINE={marker}; sh -c \'tr "\\0" "\\n" < /proc/self/environ\'')
    assert f"MINE={marker}" in result.stdout, result


def test_home_and_tmpdir_point_inside_the_workdir(sandbox_run, workdir):
    """Tools writing caches to $HOME must not reach the server user's real home."""
    result = sandbox_run('echo "HOME=$HOME"; echo "TMPDIR=$TMPDIR"; echo "PWD=$PWD"')
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    for name in ("HOME", "TMPDIR"):
        assert (
            lines[name] == str(workdir) or lines[name].startswith(str(workdir) + "/") or lines[name].startswith("/tmp")
        ), f"{name}={lines[name]} is outside the workdir"


def test_cli_blocks_server_secrets(cli_run, server_secrets):
    res = cli_run(["/bin/sh", "-c", SCAN])
    assert res.data is not None, res.proc
    text = res.data["stdout"] + res.data["stderr"]
    _assert_no_secret(text, server_secrets)
    assert res.protection["env_scrubbed"] is True
    # The JSON report itself does not echo the server's environment either.
    _assert_no_secret(res.proc.stdout, server_secrets)


def test_env_scrub_alone_blocks_server_secrets(layered_run, server_secrets):
    """Only the scrub stands between the server's environment and the command's (no pid namespace hides
    anything here); the control, with the scrub off too, sees every secret."""
    result = layered_run(BASE, "env")
    assert result.exit_code == 0, result
    _assert_no_secret(result.stdout + result.stderr, server_secrets)
    assert result.protection.namespaces == (), result.protection
    control = layered_run(BASE - {"env_scrub"}, "env")
    for name, value in server_secrets.items():
        assert f"{name}={value}" in control.stdout, f"control: without the scrub {name} reaches the command"
