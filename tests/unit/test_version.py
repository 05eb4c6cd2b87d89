"""One source for the version: pyproject.toml's `[project] version`."""

from __future__ import annotations

import tomllib
from pathlib import Path

from hanzo_sandbox_mcp.version import package_version

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_version_is_pyprojects() -> None:
    with PYPROJECT.open("rb") as handle:
        declared = tomllib.load(handle)["project"]["version"]
    assert package_version() == declared and declared[0].isdigit()
