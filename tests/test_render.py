"""Rendering: the JSON contract (schemas/plan.schema.json), Terraform-style text, PR Markdown."""

from __future__ import annotations

import json
from datetime import timedelta

from jsonschema import Draft202012Validator

from reconciler.core import build_plan
from reconciler.core.spec import CompleteSpec, Limit
from reconciler.core.state import WaveProgress
from reconciler.render import plan as render
from reconciler.resources import load_schema
from tests.helpers.planning import NOW, active, observed, phase, record, wave

HOUR = 3600


def sample_plan():
    running = wave(
        "v46",
        46,
        [
            phase("canary", group="canary"),
            phase("beta", group="beta", wait=24 * HOUR),
            phase("us-east-10", group="us-east", limit=Limit(10)),
        ],
        complete=CompleteSpec(),
    )
    state = observed(
        [active("v46", 46, [record("canary", NOW - timedelta(hours=3), full=True)]), active("by-hand", 30, tag="lab")]
    )
    plan = build_plan([running, wave("v47", 47, tag="production", cancel=True)], state)
    return plan


def test_json_plan_validates_against_the_shipped_schema():
    plan = sample_plan()
    data = json.loads(render.to_json(plan, {"commit": "abc", "author": "A <a@x>", "dirty": False}))
    Draft202012Validator(load_schema("plan.schema.json")).validate(data)
    assert data["changes"] is False
    assert data["operations"][0] == {
        "op": "rollout",
        "wave": "v46",
        "tag": "production",
        "status": "blocked",
        "manifest": "w.yaml",
        "line": 10,
        "reason": "wait 24h: 21h left",
        "phase": "beta",
        "phase_index": 1,
        "group": "beta",
    }
    assert data["waves"][0]["phases"][0] == {"name": "canary", "state": "done"}


def test_json_names_each_part_of_a_phase_of_more_than_10000_uuids_and_validates():
    uuids = tuple(f"00000000-0000-0000-0000-{n:012x}" for n in range(25_000))
    plan = build_plan([wave("v46", 46, [phase("canary", group="canary"), phase("big", uuids=uuids)])], observed())
    data = json.loads(render.to_json(plan))
    Draft202012Validator(load_schema("plan.schema.json")).validate(data)
    steps = [op for op in data["operations"] if op["op"] == "rollout"]
    assert [(op["phase"], op["phase_index"], op.get("part"), op.get("parts"), op.get("uuids")) for op in steps] == [
        ("canary", 0, None, None, None),
        ("big", 1, 1, 3, 10_000),
        ("big", 1, 2, 3, 10_000),
        ("big", 1, 3, 3, 5_000),
    ]
    assert "v46  phase 'big' part 2 of 3 (factory-wide, 10000 uuids)" in render.to_text(plan)


def test_json_of_a_plan_with_init_and_errors_validates():
    plan = build_plan(
        [wave("v46", 46, prune=[39]), wave("v48", 48, [phase("p", limit=Limit(5, True))], tag="x")], observed()
    )
    data = json.loads(render.to_json(plan))
    Draft202012Validator(load_schema("plan.schema.json")).validate(data)
    init = data["operations"][0]
    assert init["needs_key"] is True and init["prune"] == [39] and init["expires"] == "2027-11-23T12:00:00Z"
    assert data["errors"][0]["file"] == "v46.yaml" and data["errors"][0]["line"] == 3


def test_text_uses_terraform_symbols_reasons_and_a_summary():
    text = render.to_text(sample_plan())
    assert "  ~ rollout  v46  phase 'beta' (group beta)\n      blocked: wait 24h: 21h left" in text
    assert "  * complete v46" in text
    assert text.endswith("Plan: 0 to init, 0 to roll out, 0 to complete, 0 to cancel; 3 blocked.")
    assert "warning: unmanaged active wave 'by-hand'" in text


def test_text_says_no_changes_when_there_is_nothing_to_do():
    plan = build_plan([], observed())
    assert render.to_text(plan).endswith(render.NO_CHANGES)


def test_markdown_has_wave_table_operations_and_a_mermaid_diagram_per_wave():
    md = render.to_markdown(sample_plan(), diffs={"w.yaml": "--- a/w.yaml\n+++ b/w.yaml\n@@ -1 +1 @@\n-a\n+b\n"})
    assert md.startswith("### Wave plan for factory `demo`: no changes")
    assert "<details><summary>Changed manifests (1)</summary>" in md and "```diff\n--- a/w.yaml" in md
    assert "| `v46` | production | 46 | active | 1/3 |" in md
    assert "| `~` | rollout | `v46` | phase 'beta' (group beta) |  | blocked: wait 24h: 21h left |" in md
    assert 's0["init"]:::done' in md and 's1["canary"]:::done' in md and 's2["beta"]:::blocked' in md
    assert "  s0 --> s1 --> s2 --> s3 --> s4" in md


def test_text_shows_progress_of_each_active_wave():
    running = wave("v46", 46, [phase("canary", group="canary"), phase("beta", group="beta", updated=90)])
    state = observed(
        [active("v46", 46, [record("canary", NOW - timedelta(hours=3), full=True)])],
        progress={"v46": WaveProgress(updated=9, rolled_out=12, total=100)},
    )
    text = render.to_text(build_plan([running, wave("v47", 47)], state))
    lines = text.splitlines()
    start = lines.index("Active waves:")
    assert lines[start + 1].split() == ["WAVE", "TAG", "TARGET", "PHASES", "PROGRESS"]
    assert lines[start + 2].split() == ["v46", "production", "46", "1/2", "9/12", "updated", "(75%)"]
    assert lines[start + 3] == ""  # v47 is not active: no row
