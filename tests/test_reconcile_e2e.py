"""End to end against the local factory: a release repository in git, the real CLI, simulated time.

A wave goes from init through gated phases to complete while the fleet updates between runs;
a second wave on the same tag then prunes the first one's version; a device on the tag ends on
the right version and its metadata verifies. A rollout made outside the manifests is drift.
"""

from __future__ import annotations

import json

from reconciler import signing
from reconciler.core import build_plan
from reconciler.factory.client import FactoryClient, select_backend
from reconciler.factory.observe import fill_device_counts, observe
from reconciler.manifest import load
from tests.helpers.e2e import CANARY_WAVE, add_device, advance, api, commit, git, reconcile, wave

WAVE_46 = (
    CANARY_WAVE
    + """\
  - name: beta
    group: beta
    wait: 24h
    require:
      updated: 70%
complete:
  wait: 12h
  require:
    updated: 70%
"""
)

WAVE_48 = """\
apiVersion: reconciler/v1
kind: Wave
name: rel-48
target: 48
tag: production
prune: [46]
complete: true
"""


def test_a_wave_walks_through_gated_phases_to_complete_then_a_second_wave_prunes_it(release_repo, factory_dir):
    local = ["--local", str(factory_dir)]
    commit(release_repo, {"rel-46.yaml": WAVE_46}, "Release 46 to canary, then beta")

    code, out, err = reconcile(str(release_repo), *local)
    assert code == 0, err
    assert "+ init rel-46" in err and "~ rollout rel-46 phase 'canary' (group canary): rolled out to 10 devices" in err
    assert "blocked: wait 24h: 24h left" in out
    assert [h["group-name"] for h in wave(factory_dir, "rel-46")["rollout-history"]] == ["canary"]

    code, out, err = reconcile(str(release_repo), *local)
    assert code == 0 and "Applying" not in err, "a second run right after must do nothing"
    assert out.rstrip().endswith("2 blocked.")

    code, out, _ = reconcile("--dry-run", "--detailed-exitcode", str(release_repo), *local)
    assert code == 0, "nothing is ready before the soak time"

    advance(factory_dir, "25h")  # the canaries check in and update
    code, out, _ = reconcile("--dry-run", "--detailed-exitcode", "--format", "json", str(release_repo), *local)
    plan = json.loads(out)
    assert code == 2 and plan["changes"] is True
    beta = plan["operations"][0]
    assert (beta["phase"], beta["status"], beta["devices"]) == ("beta", "ready", 50)

    code, out, err = reconcile(str(release_repo), *local)
    assert code == 0 and "phase 'beta' (group beta): rolled out to 50 devices" in err
    assert "blocked: wait 12h: 12h left" in out

    advance(factory_dir, "13h")
    code, out, err = reconcile(str(release_repo), *local)
    assert code == 0 and "* complete rel-46: completed" in err
    assert wave(factory_dir, "rel-46")["status"] == "complete"

    code, out, err = reconcile(str(release_repo), *local)
    assert code == 0 and out.rstrip().endswith("No changes. The factory matches the manifests.")

    commit(release_repo, {"rel-48.yaml": WAVE_48}, "Release 48, pruning 46")
    code, out, err = reconcile(str(release_repo), *local)
    assert code == 0, err
    assert "+ init rel-48 (target 48, tag production, prune 46): created" in err and "* complete rel-48" in err
    with api(factory_dir) as client:
        prod = client.get("/ota/factories/demo/prod-targets/", params={"tag": "production"}).json()["production"]
    versions = sorted({t["custom"]["version"] for t in prod["signed"]["targets"].values()})
    assert versions == ["40", "48"]

    advance(factory_dir, "2h")
    with api(factory_dir) as client:
        device = client.get("/ota/devices/", params={"factory": "demo", "group": "canary"}).json()["devices"][0]
        headers = {"x-ats-device-uuid": device["uuid"]}
        targets = client.get("/ota/gateway/demo/repo/targets.json", headers=headers).json()
        root = client.get("/ota/gateway/demo/repo/root.json", headers=headers).json()
    assert device["version"] == 48 and device["target-name"].endswith("-lmp-48")
    signers = signing.verify_threshold(root, "targets", targets["signed"], targets["signatures"])
    assert len(signers) == 2, "online and offline signatures"
    assert targets["signed"]["version"] == 48


def test_a_rollout_outside_the_manifests_is_drift_and_blocks_only_that_wave(release_repo, factory_dir):
    local = ["--local", str(factory_dir)]
    lab = (
        WAVE_48.replace("name: rel-48", "name: lab-48")
        .replace("tag: production", "tag: lab")
        .replace("prune: [46]\n", "")
    )
    add_device(factory_dir, "lab-1", tag="lab")  # a production device follows tag lab
    commit(release_repo, {"rel-46.yaml": WAVE_46}, "Release 46")
    assert reconcile(str(release_repo), *local)[0] == 0
    with api(factory_dir) as client:
        answer = client.post(
            "/ota/factories/demo/waves/rel-46/rollout/", json={"group": "us-east", "limit": 5, "dry-run": False}
        )
        assert answer.status_code == 200
    commit(release_repo, {"lab-48.yaml": lab}, "A lab wave on another tag")
    advance(factory_dir, "25h")

    code, out, _err = reconcile("--dry-run", "--format", "json", str(release_repo), *local)
    plan = json.loads(out)
    drifted = next(w for w in plan["waves"] if w["name"] == "rel-46")
    assert drifted["drift"] == [
        "rollout 2 in the factory was part of group us-east, but phase 'beta' is the whole group beta"
    ]
    by_wave = {(op["wave"], op["op"]): op for op in plan["operations"]}
    assert by_wave[("rel-46", "complete")]["status"] == "blocked"
    assert by_wave[("rel-46", "complete")]["reason"].startswith("drift: rollout 2 in the factory")
    assert by_wave[("lab-48", "init")]["status"] == "ready" and by_wave[("lab-48", "complete")]["status"] == "ready"
    assert [e["line"] for e in plan["errors"]] == [10], "drift is an error at the differing phase's line"
    assert code == 1, "drift fails the run (issue 10 case 5)"


def test_observation_stays_within_the_request_budget(release_repo, factory_dir):
    """A bounded number of requests, none per device: see observe.py for what each one is for."""
    add_device(factory_dir, "lab-1", tag="lab")
    commit(release_repo, {"rel-46.yaml": WAVE_46}, "Release 46")
    assert reconcile(str(release_repo), "--local", str(factory_dir))[0] == 0
    advance(factory_dir, "25h")
    commit(
        release_repo,
        {
            "lab-48.yaml": WAVE_48.replace("name: rel-48", "name: lab-48")
            .replace("tag: production", "tag: lab")
            .replace("prune: [46]\n", "")
        },
        "lab",
    )
    specs = load([str(release_repo)]).specs
    with FactoryClient(select_backend(api_url=None, factory=None, local=str(factory_dir))) as client:
        observed = observe(client, specs)
        plan = fill_device_counts(client, build_plan(specs, observed), observed)
        # waves, prod-targets, wave-targets (expiry and signatures), device groups (pending phases name some), the
        # production root (its targets threshold); the wave to init: its CI targets and the factory status (tags
        # with devices); the active wave's gate: its status (its tag's devices, 1,000 a page, only when the gate is
        # short of its share: it passes here); one dry-run rollout of the active wave's next phase, in the same
        # round, for its device count
        assert client.requests == 5 + 2 + 1 + 1
        assert fill_device_counts(client, plan, observed) == plan and client.requests == 9, "counted once, in observe"
    assert [op.devices for op in plan.operations if op.op == "rollout"] == [50]


def test_base_plans_only_changed_waves_shows_their_diff_and_carries_provenance(release_repo, factory_dir):
    add_device(factory_dir, "lab-1", tag="lab")
    commit(release_repo, {"rel-46.yaml": WAVE_46}, "Release 46")
    lab = (
        WAVE_48.replace("name: rel-48", "name: lab-48")
        .replace("tag: production", "tag: lab")
        .replace("prune: [46]\n", "")
    )
    commit(release_repo, {"lab-48.yaml": lab}, "A lab wave")
    code, out, err = reconcile(
        "--dry-run", "--format", "json", "--base", "HEAD~1", str(release_repo), "--local", str(factory_dir)
    )
    plan = json.loads(out)
    assert code == 0, err
    assert {op["wave"] for op in plan["operations"]} == {"lab-48"}
    ((path, diff),) = plan["diffs"].items()
    assert path.endswith("lab-48.yaml") and "+name: lab-48" in diff
    assert plan["provenance"]["commit"] == git(release_repo, "rev-parse", "HEAD").strip()
    assert plan["provenance"]["dirty"] is False
    code, out, _ = reconcile("--dry-run", "--base", "HEAD~1", str(release_repo), "--local", str(factory_dir))
    assert "Changed manifest" in out and "  +tag: lab" in out

    assert reconcile(str(release_repo), "--local", str(factory_dir))[0] == 0
    code, out, _ = reconcile("--dry-run", "--base", "HEAD", str(release_repo), "--local", str(factory_dir))
    assert "unmanaged" not in out, "waves outside the change are still managed"


def _uuid_phase_wave(uuids: list[str]) -> str:
    listed = "".join(f"      - {u}\n" for u in uuids)
    return WAVE_48.replace("prune: [46]\n", "").replace(
        "complete: true\n", "phases:\n  - name: pilots\n    uuids:\n" + listed
    )


def _observe_requests(release_repo, factory_dir) -> tuple[int, list]:
    specs = load([str(release_repo)]).specs
    with FactoryClient(select_backend(api_url=None, factory=None, local=str(factory_dir))) as client:
        plan = build_plan(specs, observe(client, specs))
        return client.requests, list(plan.errors)


def test_a_few_named_uuids_are_looked_up_one_by_one_and_many_by_listing_the_tag(release_repo, factory_dir):
    """A tag of 100,000 devices is 100 list pages for six canaries: a few UUIDs are looked up instead
    (one request each, all in one round trip), with the same verdict on each; many list the tag."""
    with api(factory_dir) as client:
        fleet = [
            d["uuid"]
            for d in client.get(
                "/ota/devices/", params={"factory": "demo", "match_tag": "production", "prod": 1, "limit": 1000}
            ).json()["devices"]
        ]
    unknown = "00000000-0000-4000-8000-000000000000"
    commit(release_repo, {"rel-48.yaml": _uuid_phase_wave([*fleet[:2], unknown])}, "three pilots")
    # waves, prod-targets, production root, CI targets, factory status, then one lookup per named UUID
    requests, errors = _observe_requests(release_repo, factory_dir)
    assert requests == 5 + 3
    assert [e.message for e in errors] == [
        f"phase 'pilots': UUID {unknown} is not a production device on tag "
        f"'production'; remove it from the list or fix it"
    ]
    assert errors[0].line == 11, "the unknown UUID's own line"

    commit(release_repo, {"rel-48.yaml": _uuid_phase_wave([*fleet[:11], unknown])}, "twelve pilots")
    requests, errors = _observe_requests(release_repo, factory_dir)
    assert len(fleet) < 1000
    assert requests == 5 + 1, "more than MAX_LOOKUPS_PER_TAG named UUIDs: the tag's list instead"
    assert [e.line for e in errors] == [20]


def test_uuids_past_the_lookup_cap_are_all_checked_by_listing_the_tag(release_repo, factory_dir):
    """Four tags of nine named UUIDs each: 36 lookups would pass MAX_LOOKUPS (32), so three tags are looked
    up one UUID at a time and the fourth is listed whole; every UUID of every list is still checked."""
    with api(factory_dir) as client:
        fleet = [
            d["uuid"]
            for d in client.get(
                "/ota/devices/", params={"factory": "demo", "match_tag": "production", "prod": 1, "limit": 1000}
            ).json()["devices"]
        ]
    manifests, unknown = {}, {}
    for number, tag in enumerate(["lab-a", "lab-b", "lab-c", "production"]):
        first = fleet[0] if tag == "production" else add_device(factory_dir, f"{tag}-1", tag=tag)
        strangers = [f"00000000-0000-4000-8000-{number:06d}{i:06d}" for i in range(8 if tag != "production" else 1)]
        listed = [first, *fleet[1:8]] if tag == "production" else [first]
        unknown[tag] = strangers
        manifests[f"{tag}.yaml"] = (
            WAVE_48.replace("name: rel-48", f"name: {tag}-48")
            .replace("tag: production", f"tag: {tag}")
            .replace("prune: [46]\n", "")
            .replace(
                "complete: true\n",
                "phases:\n  - name: pilots\n    uuids:\n" + "".join(f"      - {u}\n" for u in [*listed, *strangers]),
            )
        )
    commit(release_repo, manifests, "four tags of pilots")
    requests, errors = _observe_requests(release_repo, factory_dir)
    # waves, prod-targets, production root, CI targets, factory status; 27 lookups; one list page of production
    assert requests == 5 + 27 + 1
    found = {(e.file.rsplit("/", 1)[-1], e.message.split("UUID ")[1].split(" ")[0], e.line) for e in errors}
    first_line = 9  # of the UUID list; the strangers come after the devices of the tag
    assert found == {
        (f"{tag}.yaml", uuid, first_line + (8 if tag == "production" else 1) + position)
        for tag, strangers in unknown.items()
        for position, uuid in enumerate(strangers)
    }
    assert len(errors) == 3 * 8 + 1


def test_a_plan_against_an_api_reads_git_while_the_factory_answers_and_still_carries_provenance(
    release_repo, factory_dir, monkeypatch
):
    """Over HTTP a dry run reads git in the background (_plan_and_apply): the plan's provenance is the same."""
    from click.testing import CliRunner

    from reconciler.localfactory.cli import main as factory_main
    from tests.helpers.serving import serve_factory

    commit(release_repo, {"rel-46.yaml": WAVE_46}, "Release 46")
    token = CliRunner().invoke(factory_main, ["--local", str(factory_dir), "token"]).output.strip().split()[-1]
    monkeypatch.setenv("RECONCILE_API_TOKEN", token)
    with serve_factory(factory_dir) as url:
        code, out, err = reconcile(
            "--dry-run", "--format", "json", str(release_repo), "--api-url", url, "--factory", "demo"
        )
    assert code == 0, err
    plan = json.loads(out)
    assert plan["provenance"]["commit"] == git(release_repo, "rev-parse", "HEAD").strip()
    assert plan["provenance"]["dirty"] is False
