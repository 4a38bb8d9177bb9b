"""Local factory: CI builds with or without static deltas (``custom.delta-stats``, reference §1.4).

``reconcile-factory build N`` publishes a build with static deltas unless ``--no-static-deltas``;
``--static-deltas`` on an existing build generates the missing ones, as ``fioctl targets
static-deltas`` does on the real service. The demo's builds 41..60 have them, 40 (the oldest) not.
"""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from reconciler import signing
from reconciler.localfactory import cli, demo
from tests.helpers.factory import F, new_factory


@pytest.fixture
def factory(tmp_path_factory, tmp_path):
    yield from new_factory(tmp_path_factory, tmp_path)


def build(factory, *args: str):
    factory.embedded.store.close()  # the command opens the store itself
    return CliRunner().invoke(cli.main, ["--local", str(factory.path), "build", *args])


def ci_targets(factory, version: int) -> dict:
    return factory.ok(factory.http.get(f"{F}/targets/", params={"version": version}))


def assert_delta_stats(custom: dict) -> None:
    """The shape fioctl's ``DeltaStats`` reads: ``{"sha256": <hex digest>, "size": <int>}``."""
    stats = custom["delta-stats"]
    assert set(stats) == {"sha256", "size"}
    assert re.fullmatch(r"[0-9a-f]{64}", stats["sha256"]) and type(stats["size"]) is int and stats["size"] > 0


def test_a_build_has_static_deltas_by_default(factory):
    result = build(factory, "61")
    assert result.exit_code == 0 and "(with static deltas)" in result.output, result.output
    targets = ci_targets(factory, 61)
    assert len(targets) == 2
    for meta in targets.values():
        assert_delta_stats(meta["custom"])
    digests = {meta["custom"]["delta-stats"]["sha256"] for meta in targets.values()}
    assert len(digests) == 2, "each target describes its own deltas"


def test_a_build_without_static_deltas_has_no_delta_stats(factory):
    result = build(factory, "61", "--no-static-deltas")
    assert result.exit_code == 0 and "(without static deltas)" in result.output, result.output
    assert all("delta-stats" not in meta["custom"] for meta in ci_targets(factory, 61).values())


def test_static_deltas_generated_later_are_published_in_the_signed_ci_targets(factory):
    assert build(factory, "61", "--no-static-deltas").exit_code == 0
    before = factory.ok(factory.http.get("/ota/repo/demo/api/v1/user_repo/targets.json"))
    result = build(factory, "61", "--static-deltas")
    assert result.exit_code == 0, result.output
    assert "Generated static deltas for intel-corei7-64-lmp-61, raspberrypi4-64-lmp-61" in result.output
    for meta in ci_targets(factory, 61).values():
        assert_delta_stats(meta["custom"])
    after = factory.ok(factory.http.get("/ota/repo/demo/api/v1/user_repo/targets.json"))
    assert after["signed"]["version"] == before["signed"]["version"] + 1
    assert all("delta-stats" in after["signed"]["targets"][name]["custom"] for name in ci_targets(factory, 61))
    root = factory.ok(factory.http.get("/ota/repo/demo/api/v1/user_repo/root.json"))
    assert signing.verify_threshold(root, "targets", after["signed"], after["signatures"]), "re-signed online"
    again = build(factory, "61", "--static-deltas")
    assert again.exit_code == 0 and "CI build 61 already has static deltas" in again.output


def test_a_wave_of_a_build_whose_deltas_came_later_carries_them(factory):
    assert build(factory, "61", "--no-static-deltas").exit_code == 0
    assert build(factory, "61", "--static-deltas").exit_code == 0
    factory.create_wave("v61", 61)  # the server checks the wave's targets against the CI targets as they are now
    wave = factory.wave("v61", show_targets=True)
    new = [meta for meta in wave["targets"]["signed"]["targets"].values() if meta["custom"]["version"] == "61"]
    assert len(new) == 2 and all("delta-stats" in meta["custom"] for meta in new)


def test_static_deltas_are_never_removed_from_a_published_build(factory):
    result = build(factory, "42", "--no-static-deltas")
    assert result.exit_code == 1
    assert result.output == (
        "error: CI build 42 already exists: --no-static-deltas is for a new build (generated "
        "static deltas are never removed)\n"
    )
    assert all("delta-stats" in meta["custom"] for meta in ci_targets(factory, 42).values())
    assert build(factory, "42").exit_code == 1, "an existing build with no option is still refused"


def test_the_demo_builds_have_static_deltas_but_the_oldest(factory):
    for version in demo.VERSIONS:
        has = {"delta-stats" in meta["custom"] for meta in ci_targets(factory, version).values()}
        assert has == {version != 40}, version
