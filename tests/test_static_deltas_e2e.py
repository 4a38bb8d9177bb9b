"""Static deltas end to end: a build without them makes the plan warn at the manifest's ``target`` line
(text, JSON, Markdown), a build with them does not, and the check costs no request of its own."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from jsonschema import Draft202012Validator

from reconciler.core import build_plan
from reconciler.factory.client import FactoryClient, select_backend
from reconciler.factory.observe import observe
from reconciler.localfactory.cli import main as factory_main
from reconciler.manifest import load
from tests.helpers.e2e import CANARY_WAVE, commit, reconcile

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "plan.schema.json").read_text())
WAVE_61 = CANARY_WAVE.replace("rel-46", "rel-61").replace("target: 46", "target: 61")  # `target:` value at 4:9
FIX = (
    "`fioctl targets static-deltas --by-tag production 61` (local factory: `reconcile-factory build 61 "
    "--static-deltas`)"
)


def build(factory_dir: Path, *args: str) -> str:
    result = CliRunner().invoke(factory_main, ["--local", str(factory_dir), "build", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_build_without_static_deltas_warns_at_the_target_line_until_they_are_generated(release_repo, factory_dir):
    local = ["--local", str(factory_dir)]
    build(factory_dir, "61", "--no-static-deltas")
    commit(release_repo, {"rel-61.yaml": WAVE_61}, "Release 61")
    manifest = str(release_repo / "rel-61.yaml")

    code, out, _ = reconcile("--dry-run", "--detailed-exitcode", str(release_repo), *local)
    assert code == 2, "a warning changes no exit code: the init and the rollout are ready"
    assert (
        f"  {manifest}:4:9: warning: wave 'rel-61': targets intel-corei7-64-lmp-61, raspberrypi4-64-lmp-61 of "
        f"build 61 have no static delta (custom.delta-stats), so devices download the full OSTree update; "
        f"before the wave is created, run {FIX}"
    ) in out.splitlines()

    code, out, _ = reconcile("--dry-run", "--format", "json", str(release_repo), *local)
    plan = json.loads(out)
    Draft202012Validator(SCHEMA).validate(plan)
    (warning,) = plan["warnings"]
    assert (warning["file"], warning["line"], warning["col"]) == (manifest, 4, 9)
    assert warning["message"].endswith(FIX) and code == 0 and plan["errors"] == []

    code, out, _ = reconcile("--dry-run", "--format", "markdown", str(release_repo), *local)
    warnings = out.split("#### Warnings", 1)[1]
    assert f"{manifest}:4:9: warning: wave 'rel-61': targets" in warnings and FIX in warnings

    assert "Generated static deltas for" in build(factory_dir, "61", "--static-deltas")
    code, out, _ = reconcile("--dry-run", "--format", "json", str(release_repo), *local)
    assert code == 0 and json.loads(out)["warnings"] == []
    code, out, _ = reconcile("--dry-run", str(release_repo), *local)
    assert "Warnings:" not in out and "static delta" not in out


def test_a_build_with_static_deltas_by_default_plans_without_a_warning(release_repo, factory_dir):
    assert "(with static deltas)" in build(factory_dir, "61")
    commit(release_repo, {"rel-61.yaml": WAVE_61}, "Release 61")
    code, out, _ = reconcile("--dry-run", "--format", "json", str(release_repo), "--local", str(factory_dir))
    assert code == 0 and json.loads(out)["warnings"] == []


def test_the_apply_that_creates_the_wave_warns_and_later_runs_do_not(release_repo, factory_dir):
    """Init only: once created, the wave's signed targets cannot gain a delta, so nothing more to say."""
    local = ["--local", str(factory_dir)]
    build(factory_dir, "61", "--no-static-deltas")
    commit(release_repo, {"rel-61.yaml": WAVE_61 + "  - name: beta\n    group: beta\n    wait: 24h\n"}, "Release 61")
    code, out, err = reconcile(str(release_repo), *local)
    assert code == 0, err
    assert "+ init rel-61" in err and "4:9: warning: wave 'rel-61'" in out
    code, out, _ = reconcile("--dry-run", str(release_repo), *local)
    assert code == 0 and "blocked: wait 24h" in out and "static delta" not in out


def test_the_delta_check_reads_nothing_more_than_the_plan_already_did(release_repo, factory_dir):
    """The init's CI targets are read anyway (build exists, sourceTag): whether they have deltas comes free."""
    build(factory_dir, "61", "--no-static-deltas")
    build(factory_dir, "62")
    counts = {}
    for version in (61, 62):
        commit(release_repo, {"rel.yaml": WAVE_61.replace("61", str(version))}, f"Release {version}")
        specs = load([str(release_repo)]).specs
        with FactoryClient(select_backend(api_url=None, factory=None, local=str(factory_dir))) as client:
            plan = build_plan(specs, observe(client, specs))
            counts[version] = (client.requests, len(plan.warnings))
    # waves, prod-targets, the production root, the build's CI targets, device groups (canary), factory status
    assert counts == {61: (6, 1), 62: (6, 0)}
