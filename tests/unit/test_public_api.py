"""`hanzo_sandbox_mcp.__all__` is the real public API: every name resolves, nothing public is missing."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

import hanzo_sandbox_mcp as pkg

PUBLIC_ALL: list[str] | None = getattr(pkg, "__all__", None)
pytestmark = pytest.mark.skipif(PUBLIC_ALL is None, reason="hanzo_sandbox_mcp.__all__ has not landed yet")


def _all() -> list[str]:
    assert PUBLIC_ALL is not None
    return list(PUBLIC_ALL)


def test_all_has_no_duplicates_and_no_private_names() -> None:
    names = _all()
    assert len(names) == len(set(names))
    assert not [name for name in names if name.startswith("_")]


@pytest.mark.parametrize("name", PUBLIC_ALL or [])
def test_every_name_in_all_resolves(name: str) -> None:
    value = getattr(pkg, name)
    assert value is not None
    namespace: dict[str, object] = {}
    exec(f"from hanzo_sandbox_mcp import {name}", namespace)  # the form users write
    assert namespace[name] is value


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from hanzo_sandbox_mcp import *", namespace)
    assert {name for name in namespace if not name.startswith("__")} == set(_all())


def test_dir_lists_the_public_names() -> None:
    public = {name for name in dir(pkg) if not name.startswith("_")}
    assert set(_all()) <= public


def test_lazy_table_matches_all() -> None:
    table = getattr(pkg, "_WHERE", None)
    if not isinstance(table, dict):
        pytest.skip("the package does not use a lazy-import table")
    assert set(table) == set(_all())


def _own(value: object) -> bool:
    """Objects defined by this package (not stdlib or typing helpers imported into __init__)."""
    module = getattr(value, "__module__", None)
    return isinstance(module, str) and (module == "hanzo_sandbox_mcp" or module.startswith("hanzo_sandbox_mcp."))


def test_no_public_attribute_is_missing_from_all() -> None:
    for name in _all():
        getattr(pkg, name)  # load every lazy name, so vars() holds the package's real attributes
    missing = sorted(
        name
        for name, value in vars(pkg).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)  # submodules
        and _own(value)
        and name not in _all()
    )
    assert missing == [], f"public names missing from __all__: {missing}"


def test_names_in_all_are_exported_by_their_home_module() -> None:
    """A name in the package's __all__ is also in its home module's __all__ (no private leaks)."""
    for name in _all():
        home = getattr(getattr(pkg, name), "__module__", None)
        if isinstance(home, str) and home.startswith("hanzo_sandbox_mcp."):
            exported = getattr(importlib.import_module(home), "__all__", ())
            assert name in exported, f"{name} is not in {home}.__all__"


def test_import_is_lazy() -> None:
    """The launcher imports this package before every command: importing it must not load pydantic or mcp."""
    code = (
        "import json, sys; import hanzo_sandbox_mcp; "
        "print(json.dumps(sorted(m for m in ('pydantic', 'mcp', 'anyio') if m in sys.modules)))"
    )
    root = Path(pkg.__file__ or "").resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert json.loads(out) == []
