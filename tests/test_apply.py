"""Apply's refusals: nothing is written without a matching key; a failure stops and says what was done."""

from __future__ import annotations

from reconciler import signing
from tests.helpers.e2e import CANARY_WAVE, advance, api, commit, reconcile

NEW_WAVE = CANARY_WAVE


def waves(factory_dir):
    with api(factory_dir) as client:
        return client.get("/ota/factories/demo/waves/", params={"limit": 50, "page": 1}).json()["waves"]


def test_a_key_that_root_does_not_know_is_refused_before_any_write(release_repo, factory_dir, tmp_path):
    stranger = tmp_path / "stranger.tgz"
    stranger.write_bytes(signing.key_archive_bytes([signing.generate_keypair()]))
    commit(release_repo, {"rel-46.yaml": NEW_WAVE}, "Release 46")
    before = waves(factory_dir)
    code, _out, err = reconcile(str(release_repo), "--local", str(factory_dir), "--keys", str(stranger))
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("error: No private key found for key IDs")
    assert "Traceback" not in err
    assert waves(factory_dir) == before


def test_an_unknown_device_group_is_a_plan_error_before_any_write(release_repo, factory_dir):
    commit(release_repo, {"rel-46.yaml": NEW_WAVE.replace("group: canary", "group: no-such-group")}, "typo")
    before = waves(factory_dir)
    code, out, err = reconcile(str(release_repo), "--local", str(factory_dir))
    assert code == 1 and "Applying" not in err
    assert "rel-46.yaml:8:12: phase 'canary': device group 'no-such-group' does not exist in factory 'demo'" in out
    assert waves(factory_dir) == before


def test_a_uuid_the_factory_would_refuse_stops_the_wave_before_its_init(release_repo, factory_dir):
    stranger = "00000000-0000-4000-8000-000000000000"  # a UUID no production device has
    commit(release_repo, {"rel-46.yaml": NEW_WAVE.replace("group: canary", f"uuids: [{stranger}]")}, "Release 46")
    code, out, err = reconcile(str(release_repo), "--local", str(factory_dir))
    assert code == 1 and "Applying" not in err
    assert f"rel-46.yaml:8:13: phase 'canary': UUID {stranger} is not a production device on tag 'production'" in out
    assert [w["name"] for w in waves(factory_dir) if w["status"] == "active"] == []


def test_apply_refuses_a_dirty_work_tree_unless_allowed(release_repo, factory_dir):
    commit(release_repo, {"rel-46.yaml": NEW_WAVE}, "Release 46")
    (release_repo / "rel-46.yaml").write_text(NEW_WAVE.replace("46", "47"))
    code, _, err = reconcile(str(release_repo), "--local", str(factory_dir))
    assert code == 1 and "uncommitted changes" in err and "--allow-dirty" in err
    assert waves(factory_dir) == [w for w in waves(factory_dir) if w["name"] == "populate-targets"]
    code, _, err = reconcile(str(release_repo), "--local", str(factory_dir), "--allow-dirty")
    assert code == 0 and "+ init rel-47" in err


def test_plan_errors_point_at_the_offending_value(release_repo, factory_dir):
    """A target at or below production and a prune of a version not in production, at their own lines."""
    wave = NEW_WAVE.replace("target: 46", "target: 40").replace("tag: production", "tag: production\nprune: [39]")
    commit(release_repo, {"rel-40.yaml": wave}, "A wave below production")
    code, out, _ = reconcile("--dry-run", str(release_repo), "--local", str(factory_dir))
    assert code == 1
    assert "rel-40.yaml:4:9: target 40 must be above the production version of tag 'production'" in out
    assert "rel-40.yaml:6:8: cannot prune 39: not in the production targets of tag 'production'" in out


def test_a_step_that_vanished_from_the_plan_without_being_done_fails_the_run(release_repo, factory_dir):
    """Canceled by hand between the plan and the step: that is not "already done"."""

    from reconciler.apply.steps import Outcome, apply_plan
    from reconciler.core import build_plan
    from reconciler.factory.client import FactoryClient, select_backend
    from reconciler.factory.observe import observe
    from reconciler.manifest import load

    gated = NEW_WAVE.replace("    group: canary", "    group: canary\n    wait: 1h")
    commit(release_repo, {"rel-46.yaml": gated}, "Release 46, canary after an hour")
    assert reconcile(str(release_repo), "--local", str(factory_dir))[0] == 0  # init only: the rollout waits
    advance(factory_dir, "2h")
    specs = load([str(release_repo)]).specs
    with FactoryClient(select_backend(api_url=None, factory=None, local=str(factory_dir))) as client:
        plan = build_plan(specs, observe(client, specs))
        assert [op.op for op in plan.ready] == ["rollout"]
        client.cancel("rel-46")
        result = apply_plan(client, specs, plan, None, print)
    (failed,) = result.of(Outcome.FAILED)
    assert "this step is no longer planned" in failed.message and not result.ok
    assert [h for w in waves(factory_dir) if w["name"] == "rel-46" for h in w["rollout-history"]] == []


def test_a_time_the_factory_sends_that_cannot_be_read_stops_the_plan():
    import pytest

    from reconciler.errors import BackendError
    from reconciler.factory.wire import parse_wave

    with pytest.raises(BackendError) as caught:
        parse_wave({"name": "w", "version": "46", "tag": "t", "change-meta": {"created-at": "23 Nov 2026"}})
    assert "change-meta.created-at '23 Nov 2026' is not an RFC 3339 time" in str(caught.value)


def test_a_rollout_the_factory_refuses_in_a_dry_run_is_blocked_in_every_view(release_repo, factory_dir):
    """The plan checks UUIDs against the device list; a device moved away in between is refused by the dry run."""
    from reconciler.core import build_plan
    from reconciler.factory.client import FactoryClient, select_backend
    from reconciler.factory.observe import fill_device_counts, observe
    from reconciler.manifest import load
    from reconciler.render.plan import to_dict

    with api(factory_dir) as client:
        device = client.get("/ota/devices/", params={"factory": "demo", "group": "beta", "limit": 10}).json()[
            "devices"
        ][0]
    two = NEW_WAVE + f"  - name: strangers\n    group: beta\n    uuids: [{device['uuid']}]\n    wait: 1h\n"
    commit(release_repo, {"rel-46.yaml": two}, "Release 46")
    assert reconcile(str(release_repo), "--local", str(factory_dir))[0] == 0
    advance(factory_dir, "2h")
    specs = load([str(release_repo)]).specs
    with FactoryClient(select_backend(api_url=None, factory=None, local=str(factory_dir))) as client:
        plan = build_plan(specs, observe(client, specs))
        with api(factory_dir) as http:  # moved to another group between the plan and its dry run
            moved = http.patch(f"/ota/devices/{device['name']}/", params={"factory": "demo"}, json={"group": "apac"})
            assert moved.status_code == 200, moved.text
        plan = to_dict(fill_device_counts(client, plan))
    (op,) = plan["operations"]
    assert op["status"] == "blocked" and op["reason"].startswith("the factory refuses this rollout: ")
    assert plan["waves"][0]["phases"] == [
        {"name": "canary", "state": "done"},
        {"name": "strangers", "state": "blocked"},
    ]
    assert plan["changes"] is False


def test_each_step_costs_its_write_and_one_read_and_the_first_starts_from_the_observation(release_repo, factory_dir):
    """The plan's observation (read under the lease a moment ago, with what an init signs) serves the
    first step; every later step's reads go out with the check after the write before it."""
    import dataclasses
    import time

    import httpx

    from reconciler.apply.steps import Outcome, apply_plan
    from reconciler.core import build_plan
    from reconciler.factory.client import FactoryClient, select_backend
    from reconciler.factory.observe import observe
    from reconciler.manifest import load

    sent: list[str] = []

    class Recording(httpx.WSGITransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            sent.append(f"{request.method} {request.url.path}")
            return super().handle_request(request)

    commit(release_repo, {"rel-46.yaml": NEW_WAVE + "  - name: beta\n    group: beta\n"}, "Release 46")
    specs = load([str(release_repo)]).specs
    backend = select_backend(api_url=None, factory=None, local=str(factory_dir))
    backend = dataclasses.replace(backend, transport=Recording(app=backend.transport.app))
    with FactoryClient(backend) as client:
        observed = observe(client, specs, signing=True)
        plan = build_plan(specs, observed)
        sent.clear()
        result = apply_plan(
            client,
            specs,
            plan,
            lambda root, online: signing.signer_from_uri(
                f"archive:{factory_dir / 'targets.only.key.tgz'}", root, online
            ),
            print,
            observed=observed,
            observed_at=time.monotonic(),
        )
    assert [o.outcome for o in result.outcomes] == [Outcome.DONE] * 3
    wave = "GET /ota/factories/demo/waves/rel-46/"
    assert sent == [
        "POST /ota/factories/demo/waves/",
        wave,
        "POST /ota/factories/demo/waves/rel-46/rollout/",
        wave,
        "POST /ota/factories/demo/waves/rel-46/rollout/",
        wave,
    ]
