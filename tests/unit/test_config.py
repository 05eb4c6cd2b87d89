"""Config loading: precedence, HANZO_SANDBOX, the token variable, and errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hanzo_sandbox_mcp.config import (
    TOKEN_ENV_VAR,
    Settings,
    default_config_path,
    load_settings,
    parse_mode,
)
from hanzo_sandbox_mcp.errors import ConfigError, HanzoSandboxError
from hanzo_sandbox_mcp.policy import SANDBOX_ENV_VAR, NetworkMode, SandboxMode


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def xdg(tmp_path: Path) -> Path:
    """An empty XDG_CONFIG_HOME (the user file does not exist yet)."""
    directory = tmp_path / "xdg"
    directory.mkdir()
    return directory


def _env(xdg: Path, **extra: str) -> dict[str, str]:
    return {"XDG_CONFIG_HOME": str(xdg), "HOME": str(xdg.parent / "home"), **extra}


def _user_file(xdg: Path) -> Path:
    return xdg / "hanzo-sandbox-mcp" / "config.toml"


# --- precedence ----------------------------------------------------------------------------------------


def test_no_file_gives_embedded_defaults(xdg: Path) -> None:
    assert load_settings(env=_env(xdg)) == Settings()


def test_user_file_is_read_from_xdg_config_home(xdg: Path) -> None:
    _write(_user_file(xdg), "[policy]\nmax_procs = 7\n")
    settings = load_settings(env=_env(xdg))
    assert settings.policy.max_procs == 7
    assert settings.policy.max_memory_mb == Settings().policy.max_memory_mb


def test_user_file_falls_back_to_home_dot_config(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _write(home / ".config" / "hanzo-sandbox-mcp" / "config.toml", 'log_level = "DEBUG"\n')
    env = {"HOME": str(home)}
    assert default_config_path(env) == home / ".config" / "hanzo-sandbox-mcp" / "config.toml"
    assert load_settings(env=env).log_level == "DEBUG"


def test_explicit_config_beats_user_file(xdg: Path, tmp_path: Path) -> None:
    _write(_user_file(xdg), "[policy]\nmax_procs = 7\n")
    explicit = _write(tmp_path / "explicit.toml", "[policy]\nmax_procs = 9\n")
    assert load_settings(explicit, env=_env(xdg)).policy.max_procs == 9


def test_explicit_config_does_not_merge_the_user_file(xdg: Path, tmp_path: Path) -> None:
    _write(_user_file(xdg), '[policy]\nnetwork = "full"\n')
    explicit = _write(tmp_path / "explicit.toml", "[policy]\nmax_procs = 9\n")
    assert load_settings(explicit, env=_env(xdg)).policy.network is NetworkMode.LOOPBACK


def test_missing_explicit_config_is_an_error(xdg: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env=_env(xdg))


# --- HANZO_SANDBOX -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "mode"),
    [("on", SandboxMode.ON), ("OFF", SandboxMode.OFF), ("Auto", SandboxMode.AUTO), (" on ", SandboxMode.ON)],
)
def test_hanzo_sandbox_overrides_mode_case_insensitively(xdg: Path, raw: str, mode: SandboxMode) -> None:
    _write(_user_file(xdg), 'mode = "auto"\n' if mode is not SandboxMode.AUTO else 'mode = "off"\n')
    assert load_settings(env=_env(xdg, **{SANDBOX_ENV_VAR: raw})).mode is mode


def test_hanzo_sandbox_overrides_an_explicit_file(xdg: Path, tmp_path: Path) -> None:
    explicit = _write(tmp_path / "c.toml", 'mode = "on"\n')
    assert load_settings(explicit, env=_env(xdg, **{SANDBOX_ENV_VAR: "off"})).mode is SandboxMode.OFF


def test_empty_hanzo_sandbox_is_ignored(xdg: Path) -> None:
    assert load_settings(env=_env(xdg, **{SANDBOX_ENV_VAR: ""})).mode is SandboxMode.AUTO


@pytest.mark.parametrize("raw", ["yes", "1", "enabled", "o n"])
def test_invalid_hanzo_sandbox_is_a_clear_config_error(xdg: Path, raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=_env(xdg, **{SANDBOX_ENV_VAR: raw}))
    message = str(info.value)
    assert SANDBOX_ENV_VAR in message
    assert repr(raw) in message
    for choice in ("auto", "on", "off"):
        assert choice in message


def test_parse_mode() -> None:
    assert parse_mode("ON") is SandboxMode.ON
    with pytest.raises(ConfigError):
        parse_mode("maybe")


# --- HANZO_SANDBOX_TOKEN -------------------------------------------------------------------------------


def test_token_from_environment(xdg: Path) -> None:
    token = "t" * 32
    assert load_settings(env=_env(xdg, **{TOKEN_ENV_VAR: token})).http.token == token


def test_token_in_file_wins_over_environment(xdg: Path) -> None:
    _write(_user_file(xdg), '[http]\ntoken = "from-the-file-0123456789"\n')
    settings = load_settings(env=_env(xdg, **{TOKEN_ENV_VAR: "e" * 32}))
    assert settings.http.token == "from-the-file-0123456789"


def test_short_token_from_environment_is_rejected(xdg: Path) -> None:
    with pytest.raises(ConfigError, match=TOKEN_ENV_VAR):
        load_settings(env=_env(xdg, **{TOKEN_ENV_VAR: "short"}))


def test_empty_token_variable_is_a_config_error_not_no_authentication(xdg: Path) -> None:
    for empty in ("", "   "):
        with pytest.raises(ConfigError, match=f"{TOKEN_ENV_VAR} is set but empty"):
            load_settings(env=_env(xdg, **{TOKEN_ENV_VAR: empty}))


@pytest.mark.parametrize("token", [" " + "t" * 20, "t" * 20 + " ", "t" * 20 + "\n", "\t" + "t" * 20])
def test_a_token_with_surrounding_whitespace_is_refused(xdg: Path, tmp_path: Path, token: str) -> None:
    with pytest.raises(ConfigError, match="whitespace"):
        load_settings(env=_env(xdg, **{TOKEN_ENV_VAR: token}))
    escaped = token.replace("\n", "\\n").replace("\t", "\\t")
    for text in (f'[http]\ntoken = "{escaped}"\n', f'[http]\ntokens = [{{ name = "ci", token = "{escaped}" }}]\n'):
        with pytest.raises(ConfigError, match="whitespace"):
            load_settings(_write(tmp_path / "c.toml", text), env=_env(xdg))


def test_named_tokens_are_read_beside_the_single_token(xdg: Path, tmp_path: Path) -> None:
    text = '[http]\ntoken = "the-single-token-0123"\ntokens = [{ name = "ci", token = "the-ci-token-0123456" }]\n'
    http = load_settings(_write(tmp_path / "c.toml", text), env=_env(xdg)).http
    assert http.token == "the-single-token-0123"
    assert [(t.name, t.token) for t in http.tokens] == [("ci", "the-ci-token-0123456")]
    assert http.has_tokens()


@pytest.mark.parametrize(
    "tokens",
    [
        '[{ name = "ci", token = "aaaaaaaaaaaaaaaaaaaa" }, { name = "ci", token = "bbbbbbbbbbbbbbbbbbbb" }]',
        '[{ name = "ci", token = "aaaaaaaaaaaaaaaaaaaa" }, { name = "cd", token = "aaaaaaaaaaaaaaaaaaaa" }]',
        '[{ name = "has space", token = "aaaaaaaaaaaaaaaaaaaa" }]',
        '[{ name = "ci", token = "short" }]',
    ],
)
def test_bad_named_tokens_are_config_errors(xdg: Path, tmp_path: Path, tokens: str) -> None:
    with pytest.raises(ConfigError, match=r"http\.tokens"):
        load_settings(_write(tmp_path / "c.toml", f"[http]\ntokens = {tokens}\n"), env=_env(xdg))


def test_the_token_variable_must_differ_from_a_named_token(xdg: Path, tmp_path: Path) -> None:
    path = _write(tmp_path / "c.toml", '[http]\ntokens = [{ name = "ci", token = "aaaaaaaaaaaaaaaaaaaa" }]\n')
    with pytest.raises(ConfigError, match="equal"):
        load_settings(path, env=_env(xdg, **{TOKEN_ENV_VAR: "a" * 20}))


# --- errors name the key, never a traceback ---------------------------------------------------------------


def test_bad_toml_is_a_config_error_naming_the_file(xdg: Path, tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.toml", "[policy\nmax_procs = \n")
    with pytest.raises(ConfigError) as info:
        load_settings(bad, env=_env(xdg))
    assert "not valid TOML" in str(info.value)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("max_procs = 3\n", "max_procs"),  # a policy key at the top level
        ("[policy]\nmax_memry_mb = 5\n", "policy.max_memry_mb"),
        ("[sessions]\nttl = 5\n", "sessions.ttl"),
        ("[nonsense]\na = 1\n", "nonsense"),
    ],
)
def test_unknown_keys_are_named(xdg: Path, tmp_path: Path, text: str, key: str) -> None:
    path = _write(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=_env(xdg))
    assert key in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[policy]\nmax_memory_mb = -1\n", "policy.max_memory_mb"),
        ('[policy]\nnetwork = "internet"\n', "policy.network"),
        ('[policy]\nextra_fs_read = ["relative/dir"]\n', "policy.extra_fs_read"),
        ('[policy]\nextra_env = ["NOT-A-NAME"]\n', "policy.extra_env"),
        ("[exec]\ndefault_timeout_s = 700.0\n", "exec"),  # above max_timeout_s
        ('log_level = "LOUD"\n', "log_level"),
        ('mode = "sometimes"\n', "mode"),
        ("[http]\nport = 70000\n", "http.port"),
        ('[http]\ntoken = "short"\n', "http.token"),
        ("[http]\nprotocol_session_idle_s = 600.0\n", "exec.max_timeout_s"),  # not longer than the longest call
    ],
)
def test_invalid_values_are_named(xdg: Path, tmp_path: Path, text: str, key: str) -> None:
    path = _write(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=_env(xdg))
    message = str(info.value)
    assert key in message
    assert "Traceback" not in message


def test_config_error_is_a_hanzo_error() -> None:
    assert issubclass(ConfigError, HanzoSandboxError)


def test_unreadable_config_is_a_config_error(xdg: Path, tmp_path: Path) -> None:
    directory = tmp_path / "a-directory.toml"
    directory.mkdir()
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(directory, env=_env(xdg))


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError):
        settings.log_level = "DEBUG"  # type: ignore[misc]


# --- through the command line: exit 2 and a message, never a traceback ------------------------------------


def _cli_available() -> bool:
    try:
        import hanzo_sandbox_mcp.cli  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _cli_available(), reason="hanzo_sandbox_mcp.cli has not landed yet")
@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("[policy]\nmax_memry_mb = 3\n", {}, "policy.max_memry_mb"),
        ("x =", {}, "not valid TOML"),
        ("", {SANDBOX_ENV_VAR: "yes"}, SANDBOX_ENV_VAR),
    ],
)
def test_cli_reports_config_errors_without_traceback(
    xdg: Path, tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    path = _write(tmp_path / "c.toml", text)
    done = subprocess.run(
        [sys.executable, "-m", "hanzo_sandbox_mcp", "--config", str(path), "doctor"],
        env={"PATH": "/usr/bin:/bin", **_env(xdg), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
