"""Issue 10: the plan refuses, before any write, what the factory would reject or the fleet would not survive.

Each test drives the real ``reconcile`` CLI against a local demo factory and a git release repository,
and checks both the refusal (at the manifest line, with the fix) and that nothing was written.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from tests.helpers.e2e import CANARY_WAVE, add_device, advance, api, commit, reconcile

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def waves(factory_dir: Path) -> dict[str, dict]:
    with api(factory_dir) as client:
        listed = client.get("/ota/factories/demo/waves/", params={"limit": 50, "page": 1}).json()["waves"]
    return {w["name"]: w for w in listed if w["name"] != "populate-targets"}


def history(factory_dir: Path, name: str) -> list[dict]:
    return waves(factory_dir)[name]["rollout-history"]


def device_uuids(factory_dir: Path, group: str, count: int) -> list[str]:
    with api(factory_dir) as client:
        listed = client.get("/ota/devices/", params={"factory": "demo", "group": group, "prod": 1, "limit": 50})
    return [d["uuid"] for d in listed.json()["devices"][:count]]


def run(repo: Path, factory_dir: Path, *args: str) -> tuple[int, str, str]:
    return reconcile(*args, str(repo), "--local", str(factory_dir))


# -- 1. expiry -------------------------------------------------------------------------------------


def test_an_expiry_shorter_than_the_waits_is_refused_before_init(release_repo, factory_dir):
    manifest = CANARY_WAVE.replace("tag: production\n", "tag: production\nexpires: 2d\n") + (
        "  - name: beta\n    group: beta\n    wait: 3d\ncomplete: true\n"
    )
    commit(release_repo, {"rel-46.yaml": manifest}, "Release 46 with a short expiry")
    code, _, err = run(release_repo, factory_dir)
    assert code == 1 and "Applying" not in err
    assert "rel-46.yaml:6:10: wave 'rel-46' would expire (48h from now) before its waits are over (3d in all)" in err
    assert "set expires well beyond the waits" in err
    assert waves(factory_dir) == {}


def test_an_expired_wave_is_neither_rolled_out_nor_completed(release_repo, factory_dir):
    manifest = CANARY_WAVE.replace("tag: production\n", "tag: production\nexpires: 4d\n") + (
        "  - name: beta\n    group: beta\n    wait: 1d\ncomplete: true\n"
    )
    commit(release_repo, {"rel-46.yaml": manifest}, "Release 46, expiring in 4 days")
    assert run(release_repo, factory_dir)[0] == 0  # init and canary
    advance(factory_dir, "5d")
    code, out, err = run(release_repo, factory_dir)
    assert code == 1
    assert (
        "rel-46.yaml:6:10: wave 'rel-46' expired at 2026-11-05T08:00:00Z: its targets can no longer be "
        "rolled out or completed; cancel it (cancel: true) and promote the build again in a new wave"
    ) in out
    assert "Applying" not in err
    wave = waves(factory_dir)["rel-46"]
    assert wave["status"] == "active" and len(wave["rollout-history"]) == 1


# -- 2. a tag no production device follows ---------------------------------------------------------


def test_a_tag_no_device_follows_is_refused_with_the_tags_that_exist(release_repo, factory_dir):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE.replace("tag: production", "tag: prodution")}, "typo")
    code, out, err = run(release_repo, factory_dir)
    assert code == 1 and "Applying" not in err
    assert (
        "rel-46.yaml:5:6: no production device follows tag 'prodution'; production tags in factory 'demo': "
        "'production' (400 devices); did you mean 'production'?"
    ) in out
    assert waves(factory_dir) == {}


# -- 3. a sourceTag no CI target carries -----------------------------------------------------------


def test_a_source_tag_no_ci_target_carries_is_refused(release_repo, factory_dir):
    manifest = CANARY_WAVE.replace("tag: production\n", "tag: production\nsourceTag: mian\n")
    commit(release_repo, {"rel-46.yaml": manifest}, "typo in sourceTag")
    code, out, _ = run(release_repo, factory_dir, "--dry-run", "--detailed-exitcode")
    assert code == 1
    assert (
        "rel-46.yaml:6:12: sourceTag 'mian': no CI target of version 46 carries it (its tags: 'main'); "
        "did you mean 'main'?"
    ) in out
    assert run(release_repo, factory_dir)[0] == 1
    assert waves(factory_dir) == {}


# -- 4. UUIDs and groups ---------------------------------------------------------------------------


def test_uuids_that_are_not_production_devices_of_the_tag_and_group_are_refused_at_their_line(
    release_repo, factory_dir
):
    canary = device_uuids(factory_dir, "canary", 2)
    beta = device_uuids(factory_dir, "beta", 1)[0]
    stranger = "00000000-0000-4000-8000-000000000000"
    (release_repo / "uuids").mkdir()
    manifest = CANARY_WAVE.replace("    group: canary\n", "    group: canary\n    uuids: uuids/canary.lst\n")
    commit(
        release_repo,
        {"rel-46.yaml": manifest, "uuids/canary.lst": f"{canary[0]}\n{stranger}\n{canary[1]}, {beta}\n"},
        "canaries",
    )
    code, out, err = run(release_repo, factory_dir)
    assert code == 1 and "Applying" not in err
    assert (
        f"uuids/canary.lst:2:1: phase 'canary': UUID {stranger} is not a production device on tag "
        f"'production'; remove it from the list or fix it"
    ) in out
    assert f"uuids/canary.lst:3:39: phase 'canary': device {beta} (" in out
    assert "is in 'beta', not in the phase's group 'canary'" in out
    assert waves(factory_dir) == {}


def test_an_unknown_group_of_an_active_wave_gets_did_you_mean(release_repo, factory_dir):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    assert run(release_repo, factory_dir)[0] == 0
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE + "  - name: beta\n    group: btea\n"}, "a typo")
    code, out, _ = run(release_repo, factory_dir)
    assert code == 1
    assert (
        "rel-46.yaml:10:12: phase 'beta': device group 'btea' does not exist in factory 'demo'; did you mean 'beta'?"
    ) in out
    assert len(history(factory_dir, "rel-46")) == 1


# -- 5. drift and changed phases -------------------------------------------------------------------


def test_drift_fails_every_mode_and_says_which_edit_adopts_the_history(release_repo, factory_dir):
    manifest = CANARY_WAVE + "  - name: apac\n    group: apac\n    limit: 10\n"
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    assert run(release_repo, factory_dir)[0] == 0
    with api(factory_dir) as client:  # the whole apac group, by hand
        answer = client.post("/ota/factories/demo/waves/rel-46/rollout/", json={"group": "apac", "dry-run": False})
        assert answer.status_code == 200
    commit(release_repo, {"rel-46.yaml": manifest}, "apac, 10 devices")
    code, out, _ = run(release_repo, factory_dir, "--dry-run", "--detailed-exitcode")
    assert code == 1, "drift keeps the hourly job red"
    assert (
        "rel-46.yaml:11:12: phase 'apac' differs from rollout 2 in the factory, which was the whole group apac "
        "(the manifest says part of group apac); a phase that rolled out cannot change: to adopt the factory's "
        "history set phase 'apac' to `group: apac` with no limit and no uuids"
    ) in out
    assert run(release_repo, factory_dir)[0] == 1
    assert len(history(factory_dir, "rel-46")) == 2


def test_a_change_to_a_phase_that_rolled_out_is_an_error_at_the_changed_line(release_repo, factory_dir):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE + "  - name: beta\n    group: beta\n    wait: 1d\n"}, "46")
    assert run(release_repo, factory_dir)[0] == 0
    changed = CANARY_WAVE.replace("    group: canary", "    group: us-east") + "  - name: beta\n    group: beta\n"
    commit(release_repo, {"rel-46.yaml": changed}, "canary moved to us-east, after the fact")
    advance(factory_dir, "2d")
    code, out, _ = run(release_repo, factory_dir)
    assert code == 1
    assert (
        "rel-46.yaml:8:12: phase 'canary' differs from rollout 1 in the factory, which was the whole group canary"
        in out
    )
    assert "set phase 'canary' to `group: canary` with no limit and no uuids, and add a new phase" in out
    assert len(history(factory_dir, "rel-46")) == 1, "beta was not rolled out behind the error"


def test_a_lowered_limit_of_a_phase_that_rolled_out_is_an_error_at_its_limit_line(release_repo, factory_dir):
    """The history keeps how many devices a rollout reached: more than the phase's limit says the limit changed."""
    east = CANARY_WAVE + "  - name: east\n    group: us-east\n    limit: 10\n"
    commit(release_repo, {"rel-46.yaml": east}, "46 to ten us-east devices")
    assert run(release_repo, factory_dir)[0] == 0
    assert [h["num-devices"] for h in history(factory_dir, "rel-46")][1] == 10
    commit(
        release_repo,
        {"rel-46.yaml": east.replace("limit: 10", "limit: 5") + "  - name: beta\n    group: beta\n"},
        "east was meant to be five, and beta next",
    )
    code, out, _ = run(release_repo, factory_dir, "--dry-run", "--detailed-exitcode")
    assert code == 1
    assert (
        "rel-46.yaml:11:12: phase 'east' has limit 5, but rollout 2 in the factory reached 10 devices: it was "
        "rolled out with a larger limit (or by hand); a phase that rolled out cannot change: to adopt the "
        "factory's history set the limit back to the one it was rolled out with (at least 10)"
    ) in out
    assert run(release_repo, factory_dir)[0] == 1
    assert len(history(factory_dir, "rel-46")) == 2, "beta was not rolled out behind the error"


# -- 6. CI without an API URL ----------------------------------------------------------------------


def test_ci_without_an_api_url_refuses_the_embedded_factory(release_repo, monkeypatch, tmp_path):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    code, out, err = reconcile(str(release_repo))
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [
        "error: GITHUB_ACTIONS set but no API URL: refusing to plan against a throwaway local factory; set "
        "RECONCILE_API_URL and RECONCILE_FACTORY (and RECONCILE_API_TOKEN), or name a local factory with --local PATH "
        "or RECONCILE_LOCAL"
    ]
    assert not (tmp_path / "state").exists(), "no demo factory was created"
    monkeypatch.setenv("RECONCILE_LOCAL", str(tmp_path / "named"))
    code, _, err = reconcile("--dry-run", str(release_repo))
    assert code == 0, err


def test_ci_alone_refuses_the_embedded_factory_too(release_repo, monkeypatch, tmp_path):
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.delenv("RECONCILE_LOCAL", raising=False)
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    code, out, err = reconcile("--dry-run", str(release_repo))
    assert code == 1 and out == ""
    assert err.startswith("error: CI set but no API URL: refusing to plan against a throwaway local factory")
    assert not (tmp_path / "state").exists(), "no demo factory was created"


# -- 7. scoped errors ------------------------------------------------------------------------------


def test_an_error_holds_its_wave_while_other_tags_apply(release_repo, factory_dir):
    add_device(factory_dir, "lab-1", tag="lab")
    lab = (
        CANARY_WAVE.replace("name: rel-46", "name: lab-46")
        .replace("tag: production", "tag: lab")
        .replace("    group: canary\n", "    limit: 1\n")
    )
    broken = CANARY_WAVE.replace(
        "    group: canary\n", "    group: canary\n    uuids: [00000000-0000-4000-8000-000000000000]\n"
    )
    commit(release_repo, {"lab-46.yaml": lab, "rel-46.yaml": broken}, "two tags, one broken")
    code, out, err = run(release_repo, factory_dir, "--format", "json")
    assert code == 1
    plan = json.loads(out)
    jsonschema.validate(plan, json.loads((SCHEMAS / "plan.schema.json").read_text()))
    assert [(a["step"]["op"], a["step"]["wave"], a["outcome"]) for a in plan["applied"]] == [
        ("init", "lab-46", "done"),
        ("rollout", "lab-46", "done"),
    ]
    assert plan["held"] == [
        {"wave": "rel-46", "tag": "production", "reason": f"1 error, the first at {release_repo / 'rel-46.yaml'}:9:13"}
    ]
    assert (
        "Apply incomplete: 2 done, 0 already done, 0 failed, 1 held.\nheld: wave 'rel-46' (tag production) and the "
        "later steps of its tag: 1 error" in err
    ), "the summary counts the held wave it lists"
    assert set(waves(factory_dir)) == {"lab-46"}


def test_a_manifest_validation_error_stops_every_wave(release_repo, factory_dir):
    """Unlike a plan error, a manifest the schema refuses stops the whole run before the factory is read."""
    add_device(factory_dir, "lab-1", tag="lab")
    lab = (
        CANARY_WAVE.replace("name: rel-46", "name: lab-46")
        .replace("tag: production", "tag: lab")
        .replace("    group: canary\n", "    limit: 1\n")
    )
    invalid = CANARY_WAVE.replace("    group: canary\n", "    group: canary\n    wiat: 1h\n")
    commit(release_repo, {"lab-46.yaml": lab, "rel-46.yaml": invalid}, "two tags, one invalid")
    code, out, err = run(release_repo, factory_dir)
    assert code == 1 and out == "" and "Applying" not in err
    assert "rel-46.yaml:9:5: " in err
    assert waves(factory_dir) == {}


def test_apply_json_reports_a_failed_step_and_the_steps_it_held(release_repo, factory_dir):
    """A rollout the factory refuses mid-apply (its device moved after the plan): the JSON of the apply has it
    failed with the factory's message, the later step of its tag held, and another tag's step done."""
    from tests.helpers.serving import Front

    zlab = (
        CANARY_WAVE.replace("name: rel-46", "name: zlab-46")
        .replace("tag: production", "tag: zlab")
        .replace("    group: canary\n", "    limit: 1\n")
    )
    add_device(factory_dir, "zlab-1", tag="zlab")
    add_device(factory_dir, "zlab-2", tag="zlab")
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE, "zlab-46.yaml": zlab}, "Release 46 on two tags")
    assert run(release_repo, factory_dir)[0] == 0
    beta = device_uuids(factory_dir, "beta", 1)[0]
    commit(
        release_repo,
        {
            "rel-46.yaml": CANARY_WAVE + f"  - name: pilot\n    group: beta\n    uuids: [{beta}]\n"
            "  - name: beta\n    group: beta\n",
            "zlab-46.yaml": zlab + "  - name: next\n    limit: 1\n",
        },
        "a beta pilot, then beta",
    )
    front = Front(factory_dir)
    try:

        def move_the_pilot():  # after the plan, before its rollout reaches the factory
            with api(factory_dir) as client:
                name = client.get("/ota/devices/", params={"factory": "demo", "uuid": beta}).json()["devices"][0][
                    "name"
                ]
                assert (
                    client.patch(
                        f"/ota/devices/{name}/", params={"factory": "demo"}, json={"group": "apac"}
                    ).status_code
                    == 200
                )

        front.on_rollout = move_the_pilot
        code, out, err = reconcile("--format", "json", str(release_repo), "--api-url", front.url, "--factory", "demo")
    finally:
        front.close()
    assert code == 1, err
    plan = json.loads(out)
    jsonschema.validate(plan, json.loads((SCHEMAS / "plan.schema.json").read_text()))
    applied = [(a["step"]["wave"], a["step"].get("phase"), a["outcome"], a["message"]) for a in plan["applied"]]
    assert applied[0][:3] == ("rel-46", "pilot", "failed")
    assert f"not production devices with tag production in group beta: {beta}" in applied[0][3]
    assert applied[1:] == [
        ("rel-46", "beta", "held", "after rollout rel-46 phase 'pilot' (group beta, 1 uuid) failed"),
        ("zlab-46", "next", "done", "rolled out to 1 device"),
    ]
    assert "Apply incomplete: 1 done, 0 already done, 1 failed, 1 held." in err
    assert len(history(factory_dir, "rel-46")) == 1 and len(history(factory_dir, "zlab-46")) == 2


# -- 9. offline devices ----------------------------------------------------------------------------


def test_a_gate_reason_names_offline_devices_and_online_within_leaves_them_out(release_repo, factory_dir):
    gated = CANARY_WAVE + "  - name: beta\n    group: beta\n    require:\n      updated: 100%\n"
    commit(release_repo, {"rel-46.yaml": gated}, "Release 46")
    assert run(release_repo, factory_dir)[0] == 0
    advance(factory_dir, "6h")
    code, out, _ = run(release_repo, factory_dir)
    assert code == 0 and len(history(factory_dir, "rel-46")) == 1
    assert (
        "blocked: updated 100%: 90.0% (9 of 10 devices rolled out are updated, 1 waiting offline for more than "
        "4h: demo-000005 ("
    ) in out
    assert "to leave offline devices out, add onlineWithin to require" in out
    commit(
        release_repo,
        {"rel-46.yaml": gated.replace("updated: 100%", "updated: 100%\n      onlineWithin: 24h")},
        "count only devices seen within a day",
    )
    code, out, err = run(release_repo, factory_dir)
    assert code == 0, out + err
    assert len(history(factory_dir, "rel-46")) == 2


def test_online_within_must_be_a_duration(release_repo, factory_dir):
    gated = (
        CANARY_WAVE + "  - name: beta\n    group: beta\n    require:\n      updated: 90%\n      onlineWithin: 1 day\n"
    )
    commit(release_repo, {"rel-46.yaml": gated}, "Release 46")
    code, _, err = run(release_repo, factory_dir, "--check")
    assert code == 1
    assert "rel-46.yaml:13:21: " in err and "must be a duration such as 90s, 30m, 24h" in err


# -- 10. cancel ------------------------------------------------------------------------------------


def test_cancel_wins_over_complete_and_says_what_stays_behind(release_repo, factory_dir):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE + "complete:\n  wait: 48h\n"}, "Release 46")
    assert run(release_repo, factory_dir)[0] == 0
    advance(factory_dir, "6h")
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE + "complete:\n  wait: 48h\ncancel: true\n"}, "stop it now")
    code, out, err = run(release_repo, factory_dir, "--dry-run", "--detailed-exitcode")
    assert code == 2
    warning = "rel-46.yaml:9:1: warning: cancel: true wins: the complete block is ignored"
    assert warning in out
    assert (
        "- cancel   rel-46  9 devices stay on 46 (orphans: a version no longer offered), 391 keep production version 40"
    ) in out
    code, out, err = run(release_repo, factory_dir)
    assert code == 0
    assert (
        "  - cancel rel-46: canceled; 9 devices stay on 46 (orphans: a version no longer offered), 391 keep "
        "production version 40\n"
    ) in err, "what stays behind, once"
    assert waves(factory_dir)["rel-46"]["status"] == "canceled"
    code, out, err = run(release_repo, factory_dir)
    assert code == 0 and "No changes" in out
    assert "cancel: true wins" not in out + err, "once canceled, the complete block no longer matters"
