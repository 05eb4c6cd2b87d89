"""In a container, a missing layer's reason names the runtime flag that gives it back."""

from __future__ import annotations

import pytest

from hanzo_sandbox_mcp.linux import diagnose

PROC_REFUSED = "[Errno 1] mount /tmp/proc: Operation not permitted"


def test_in_a_container_a_refused_proc_names_the_unmask_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diagnose, "_in_container", lambda: True)
    why = diagnose.private_root(PROC_REFUSED)
    assert why.startswith(PROC_REFUSED)
    assert "unmask=ALL" in why and "systempaths=unconfined" in why


def test_outside_a_container_the_launchers_error_stands_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diagnose, "_in_container", lambda: False)
    assert diagnose.private_root(PROC_REFUSED) == PROC_REFUSED
    assert diagnose.private_root(None) == "not built"


def test_the_namespace_hint_points_at_the_shipped_profile_not_unconfined(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diagnose, "_in_container", lambda: True)
    why = diagnose.reason("namespaces", "unshare(user,pid) failed: [Errno 1] Operation not permitted")
    assert "config/container-seccomp.json" in why
    assert "seccomp=unconfined" not in why
