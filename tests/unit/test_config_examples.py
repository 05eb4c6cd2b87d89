"""The shipped config files and client snippets: docs and code cannot drift apart."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from hanzo_sandbox_mcp.config import Settings, load_settings
from hanzo_sandbox_mcp.policy import NetworkMode, SandboxMode

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "config" / "default.toml"
STRICT = ROOT / "config" / "strict.toml"
CLIENTS = ROOT / "config" / "clients"


def _load(path: Path) -> dict[str, object]:
    with path.open("rb") as handle:
        return tomllib.load(handle)


def _sections(text: str) -> dict[str, str]:
    """Text of each TOML section ("" for the top level), comments included."""
    sections: dict[str, str] = {"": ""}
    current = ""
    for line in text.splitlines():
        header = re.match(r"^\[([A-Za-z0-9_.]+)\]\s*(#.*)?$", line)
        if header:
            current = header.group(1)
            sections.setdefault(current, "")
        else:
            sections[current] += line + "\n"
    return sections


def _has_key(section_text: str, key: str) -> bool:
    return re.search(rf"^\s*(#\s*)?{re.escape(key)}\s*=", section_text, re.MULTILINE) is not None


def test_default_toml_equals_the_built_in_defaults() -> None:
    assert Settings.model_validate(_load(DEFAULT)) == Settings()


def test_default_toml_loads_through_load_settings(tmp_path: Path) -> None:
    assert load_settings(DEFAULT, env={"HOME": str(tmp_path)}) == Settings()


def test_default_toml_shows_every_key() -> None:
    sections = _sections(DEFAULT.read_text(encoding="utf-8"))
    missing: list[str] = []
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if name not in sections:
                missing.append(f"[{name}]")
                continue
            missing += [f"{name}.{key}" for key in annotation.model_fields if not _has_key(sections[name], key)]
        elif not _has_key(sections[""], name):
            missing.append(name)
    assert missing == [], f"config/default.toml lacks: {missing}"


def test_default_toml_comments_out_exactly_the_unset_keys() -> None:
    """Keys whose default is None appear commented out (TOML has no null); all others are set."""
    data = _load(DEFAULT)
    defaults = Settings().model_dump()
    for name, value in defaults.items():
        if isinstance(value, dict):
            table = data.get(name)
            assert isinstance(table, dict), name
            for key, sub in value.items():
                assert (key in table) == (sub is not None), f"{name}.{key}"
        else:
            assert (name in data) == (value is not None), name


def test_default_toml_has_no_unknown_sections() -> None:
    sections = set(_sections(DEFAULT.read_text(encoding="utf-8"))) - {""}
    assert sections <= set(Settings.model_fields)


def test_strict_toml_is_stricter_than_the_defaults(tmp_path: Path) -> None:
    strict = load_settings(STRICT, env={"HOME": str(tmp_path)})
    default = Settings()
    assert strict.mode is SandboxMode.ON
    assert strict.policy.network is NetworkMode.NONE
    assert strict.policy.strict is True
    for key in (
        "max_memory_mb",
        "max_cpu_secs",
        "max_procs",
        "max_open_fds",
        "max_file_sz_mb",
        "tmp_size_mb",
        "workdir_quota_mb",
    ):
        assert getattr(strict.policy, key) < getattr(default.policy, key), key
    assert strict.exec.max_timeout_s < default.exec.max_timeout_s
    assert strict.exec.default_timeout_s < default.exec.default_timeout_s
    assert strict.exec.max_concurrent_calls < default.exec.max_concurrent_calls
    assert strict.output.max_stdout_bytes < default.output.max_stdout_bytes
    assert strict.sessions.max_sessions < default.sessions.max_sessions
    assert strict.policy.extra_env == strict.policy.extra_fs_read == strict.policy.extra_fs_write == ()


def test_hanzo_sandbox_still_overrides_strict(tmp_path: Path) -> None:
    assert load_settings(STRICT, env={"HOME": str(tmp_path), "HANZO_SANDBOX": "auto"}).mode is SandboxMode.AUTO


# --- client snippets ------------------------------------------------------------------------------------


def _server_entries(path: Path) -> dict[str, dict[str, object]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    key = "servers" if path.name == "vscode_mcp.json" else "mcpServers"
    assert set(data) == {key}, f"{path.name}: top-level key must be {key!r}"
    entries = data[key]
    assert isinstance(entries, dict) and entries
    return entries


@pytest.mark.parametrize("name", ["claude_desktop_config.json", "cursor_mcp.json", "vscode_mcp.json"])
def test_client_json_snippets_are_valid(name: str) -> None:
    for server in _server_entries(CLIENTS / name).values():
        command = server["command"]
        assert isinstance(command, str) and command.startswith("/"), "command must be an absolute path"
        assert command.endswith(("/.venv/bin/hanzo-sandbox-mcp", "/scripts/serve"))
        args = server.get("args", [])
        assert isinstance(args, list) and all(isinstance(a, str) for a in args)
        if command.endswith("hanzo-sandbox-mcp"):
            assert args[:1] == ["serve"]
        env = server.get("env", {})
        assert isinstance(env, dict) and all(isinstance(v, str) for v in env.values())
        if name == "vscode_mcp.json":
            assert server["type"] == "stdio"


def test_claude_code_md_json_blocks_are_valid() -> None:
    text = (CLIENTS / "claude_code.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", text, re.DOTALL)
    assert blocks, "claude_code.md should show a .mcp.json snippet"
    for block in blocks:
        assert "mcpServers" in json.loads(block)
    assert "claude mcp add hanzo-sandbox -- " in text


def test_allowlist_toml_allows_the_package_indexes_and_github_over_tls_only(tmp_path: Path) -> None:
    settings = load_settings(ROOT / "config" / "allowlist.toml", env={"HOME": str(tmp_path)})
    policy = settings.policy
    assert policy.network is NetworkMode.ALLOWLIST and policy.strict is True
    assert {"pypi.org", "files.pythonhosted.org", "registry.npmjs.org", "github.com"} <= set(policy.allowed_domains)
    assert not [name for name in policy.allowed_domains if name.startswith("*")]
    assert policy.allowed_ports == (443,)
    assert policy.allowed_private_cidrs == () and policy.proxy_hosts == ()
