"""The manifest loader: every manifest rule (docs/architecture.md, "Manifests") at its exact file:line:col, the examples, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli.reconcile import main
from reconciler.core.spec import Limit
from reconciler.errors import ValidationFailed
from reconciler.manifest import load
from reconciler.manifest._uuids import MAX_UUIDS
from reconciler.manifest._yaml import MAX_DEPTH, MAX_VALUES

HERE = Path(__file__).resolve().parent
INVALID = HERE / "data" / "invalid"
WARNINGS = HERE / "data" / "warnings"
REPO = HERE.parents[1]
EXAMPLES = REPO / "examples" / "releases"

WAVE = "apiVersion: reconciler/v1\nkind: Wave\nname: {name}\ntarget: {target}\ntag: production\n"


def problems_of(paths: list[str]) -> list[str]:
    with pytest.raises(ValidationFailed) as failure:
        load(paths)
    return [str(problem) for problem in failure.value.problems]


def wave(name: str = "v46", target: int = 46, extra: str = "") -> str:
    return WAVE.format(name=name, target=target) + extra


# One rule per entry: the manifest (or directory) under tests/manifest/data/invalid and every line it must produce.
RULES = {
    "yaml-syntax": (
        "yaml-syntax.yaml",
        ["yaml-syntax.yaml:9:4: invalid YAML: did not find expected '-' indicator (while parsing a block collection)"],
    ),
    "duplicate-key": ("duplicate-key.yaml", ["duplicate-key.yaml:6:1: duplicate key 'target' (first at line 4)"]),
    "not-utf8": ("not-utf8.yaml", ["not-utf8.yaml:3:8: not UTF-8 text (byte 0xe9); save the file as UTF-8"]),
    "unknown-key": (
        "unknown-key.yaml",
        [
            "unknown-key.yaml:7:5: phase 'canary' needs at least one of group, limit, uuids"
            " (to update every device, use complete: true)",
            "unknown-key.yaml:8:5: unknown key 'grup' (did you mean 'group'?);"
            " allowed keys: group, limit, name, require, uuids, wait",
        ],
    ),
    "target-type": ("target-type.yaml", ["target-type.yaml:4:9: target must be an integer CI build number, got '42a'"]),
    "limit-range": (
        "limit-range.yaml",
        [
            'limit-range.yaml:8:12: limit must be a number of devices from 1 to 10000 or a percentage from "1%"'
            ' to "100%", got 20000',
            'limit-range.yaml:10:12: limit must be a number of devices from 1 to 10000 or a percentage from "1%"'
            " to \"100%\", got '150%'",
        ],
    ),
    "duration": (
        "duration.yaml",
        [
            "duration.yaml:8:11: wait must be a duration such as 90s, 30m, 24h, 1d12h or 2w (units w, d, h, m, s,"
            " largest first), got '12 hours'",
            "duration.yaml:10:11: wait must be at most 3650d (ten years), got '4000d'",
        ],
    ),
    "updated": (
        "updated.yaml",
        [
            "updated.yaml:8:24: updated must be a percentage such as 90% or 99.5% (more than 0%, at most 100%),"
            " got '0%'",
            "updated.yaml:11:14: updated must be a percentage such as 90% or 99.5% (more than 0%, at most 100%),"
            " got 90",
        ],
    ),
    "expires": (
        "expires.yaml",
        [
            "expires.yaml:6:10: expires must be longer than 0s",
            "expires.yaml:14:12: expiresAt must be a real date and time, got '2027-02-30T00:00:00Z'",
            "expires.yaml:22:10: expires cannot be combined with expiresAt; keep one of them",
        ],
    ),
    "kind": ("kind.yaml", ["kind.yaml:2:7: kind 'Rollout' is not supported; supported kinds: Wave"]),
    "api-version": (
        "api-version.yaml",
        ["api-version.yaml:1:13: apiVersion must be reconciler/v1, got 'reconciler/v2'"],
    ),
    "missing-keys": (
        "missing-keys.yaml",
        ["missing-keys.yaml:2:1: missing required key 'tag'", "missing-keys.yaml:2:1: missing required key 'target'"],
    ),
    "not-a-mapping": (
        "not-a-mapping.yaml",
        ["not-a-mapping.yaml:1:1: a manifest must be a mapping with kind: Wave, got a list"],
    ),
    "not-a-manifest": (
        "not-a-manifest.yaml",
        ["not-a-manifest.yaml:2:1: not a wave manifest: apiVersion: reconciler/v1 and kind: Wave are missing"],
    ),
    "phase-selector": (
        "phase-selector.yaml",
        [
            "phase-selector.yaml:8:5: phase 'soak' needs at least one of group, limit, uuids"
            " (to update every device, use complete: true)"
        ],
    ),
    "phase-names": (
        "phase-names.yaml",
        [
            "phase-names.yaml:10:11: phase name 'phase-2' is used twice in this wave (first at line 9)",
            "phase-names.yaml:12:11: phase name 'canary' is used twice in this wave (first at line 7)",
        ],
    ),
    "prune": (
        "prune.yaml",
        ["prune.yaml:6:13: prune lists the wave's own target 46", "prune.yaml:14:17: prune lists 44 more than once"],
    ),
    "yaml-tags": (
        "yaml-tags.yaml",
        [
            "yaml-tags.yaml:4:9: unsupported YAML tag !!float: write a plain value",
            "yaml-tags.yaml:5:6: unsupported YAML tag !secret: write a plain value",
        ],
    ),
    "uuids-inline": (
        "uuids-inline.yaml",
        [
            "uuids-inline.yaml:10:9: UUID '0845BE26-D08A-529D-AD97-6BCC37E36A55' must be written lower-case and"
            " hyphenated: 0845be26-d08a-529d-ad97-6bcc37e36a55",
            "uuids-inline.yaml:11:9: 'demo-000066' is not a device UUID (lower-case hex 8-4-4-4-12,"
            " e.g. 123e4567-e89b-12d3-a456-426614174000)",
        ],
    ),
    "uuids-paths": (
        "uuids-paths.yaml",
        [
            "uuids-paths.yaml:8:12: uuids file 'uuids/missing.lst' (uuids/missing.lst): no such file or directory",
            "uuids-paths.yaml:10:12: uuids file '/etc/hostname' must be a path relative to the manifest",
            "uuids-paths.yaml:12:12: uuids must be a list of device UUIDs or the path of a UUID list file, got 42",
        ],
    ),
    "uuids-file": (
        "uuids-file",
        [
            "uuids-file/uuids/eu.lst:2:3: UUID '{F8BE8D6B-90E0-5578-864D-A04D021CF201}' must be written lower-case"
            " and hyphenated: f8be8d6b-90e0-5578-864d-a04d021cf201",
            "uuids-file/uuids/eu.lst:2:44: UUID 'ca950c253f4553f3a094238559adc6d0' must be written lower-case and"
            " hyphenated: ca950c25-3f45-53f3-a094-238559adc6d0",
            "uuids-file/uuids/eu.lst:3:1: comments are not allowed in a UUID list:"
            " fioctl --uuids @file would read them as UUIDs",
        ],
    ),
    "wave-names": (
        "wave-names",
        ["wave-names/b.yaml:13:1: wave name 'v46' is already used at wave-names/a.yaml:3:1"],
    ),
    "open-waves": (
        "open-waves",
        [
            "open-waves/b.yaml:26:1: waves 'v46' (open-waves/a.yaml:3:1) and 'v50' would both stay active"
            " on tag 'production': give one of them complete or cancel: true"
        ],
    ),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_rule_reports_exact_position_and_message(rule, monkeypatch):
    path, expected = RULES[rule]
    monkeypatch.chdir(INVALID)
    assert problems_of([path]) == expected


def test_every_invalid_example_has_a_rule():
    assert sorted(Path(path).stem for path, _ in RULES.values()) == sorted(path.stem for path in INVALID.iterdir())


def test_all_errors_of_a_run_come_at_once_sorted_by_file_and_line(monkeypatch):
    monkeypatch.chdir(INVALID)
    everything = problems_of(["."])
    assert everything == [str(problem) for problem in sorted(_parsed(line) for line in everything)]
    across_files = {"wave-names", "open-waves"}  # with all files loaded, their first waves are in other files
    within_files = {line for rule, (_, expected) in RULES.items() if rule not in across_files for line in expected}
    assert within_files <= set(everything)
    # the rules across files see every valid wave: two of the directories define v46 for factory acme
    assert "wave-names/a.yaml:3:1: wave name 'v46' is already used at open-waves/a.yaml:3:1" in everything


def _parsed(line: str):
    from reconciler.errors import Problem

    file, row, col, message = line.split(":", 3)
    return Problem(file, int(row), int(col), message.strip())


def test_duplicate_uuids_are_warnings_naming_both_places(monkeypatch):
    monkeypatch.chdir(WARNINGS)
    result = load(["uuid-duplicates"])
    assert [str(warning) for warning in result.warnings] == [
        "uuid-duplicates/uuids/eu.lst:2:38: warning: duplicate UUID 69694f5d-e7ba-5ff7-ab3c-bd601dc2f2a3"
        " (first at line 1, column 1)",
        "uuid-duplicates/wave.yaml:12:9: warning: duplicate UUID 8a3f8a4e-0c1b-5c53-9d55-6c1f7f0b9f1a"
        " (first at line 11, column 9)",
    ]
    eu, us = result.specs[0].phases
    assert eu.uuids == ("69694f5d-e7ba-5ff7-ab3c-bd601dc2f2a3", "0845be26-d08a-529d-ad97-6bcc37e36a55")
    assert us.uuids == ("8a3f8a4e-0c1b-5c53-9d55-6c1f7f0b9f1a",)


# --- paths -------------------------------------------------------------------------------------------


def test_a_directory_without_manifests_is_nothing_to_reconcile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no manifests here\n")
    assert problems_of(["empty"]) == ["empty: no *.yaml or *.yml manifests found"]


def test_a_path_that_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert problems_of(["nope", "also/nope.yaml"]) == [
        "also/nope.yaml: no such file or directory",
        "nope: no such file or directory",
    ]


def test_no_paths_at_all():
    assert problems_of([]) == ["no manifest paths given"]


def test_a_fifo_named_like_a_manifest_is_refused_not_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "pipe.yaml")
    assert problems_of(["."]) == ["pipe.yaml:1:1: cannot read the file: not a regular file"]


def test_manifests_are_found_recursively_in_order_and_hidden_directories_skipped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for relative, name in [("b/w.yml", "b"), ("a.yaml", "a"), ("c/d/e.yaml", "e")]:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(wave(name, extra="complete: true\n"))
    for hidden in (".git/x.yaml", ".github/workflows/ci.yml", "c/.#e.yaml"):
        (tmp_path / hidden).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / hidden).write_text("not: a wave\n")
    (tmp_path / "README.md").write_text("# releases\n")
    result = load(["."])
    assert [spec.name for spec in result.specs] == ["a", "b", "e"]
    assert [spec.manifest for spec in result.specs] == ["a.yaml", "b/w.yml", "c/d/e.yaml"]
    assert result.files == 3


def test_overlapping_paths_read_each_file_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.yaml").write_text(wave())
    result = load([".", "w.yaml", str(tmp_path / "w.yaml")])
    assert result.files == 1
    assert [spec.manifest for spec in result.specs] == ["w.yaml"]


def test_empty_documents_are_skipped_and_an_empty_file_is_a_warning(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.yaml").write_text("---\n# nothing\n---\n" + wave() + "---\n")
    (tmp_path / "b.yaml").write_text("# only comments\n")
    result = load(["."])
    assert [spec.name for spec in result.specs] == ["v46"]
    assert result.files == 2
    assert [str(warning) for warning in result.warnings] == ["b.yaml:1:1: warning: no documents in this file"]


# --- YAML ----------------------------------------------------------------------------------------------


def test_scalars_are_read_the_yaml_1_2_way(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Wave\nname: 1.10\ntarget: 42\ntag: yes\nsourceTag: 2024-01-02\n"
        "phases:\n  - name: 2024\n    group: 10\n    limit: 0x0A\n"
    )
    (spec,) = load(["w.yaml"]).specs
    assert (spec.name, spec.target, spec.tag, spec.source_tag) == ("1.10", 42, "yes", "2024-01-02")
    assert (spec.phases[0].name, spec.phases[0].group, spec.phases[0].limit) == ("2024", "10", Limit(10))


def test_a_quoted_number_is_not_a_target(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.yaml").write_text(WAVE.format(name="v46", target='"42"'))
    assert problems_of(["w.yaml"]) == ["w.yaml:4:9: target must be an integer CI build number, got '42'"]


def test_a_recursive_alias_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.yaml").write_text(wave(extra="prune: &p [*p]\n"))
    assert problems_of(["w.yaml"]) == ["w.yaml:6:8: recursive YAML alias: an anchor cannot contain an alias of itself"]


def test_an_alias_bomb_stops_early(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    levels = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for level in range(1, 9):
        previous = chr(ord("a") + level - 1)
        levels.append(f"{chr(ord('a') + level)}: &{chr(ord('a') + level)} [{', '.join(['*' + previous] * 10)}]")
    (tmp_path / "bomb.yaml").write_text("\n".join(levels) + "\n")
    expected = f"bomb.yaml:1:1: more than {MAX_VALUES} values once YAML aliases are expanded"
    assert problems_of(["bomb.yaml"]) == [expected]


def test_deep_nesting_is_refused_before_it_reaches_the_c_stack(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "deep.yaml").write_text("[" * 100_000 + "]" * 100_000)
    assert problems_of(["deep.yaml"]) == [f"deep.yaml:1:{MAX_DEPTH + 1}: nested more than {MAX_DEPTH} levels deep"]
    # PyYAML >= 6.0.4 refuses 1,000 levels itself (flow and block); our limit and message come first.
    (tmp_path / "deep.yaml").write_text("{a: " * 5_000 + "}" * 5_000)
    assert problems_of(["deep.yaml"]) == [f"deep.yaml:1:{4 * MAX_DEPTH + 1}: nested more than {MAX_DEPTH} levels deep"]
    (tmp_path / "deep.yaml").write_text("- " * 5_000 + "x\n")
    assert problems_of(["deep.yaml"]) == [f"deep.yaml:1:{2 * MAX_DEPTH + 1}: nested more than {MAX_DEPTH} levels deep"]


def test_control_characters_are_refused_by_code_point(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.yaml").write_bytes(b"apiVersion: reconciler/v1\nkind: Wa\x00ve\n")
    assert problems_of(["w.yaml"]) == [
        "w.yaml:2:9: U+0000 NULL is not allowed in a manifest: no control, format or bidirectional characters;"
        " remove it (it may be invisible in an editor)"
    ]


def test_a_byte_order_mark_is_accepted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.yaml").write_bytes(b"\xef\xbb\xbf" + wave().encode())
    assert [spec.name for spec in load(["w.yaml"]).specs] == ["v46"]


# --- UUID files ----------------------------------------------------------------------------------------


def _uuid_wave(relative: str) -> str:
    return wave(extra=f"phases:\n  - group: eu-emea\n    uuids: {relative}\n")


def test_uuid_files_may_not_leave_a_plain_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "releases").mkdir()
    (tmp_path / "outside.lst").write_text(str(uuid.uuid4()) + "\n")
    (tmp_path / "releases" / "w.yaml").write_text(_uuid_wave("../outside.lst"))
    assert problems_of(["releases"]) == [
        f"releases/w.yaml:8:12: uuids file '../outside.lst': outside the release repository {tmp_path / 'releases'}"
    ]


def test_uuid_files_may_go_anywhere_inside_the_git_repository_but_not_out(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "waves").mkdir(parents=True)
    (repo / "uuids").mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    device = str(uuid.uuid4())
    (repo / "uuids" / "eu.lst").write_text(device + "\n")
    (tmp_path / "secret.lst").write_text(str(uuid.uuid4()) + "\n")
    os.symlink(tmp_path / "secret.lst", repo / "uuids" / "link.lst")
    (repo / "waves" / "ok.yaml").write_text(_uuid_wave("../uuids/eu.lst"))
    (repo / "waves" / "out.yaml").write_text(_uuid_wave("../../secret.lst").replace("v46", "v47"))
    (repo / "waves" / "link.yaml").write_text(_uuid_wave("../uuids/link.lst").replace("v46", "v48"))
    monkeypatch.chdir(repo / "waves")
    assert problems_of(["."]) == [
        f"link.yaml:8:12: uuids file '../uuids/link.lst': outside the release repository {repo}",
        f"out.yaml:8:12: uuids file '../../secret.lst': outside the release repository {repo}",
    ]
    (spec,) = load(["ok.yaml"]).specs
    assert spec.phases[0].uuids == (device,)
    assert spec.phases[0].uuids_file == "../uuids/eu.lst"


def test_a_phase_may_list_more_uuids_than_one_rollout_takes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "many.lst").write_text("\n".join(str(uuid.UUID(int=n)) for n in range(1, 25_002)) + "\n")
    (tmp_path / "w.yaml").write_text(_uuid_wave("many.lst"))
    (spec,) = load(["."]).specs
    (phase,) = spec.phases
    assert phase.uuids is not None and len(phase.uuids) == 25_001
    assert phase.uuids[-1] == str(uuid.UUID(int=25_001))
    assert str(phase.uuid_location(25_000)) == "many.lst:25001:1"


def test_a_count_limit_cannot_go_with_more_uuids_than_one_rollout_takes(tmp_path, monkeypatch):
    """A limit counts per rollout call: with a phase split in parts it would count per part."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "many.lst").write_text("\n".join(str(uuid.UUID(int=n)) for n in range(1, 10_002)) + "\n")
    (tmp_path / "w.yaml").write_text(_uuid_wave("many.lst") + "    limit: 50\n")
    assert problems_of(["."]) == [
        "w.yaml:9:12: limit 50 cannot go with 10001 UUIDs: a phase of more than 10000 UUIDs is rolled out in parts "
        "of 10000 and a limit counts per rollout, so each part would take 50; list the devices to reach, or use a "
        "percentage"
    ]
    (tmp_path / "w.yaml").write_text(_uuid_wave("many.lst") + "    limit: 10%\n")
    (spec,) = load(["."]).specs
    assert spec.phases[0].limit == Limit(10, percent=True)


def test_at_most_400000_uuids_per_phase(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert MAX_UUIDS == 400_000
    (tmp_path / "many.lst").write_text("\n".join(str(uuid.UUID(int=n)) for n in range(1, MAX_UUIDS + 2)) + "\n")
    (tmp_path / "w.yaml").write_text(_uuid_wave("many.lst"))
    assert problems_of(["."]) == [
        "many.lst:400001:1: too many UUIDs: 400001 in this file, a phase takes at most 400000"
        " (rolled out 10000 per rollout); split them over several phases"
    ]


def test_a_uuid_file_shared_by_phases_is_read_and_reported_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "eu.lst").write_text("not-a-uuid\n")
    (tmp_path / "w.yaml").write_text(
        wave(extra="phases:\n  - group: a\n    uuids: eu.lst\n  - group: b\n    uuids: ./eu.lst\n")
    )
    assert problems_of(["w.yaml"]) == [
        "eu.lst:1:1: 'not-a-uuid' is not a device UUID (lower-case hex 8-4-4-4-12,"
        " e.g. 123e4567-e89b-12d3-a456-426614174000)"
    ]


# --- what a spec holds ----------------------------------------------------------------------------------


def test_the_examples_describe_the_demo_factory(monkeypatch):
    monkeypatch.chdir(REPO)
    result = load(["examples/releases"])
    assert result.files == 3 and result.warnings == []
    v42, v44, v46 = result.specs
    assert (v42.name, v42.target, v42.tag, [p.group for p in v42.phases]) == ("v42", 42, "production", ["canary"])
    assert v42.complete is not None and v42.complete.gate.empty and not v42.open_ended
    assert (v44.target, v44.prune, v44.expires_in_seconds, v44.complete.gate.empty) == (44, (42,), 180 * 86400, True)
    assert v46.open_ended and v46.target == 46 and v46.expires_in_seconds == 365 * 86400
    assert [(p.name, p.group) for p in v46.phases] == [
        ("canary", "canary"),
        ("beta", "beta"),
        ("eu-canaries", "eu-emea"),
        ("us-east-10", "us-east"),
        ("us-east", "us-east"),
        ("us-west", "us-west"),
    ]
    canary, beta, eu, us10 = v46.phases[:4]
    assert canary.gate.empty and canary.full_group
    assert (beta.gate.wait_seconds, beta.gate.updated_percent) == (24 * 3600, 90.0)
    assert (us10.limit, us10.gate.wait_seconds) == (Limit(10), 36 * 3600)
    demo = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"reconciler-demo:42:{i}")) for i in (65, 66, 67, 75, 76, 77)]
    assert eu.uuids == tuple(demo) and eu.uuids_file == "uuids/eu-canaries.lst"
    assert str(v46.phases[2].location) == "examples/releases/v46.yaml:21:5"


def test_the_examples_point_editors_at_the_schema():
    for manifest in sorted(EXAMPLES.glob("*.yaml")):
        first = manifest.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema=")
        target = (manifest.parent / first.split("$schema=", 1)[1]).resolve()
        assert target == REPO / "schemas" / "wave.schema.json"


def test_expiry_and_complete_gates_are_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.yaml").write_text(
        wave(extra="expiresAt: 2027-11-22T01:30:00+01:00\ncomplete:\n  wait: 1w2d\n  require: {updated: 99.5%}\n")
    )
    (spec,) = load(["w.yaml"]).specs
    assert spec.expires_at.isoformat() == "2027-11-22T00:30:00+00:00"
    assert (spec.complete.gate.wait_seconds, spec.complete.gate.updated_percent) == (9 * 86400, 99.5)
    assert str(spec.complete.location) == "w.yaml:7:1"
    assert str(spec.location) == "w.yaml:3:1"


# --- the command line -----------------------------------------------------------------------------------


def test_reconcile_check_on_the_examples(monkeypatch):
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(main, ["--check", "examples/releases"])
    assert (result.exit_code, result.stdout) == (0, "3 manifests, 3 waves: ok\n")


def test_reconcile_check_prints_every_problem_and_fails(monkeypatch):
    monkeypatch.chdir(INVALID)
    result = CliRunner().invoke(main, ["--check", "target-type.yaml", "kind.yaml"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "kind.yaml:2:7: kind 'Rollout' is not supported; supported kinds: Wave",
        "target-type.yaml:4:9: target must be an integer CI build number, got '42a'",
    ]
    assert "Traceback" not in result.output


def test_reconcile_check_prints_warnings_and_succeeds(monkeypatch):
    monkeypatch.chdir(WARNINGS)
    result = CliRunner().invoke(main, ["--check", "uuid-duplicates"])
    assert result.exit_code == 0
    assert result.stdout == "1 manifest, 1 wave: ok\n"
    assert len(result.stderr.splitlines()) == 2 and "warning: duplicate UUID" in result.stderr


# --- the schema -------------------------------------------------------------------------------------------


def test_every_property_of_the_schema_has_a_description():
    schema = json.loads((REPO / "schemas" / "wave.schema.json").read_text())
    missing = []

    def walk(node, where):
        if isinstance(node, dict):
            for key, sub in node.get("properties", {}).items():
                if "description" not in sub and where[-1:] not in (("if",), ("then",)):
                    missing.append(".".join((*where, key)))
            for key, sub in node.items():
                walk(sub, (*where, key))
        elif isinstance(node, list):
            for index, sub in enumerate(node):
                walk(sub, (*where, str(index)))

    walk(schema, ())
    assert missing == []


def test_the_examples_are_valid_for_jsonschema_itself():
    import yaml
    from jsonschema import Draft202012Validator

    schema = json.loads((REPO / "schemas" / "wave.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    for manifest in sorted(EXAMPLES.glob("*.yaml")):
        for document in yaml.safe_load_all(manifest.read_text()):
            assert list(Draft202012Validator(schema).iter_errors(document)) == []


def test_build_numbers_are_bounded_like_fioctl_s_32_bit_versions(tmp_path):
    """fioctl parses versions as 32-bit ints; a larger number must stop at --check, not in the factory."""
    from reconciler.errors import ValidationFailed
    from reconciler.manifest import load

    (tmp_path / "w.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Wave\nname: big\n"
        "target: 9223372036854775808\ntag: production\nprune: [2147483648]\n"
    )
    with pytest.raises(ValidationFailed) as caught:
        load([str(tmp_path / "w.yaml")])
    assert [(p.line, p.col, p.message) for p in caught.value.problems] == [
        (4, 9, "target must be at most 2147483647, got 9223372036854775808"),
        (6, 9, "prune[0] must be at most 2147483647, got 2147483648"),
    ]
