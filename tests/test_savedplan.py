"""Saved plans (``--dry-run --out`` then ``--plan``) through the real CLI against the local factory."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

from reconciler.resources import load_schema
from tests.helpers.e2e import CANARY_WAVE, advance, api, commit, reconcile, wave

GATED = (
    CANARY_WAVE
    + """\
  - name: beta
    group: beta
    limit: 10
    wait: 24h
"""
)


def history(factory_dir, name: str) -> list:
    return wave(factory_dir, name).get("rollout-history") or []


def test_a_saved_plan_is_applied_exactly_and_holds_no_secrets(release_repo, factory_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RECONCILE_API_TOKEN", "secret-token-never-saved")
    local = ("--local", str(factory_dir))
    commit(release_repo, {"rel-46.yaml": GATED}, "Release 46")
    plan_file = tmp_path / "plan.json"
    code, _, err = reconcile("--dry-run", "--out", str(plan_file), str(release_repo), *local)
    assert code == 0, err
    assert f"Saved the plan to {plan_file}" in err
    saved = json.loads(plan_file.read_text())
    Draft202012Validator(load_schema("plan.schema.json")).validate(saved)
    assert saved["saved"]["fingerprint"].startswith("sha256:") and saved["saved"]["paths"] == [str(release_repo)]
    assert saved["provenance"]["commit"]
    text = plan_file.read_text()
    assert "secret-token-never-saved" not in text and "PRIVATE" not in text and "sec" not in saved["saved"]
    ready = [(op["op"], op.get("phase")) for op in saved["operations"] if op["status"] == "ready"]
    assert ready == [("init", None), ("rollout", "canary")]
    with api(factory_dir) as client:  # nothing written by the dry run
        assert client.get("/ota/factories/demo/waves/rel-46/").status_code == 404

    advance(factory_dir, "1h")  # time passes between review and apply; no gate opens
    code, _, err = reconcile("--plan", str(plan_file), *local)  # PATHS default to the saved ones
    assert code == 0, err
    assert "+ init rel-46" in err and "rollout rel-46 phase 'canary'" in err and "Apply complete: 2 done" in err
    assert [h["group-name"] for h in history(factory_dir, "rel-46")] == ["canary"]
    assert saved["operations"][0]["expires"] == "2027-11-01T08:00:00Z"
    with api(factory_dir) as client:
        signed = client.get("/ota/factories/demo/wave-targets/", params={"name": "rel-46"}).json()["rel-46"]["signed"]
    # recomputed at apply from the manifest's 365d and the factory's clock: nothing signed comes from the file
    assert signed["expires"] == "2027-11-01T09:00:00Z"

    code, _out, err = reconcile("--plan", str(plan_file), *local)  # applied once: now stale
    assert code == 1 and "error: stale plan: wave rel-46 changed since the plan: was absent, now active" in err
    assert [h["group-name"] for h in history(factory_dir, "rel-46")] == ["canary"]


def test_a_stale_plan_is_refused_with_one_line_per_difference(release_repo, factory_dir, tmp_path):
    local = ("--local", str(factory_dir))
    commit(release_repo, {"rel-46.yaml": GATED}, "Release 46")
    assert reconcile(str(release_repo), *local)[0] == 0  # init and canary
    plan_file = tmp_path / "plan.json"
    assert reconcile("--dry-run", "--out", str(plan_file), str(release_repo), *local)[0] == 0
    assert not [op for op in json.loads(plan_file.read_text())["operations"] if op["status"] == "ready"]

    advance(factory_dir, "25h")  # the beta gate opens: a fresh plan would roll out beta
    code, _, err = reconcile("--plan", str(plan_file), "--plan-max-age", "2d", *local)
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert lines == ["error: stale plan: a fresh plan would also run rollout rel-46 phase 'beta'"]
    assert len(history(factory_dir, "rel-46")) == 1  # refused: nothing written

    assert reconcile("--dry-run", "--out", str(plan_file), str(release_repo), *local)[0] == 0
    commit(release_repo, {"rel-46.yaml": GATED.replace("limit: 10", "limit: 20")}, "Beta: 20 devices")
    with api(factory_dir) as client:
        assert (
            client.post(
                "/ota/factories/demo/waves/rel-46/rollout/", json={"group": "us-east", "limit": 3, "dry-run": False}
            ).status_code
            == 200
        )
    code, _out, err = reconcile("--plan", str(plan_file), *local)
    assert code == 1 and len(history(factory_dir, "rel-46")) == 2
    assert "error: stale plan: wave rel-46 changed since the plan: was active version 46 tag production" in err
    assert "now active version 46 tag production" in err and "2 rollouts" in err


def test_a_changed_uuid_list_of_the_same_size_makes_the_plan_stale(release_repo, factory_dir, tmp_path):
    local = ("--local", str(factory_dir))
    code, first, _ = reconcile(
        "devices", *local, "--tag", "production", "--group", "us-east", "--sample", "5", "--seed", "1"
    )
    _, second, _ = reconcile(
        "devices", *local, "--tag", "production", "--group", "us-east", "--sample", "5", "--seed", "2"
    )
    assert code == 0 and first != second
    (release_repo / "uuids").mkdir()
    manifest = CANARY_WAVE + "  - name: pilots\n    uuids: uuids/pilots.lst\n"
    commit(release_repo, {"rel-46.yaml": manifest, "uuids/pilots.lst": first}, "Pilots")
    plan_file = tmp_path / "plan.json"
    assert reconcile("--dry-run", "--out", str(plan_file), str(release_repo), *local)[0] == 0
    commit(release_repo, {"uuids/pilots.lst": second}, "Other pilots")
    code, _out, err = reconcile("--plan", str(plan_file), str(release_repo), *local)
    assert code == 1
    assert "error: stale plan: rollout rel-46 phase 'pilots' differs: the UUID list changed" in err


@pytest.mark.parametrize(
    "args,message",
    [
        (("--out", "p.json"), "error: --out saves a plan without applying it: add --dry-run"),
        (
            ("--dry-run", "--out", "p.json", "--plan", "q.json"),
            "error: --out saves a new plan, --plan applies a saved one",
        ),
        (
            ("--dry-run", "--out", "p.json", "--base", "HEAD"),
            "error: --out works with whole plans; it cannot be combined with --base",
        ),
        (("--plan", "missing.json"), "error: cannot read the saved plan missing.json"),
    ],
)
def test_saved_plan_mistakes_are_one_line(release_repo, factory_dir, args, message, monkeypatch):
    monkeypatch.chdir(release_repo)
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    code, _out, err = reconcile(*args, "--local", str(factory_dir))
    assert code == 1 and err.strip().splitlines() == [err.strip()] and message in err


def test_a_plan_json_without_the_saved_section_is_not_a_saved_plan(release_repo, factory_dir, tmp_path):
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    code, out, _ = reconcile("--dry-run", "--format", "json", str(release_repo), "--local", str(factory_dir))
    plain = tmp_path / "plain.json"
    plain.write_text(out)
    code, out, err = reconcile("--plan", str(plain), str(release_repo), "--local", str(factory_dir))
    assert code == 1 and err.strip() == (
        f"error: {plain}: not a saved plan: make one with `reconcile --dry-run --out {plain}`"
    )
