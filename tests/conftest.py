"""Shared fixtures: isolate every test from the user's own local factory and state dir."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory, monkeypatch):
    """No test may touch ~/.local/state or a real API: point every default somewhere private."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    for name in ("RECONCILE_API_URL", "RECONCILE_API_TOKEN", "RECONCILE_KEYS", "RECONCILE_FACTORY",
                 "RECONCILE_LOCAL"):
        monkeypatch.delenv(name, raising=False)
