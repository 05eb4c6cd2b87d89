"""The package version, from its one source: `[project] version` in pyproject.toml."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["DISTRIBUTION", "package_version"]

DISTRIBUTION = "hanzo-sandbox-mcp"
_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


@cache
def package_version() -> str:
    """The version of hanzo-sandbox-mcp: a source checkout's pyproject.toml, else the installed metadata.

    The checkout comes first: one run through `PYTHONPATH` has no metadata, and an editable install's
    metadata is as old as the install. An installed wheel has no pyproject.toml beside the package, and its
    metadata was built from that same file.
    """
    if _PYPROJECT.is_file():
        try:
            with _PYPROJECT.open("rb") as handle:
                project = tomllib.load(handle).get("project", {})
            if project.get("name") == DISTRIBUTION and isinstance(project.get("version"), str):
                return str(project["version"])
        except (OSError, tomllib.TOMLDecodeError):
            pass
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"
