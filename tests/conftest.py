"""Shared fixtures: isolate every test from the user's own local factory and state dir."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory, monkeypatch):
    """No test may touch ~/.local/state or a real API: point every default somewhere private."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    # CI and GITHUB_ACTIONS too: the suite runs in CI, where they are set, and reconcile refuses the embedded
    # factory there unless one is named; tests that need them set them themselves.
    for name in (
        "RECONCILE_API_URL",
        "RECONCILE_API_TOKEN",
        "RECONCILE_KEYS",
        "RECONCILE_FACTORY",
        "RECONCILE_LOCAL",
        "RECONCILE_TIMEOUT",
        "CI",
        "GITHUB_ACTIONS",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def release_repo(tmp_path):
    """An empty git release repository with a fixed author."""
    from tests.helpers.e2e import git

    repo = tmp_path / "releases"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Release Bot")
    git(repo, "config", "user.email", "bot@example.com")
    return repo


@pytest.fixture
def factory_dir(tmp_path):
    """A fresh 400-device demo factory whose simulated clock starts at 2026-11-01T08:00:00Z."""
    from tests.helpers.e2e import init_demo_factory

    return init_demo_factory(tmp_path / "factory", devices=400)
