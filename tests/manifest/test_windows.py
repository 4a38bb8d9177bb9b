"""``windows`` and ``freezes`` in wave manifests and in the repository-wide ``reconcile.yaml``.

How they combine: reconcile.yaml files from the manifest's directory up to the top of the release
repository apply; a wave's own windows replace theirs (the nearest file with windows wins otherwise);
freezes always add up. Every mistake is one ``file:line:col`` line.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.cli.reconcile import main
from reconciler.core.windows import describe_days
from reconciler.errors import ValidationFailed
from reconciler.manifest import GitSource, load
from tests.helpers.e2e import commit, git

REPO = Path(__file__).resolve().parents[2]
WAVE = "apiVersion: reconciler/v1\nkind: Wave\nname: {name}\ntarget: 46\ntag: {tag}\n"
POLICY = "apiVersion: reconciler/v1\nkind: ReleasePolicy\n"
OFFICE = 'windows:\n  - days: Mon-Thu\n    hours: "09:00-16:00"\n    timezone: Europe/Berlin\n'
NIGHTS = 'windows:\n  - hours: "22:00-06:00"\n'
YEAR_END = (
    "freezes:\n  - from: 2026-12-21\n    until: 2027-01-06\n    reason: year-end freeze\n    timezone: Europe/Berlin\n"
)
AUDIT = "freezes:\n  - from: 2026-12-01T00:00:00Z\n    until: 2026-12-02\n    reason: audit\n"


def wave(name: str = "v46", extra: str = "", tag: str = "production") -> str:
    return WAVE.format(name=name, tag=tag) + extra


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def specs(*paths: Path | str):
    return {spec.name: spec for spec in load([str(p) for p in paths]).specs}


def check(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["--check", *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.stderr.splitlines()


def test_a_wave_reads_its_windows_and_freezes(tmp_path):
    write(tmp_path, {"v46.yaml": wave(extra=OFFICE + YEAR_END)})
    schedule = specs(tmp_path)["v46"].schedule
    (window,) = schedule.windows
    assert window.describe() == "Mon-Thu 09:00-16:00 Europe/Berlin"
    assert window.where == f"{tmp_path}/v46.yaml:7:5"
    (freeze,) = schedule.freezes
    # Dates are whole days in the freeze's zone: until 2027-01-06 lasts through that day.
    assert freeze.start == datetime(2026, 12, 20, 23, tzinfo=timezone.utc)
    assert freeze.end == datetime(2027, 1, 6, 23, tzinfo=timezone.utc)
    assert freeze.reason == "year-end freeze"


def test_day_lists_ranges_across_the_weekend_and_full_names(tmp_path):
    write(
        tmp_path,
        {
            "v46.yaml": wave(
                extra='windows:\n  - days: [monday, "Wed-Thu"]\n  - days: "Fri-Mon, Wed"\n    hours: "22:00-24:00"\n'
            )
        },
    )
    first, second = specs(tmp_path)["v46"].schedule.windows
    assert first.describe() == "Mon,Wed,Thu all day UTC"
    assert second.describe() == "Wed,Fri-Mon 22:00-24:00 UTC"


def test_date_times_with_and_without_an_offset(tmp_path):
    freezes = (
        "freezes:\n  - from: 2027-03-28T02:30\n    until: 2027-03-28T12:00+02:00\n    reason: r\n"
        "    timezone: Europe/Berlin\n"
    )
    write(tmp_path, {"v46.yaml": wave(extra=freezes)})
    (freeze,) = specs(tmp_path)["v46"].schedule.freezes
    # 02:30 does not exist that day in Berlin: zoneinfo reads it with the offset before the change (CET).
    assert freeze.start == datetime(2027, 3, 28, 1, 30, tzinfo=timezone.utc)
    assert freeze.end == datetime(2027, 3, 28, 10, tzinfo=timezone.utc)


def test_the_repository_file_applies_to_every_wave_below_it_and_a_wave_windows_replace_its_windows(tmp_path):
    write(
        tmp_path,
        {
            "releases/reconcile.yaml": POLICY + OFFICE + YEAR_END,
            "releases/v46.yaml": wave("v46"),
            "releases/hotfix.yaml": wave("hotfix", tag="hotfix", extra="windows: []\n" + AUDIT),
            "releases/night/v47.yaml": wave("v47", tag="night", extra=NIGHTS),
        },
    )
    found = specs(tmp_path / "releases")
    assert [w.describe() for w in found["v46"].schedule.windows] == ["Mon-Thu 09:00-16:00 Europe/Berlin"]
    assert found["hotfix"].schedule.windows == ()  # windows: [] allows any time
    assert [w.describe() for w in found["v47"].schedule.windows] == ["every day 22:00-06:00 UTC"]
    # Freezes add up: the repository's year-end freeze holds every wave, the hotfix's own audit too.
    assert [f.reason for f in found["v46"].schedule.freezes] == ["year-end freeze"]
    assert [f.reason for f in found["hotfix"].schedule.freezes] == ["audit", "year-end freeze"]
    assert [f.reason for f in found["v47"].schedule.freezes] == ["year-end freeze"]
    assert found["v46"].schedule.files == (f"{tmp_path}/releases/reconcile.yaml",)


def test_nested_files_the_nearest_windows_win_and_every_freeze_counts(tmp_path):
    write(
        tmp_path,
        {
            "reconcile.yaml": POLICY + OFFICE + YEAR_END,
            "eu/reconcile.yaml": POLICY + NIGHTS + AUDIT,
            "eu/v46.yaml": wave("v46"),
            "us/v47.yaml": wave("v47", tag="us"),
        },
    )
    found = specs(tmp_path)
    assert [w.describe() for w in found["v46"].schedule.windows] == ["every day 22:00-06:00 UTC"]
    assert [f.reason for f in found["v46"].schedule.freezes] == ["audit", "year-end freeze"]
    assert [w.describe() for w in found["v47"].schedule.windows] == ["Mon-Thu 09:00-16:00 Europe/Berlin"]
    assert [f.reason for f in found["v47"].schedule.freezes] == ["year-end freeze"]


def test_a_manifest_given_alone_still_gets_the_repository_file(tmp_path, release_repo):
    commit(release_repo, {"reconcile.yaml": POLICY + YEAR_END, "v46.yaml": wave()}, "v46 and a freeze")
    (release_repo / "sub").mkdir()
    commit(release_repo, {"sub/v47.yaml": wave("v47", tag="other")}, "v47")
    alone = specs(release_repo / "sub" / "v47.yaml")["v47"]
    assert [f.reason for f in alone.schedule.freezes] == ["year-end freeze"]


def test_at_a_git_revision_the_file_is_read_from_that_commit(release_repo, monkeypatch):
    commit(release_repo, {"reconcile.yaml": POLICY + YEAR_END, "v46.yaml": wave()}, "v46 and a freeze")
    commit(release_repo, {"reconcile.yaml": POLICY + AUDIT}, "another freeze")
    monkeypatch.chdir(release_repo)
    with GitSource("HEAD~1") as source:
        (spec,) = load(["."], source=source).specs
    assert [f.reason for f in spec.schedule.freezes] == ["year-end freeze"]
    with GitSource("HEAD") as source:
        (spec,) = load(["v46.yaml"], source=source).specs
    assert [f.reason for f in spec.schedule.freezes] == ["audit"]


def test_a_changed_repository_file_puts_its_waves_in_a_pull_requests_plan(release_repo, monkeypatch):
    from reconciler.manifest import changed_waves

    commit(release_repo, {"v46.yaml": wave(), "reconcile.yaml": POLICY}, "v46")
    git(release_repo, "tag", "base")
    commit(release_repo, {"reconcile.yaml": POLICY + YEAR_END}, "year-end freeze")
    monkeypatch.chdir(release_repo)
    changes = changed_waves(".", "base", "HEAD")
    assert [spec.name for spec in changes.select(load(["."]).specs)] == ["v46"]


def test_a_repository_file_that_leaves_the_repository_is_refused(release_repo, tmp_path, monkeypatch):
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(POLICY + YEAR_END)
    os.symlink(outside, release_repo / "reconcile.yaml")
    write(release_repo, {"sub/v46.yaml": wave()})
    monkeypatch.chdir(release_repo)
    code, lines = check("sub")
    assert code == 1
    assert lines == [f"reconcile.yaml:1:1: cannot read the file: outside the release repository {release_repo}"]


# -- mistakes ---------------------------------------------------------------------------------------------


def test_every_bad_value_is_one_line_at_its_position(tmp_path, monkeypatch):
    write(
        tmp_path,
        {
            "v46.yaml": wave(
                extra=(
                    "windows:\n"
                    "  - days: Mnn-Thu\n"  # 7
                    '    hours: "25:00-16:00"\n'  # 8
                    "    timezone: Europe/Berlinn\n"  # 9
                    "  - days: [Mon, Fri-Sun-Tue]\n"  # 10
                    "    hours: 9-5\n"  # 11
                    '  - hours: "10:00-10:00"\n'  # 12
                    '  - hours: "08:00-24:30"\n'  # 13
                    "  - timezone: UTC\n"  # 14
                    "freezes:\n"
                    "  - from: 2026-12-21\n"  # 16
                    "    until: 2026-12-20\n"  # 17
                    "    reason: backwards\n"
                    "  - from: 2026-02-30\n"  # 19
                    "    until: 2026-12-20 10:00\n"  # 20
                    "  - from: 2026-12-21\n"  # 21
                    "    until: 2026-12-22\n"
                    "    reason: local\n"
                    "    timezone: localtime\n"  # 24
                    "    until2: x\n"  # 25
                )
            )
        },
    )
    monkeypatch.chdir(tmp_path)
    code, lines = check("v46.yaml")
    assert code == 1
    assert lines == [
        "v46.yaml:7:11: days: unknown day 'Mnn' (did you mean 'Mon'?); use Mon, Tue, Wed, Thu, Fri, Sat, Sun, "
        "ranges such as Mon-Thu and lists such as Mon,Wed,Fri",
        "v46.yaml:8:12: hours '25:00-16:00': 25:00 is not a time of day (00:00 to 23:59)",
        "v46.yaml:9:15: timezone 'Europe/Berlinn' is not a known IANA time zone; use a name such as Europe/Berlin, "
        "America/New_York or UTC (did you mean 'Europe/Berlin'?)",
        "v46.yaml:10:17: days: 'Fri-Sun-Tue' is not a day or a range of two days; use Mon, Tue, Wed, Thu, Fri, Sat, "
        "Sun, ranges such as Mon-Thu and lists such as Mon,Wed,Fri",
        "v46.yaml:11:12: hours must be a time range such as \"09:00-16:00\" (24-hour HH:MM-HH:MM), got '9-5'",
        "v46.yaml:12:12: hours '10:00-10:00': the window starts and ends at the same time; for the whole day leave "
        "hours out",
        "v46.yaml:13:12: hours '08:00-24:30': 24:30 is not a time of day (00:00 to 24:00)",
        'v46.yaml:14:5: windows[4] needs days and/or hours (e.g. days: Mon-Thu, hours: "09:00-16:00")',
        "v46.yaml:17:12: until 2026-12-20 is not after from 2026-12-21: a freeze must end after it starts (a date in "
        "until counts to the end of that day)",
        "v46.yaml:19:5: freezes[1] is missing required key 'reason'",
        "v46.yaml:19:11: from '2026-02-30' is not a real date or time",
        "v46.yaml:20:12: until must be a date such as 2026-12-21, a date-time such as 2026-12-21T18:00, or one with "
        "an offset such as 2026-12-21T17:00:00Z, got '2026-12-20 10:00'",
        "v46.yaml:24:15: timezone 'localtime' is not a known IANA time zone; use a name such as Europe/Berlin, "
        "America/New_York or UTC",
        "v46.yaml:25:5: unknown key 'until2' (did you mean 'until'?); allowed keys: from, reason, timezone, until",
    ]


def test_mistakes_in_the_repository_file_fail_the_run_at_its_lines(tmp_path, monkeypatch):
    write(tmp_path, {"reconcile.yaml": POLICY + "windows:\n  - days: Funday\nfreeze: []\n", "v46.yaml": wave()})
    monkeypatch.chdir(tmp_path)
    code, lines = check(".")
    assert code == 1
    assert lines == [
        "reconcile.yaml:4:11: days: unknown day 'Funday' (did you mean 'Sunday'?); use Mon, Tue, Wed, Thu, Fri, "
        "Sat, Sun, ranges such as Mon-Thu and lists such as Mon,Wed,Fri",
        "reconcile.yaml:5:1: unknown key 'freeze' (did you mean 'freezes'?); allowed keys: apiVersion, freezes, "
        "kind, windows",
    ]


def test_the_repository_file_holds_one_release_policy_and_waves_hold_none(tmp_path, monkeypatch):
    write(
        tmp_path,
        {
            "a/reconcile.yaml": wave("in-policy-file"),
            "b/policy.yaml": POLICY + YEAR_END,
            "c/reconcile.yaml": POLICY + "---\n" + POLICY,
        },
    )
    monkeypatch.chdir(tmp_path)
    code, lines = check("a", "b", "c")
    assert code == 1
    assert lines == [
        "a/reconcile.yaml:1:1: reconcile.yaml is the repository-wide settings file: it must hold one document with "
        "apiVersion: reconciler/v1 and kind: ReleasePolicy (wave manifests go in other files)",
        "b/policy.yaml:2:7: kind ReleasePolicy belongs in a file named reconcile.yaml (it applies to the waves in "
        "its directory and below); move this document there",
        "c/reconcile.yaml:4:1: reconcile.yaml is the repository-wide settings file: it must hold one document with "
        "apiVersion: reconciler/v1 and kind: ReleasePolicy (wave manifests go in other files)",
    ]


def test_a_valid_repository_file_checks_out_and_is_not_counted_as_a_manifest(tmp_path, monkeypatch):
    write(tmp_path, {"reconcile.yaml": POLICY + OFFICE + YEAR_END, "v46.yaml": wave()})
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--check", "."])
    assert (result.exit_code, result.stdout, result.stderr) == (0, "1 manifest, 1 wave: ok\n", "")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.frozensets(st.integers(0, 6), min_size=1), st.booleans())
def test_any_set_of_days_reads_back_from_how_the_plan_writes_it(tmp_path, days, as_list):
    written = describe_days(days)
    if written == "every day":
        written = "Mon-Sun"
    value = json.dumps(written.split(",")) if as_list else json.dumps(written)
    write(tmp_path, {"v46.yaml": wave(extra=f"windows:\n  - days: {value}\n")})
    (window,) = specs(tmp_path / "v46.yaml")["v46"].schedule.windows
    assert window.days == days


def test_load_raises_with_all_problems_of_both_files(tmp_path):
    write(
        tmp_path,
        {
            "reconcile.yaml": POLICY + "windows:\n  - timezone: Mars/Olympus\n    days: Mon\n",
            "v46.yaml": wave(extra="freezes:\n  - {from: 2026-12-02, until: 2026-12-01, reason: r}\n"),
        },
    )
    with pytest.raises(ValidationFailed) as failure:
        load([str(tmp_path)])
    assert [(Path(p.file).name, p.line) for p in failure.value.problems] == [("reconcile.yaml", 4), ("v46.yaml", 7)]


# -- schemas ----------------------------------------------------------------------------------------------


def test_the_repository_schema_shares_the_wave_schemas_definitions_and_describes_every_property():
    wave_schema = json.loads((REPO / "schemas" / "wave.schema.json").read_text())
    policy = json.loads((REPO / "schemas" / "policy.schema.json").read_text())
    for name in ("window", "freeze", "freezeTime", "timezone"):
        assert policy["$defs"][name] == wave_schema["$defs"][name], name
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(policy)
    Draft202012Validator(policy).validate(
        {
            "apiVersion": "reconciler/v1",
            "kind": "ReleasePolicy",
            "windows": [{"days": "Mon-Thu", "hours": "09:00-16:00", "timezone": "Europe/Berlin"}],
            "freezes": [{"from": "2026-12-21", "until": "2027-01-06T12:00:00+01:00", "reason": "r"}],
        }
    )

    def undescribed(node, where=()):
        if isinstance(node, dict):
            for key, sub in node.get("properties", {}).items():
                if "description" not in sub:
                    yield ".".join((*where, key))
            for key, sub in node.items():
                yield from undescribed(sub, (*where, key))

    assert list(undescribed(policy)) == []
