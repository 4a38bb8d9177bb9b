"""The manifest ``reconcile import`` writes for a wave (manifest/_generate.py), from hand-built waves: the
factory's names and free text are untrusted, and what is written must load back as what was meant."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconciler.core import ObservedWave, RolloutRecord, TargetsKeys, WaveStatus
from reconciler.manifest import FileSource, Selection, WaveFacts, choose_waves, file_name, generate, load, problems_of

AT = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def wave(name: str = "v46", *, tag: str = "production", history=(), status=WaveStatus.ACTIVE, **kw) -> ObservedWave:
    return ObservedWave(name=name, version=46, tag=tag, status=status, created_at=AT, history=tuple(history), **kw)


def record(group: str = "", *, full: bool = False, devices: int = 5, by: str = "alice") -> RolloutRecord:
    return RolloutRecord(group=group, at=AT, full_group=full, factory_wide=not group, devices=devices, by=by)


def comments(text: str) -> str:
    """The comments of a manifest as one line (they are wrapped at spaces)."""
    return " ".join(line.strip()[2:] for line in text.splitlines() if line.strip().startswith("# "))


def loaded(tmp_path, text: str):
    path = tmp_path / "w.yaml"
    path.write_text(text)
    return load([str(path)], source=FileSource()).specs[0]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("..", "must not be '..'"),
        ("../etc/passwd", "must not contain U+002F SOLIDUS"),
        ("v46\nkind: Evil", "must not contain U+000A LINE FEED"),
        ("v\u202e64", "must not contain U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("x" * 101, "must be at most 100 characters long"),
    ],
)
def test_a_name_that_is_no_safe_file_or_wave_name_is_refused_and_escaped(name, reason):
    (problem,) = problems_of(wave(name), "demo")
    assert reason in problem and "\n" not in problem and "\u202e" not in problem


def test_a_hostile_group_or_tag_is_refused_and_a_deleted_group_is_unrepresentable():
    problems = problems_of(wave(tag="prod uction", history=[record("ok", full=True), record("a;b"), record("x")]), "f")
    assert len(problems) == 2
    assert "its tag 'prod uction' must not contain U+0020 SPACE" in problems[0]
    assert "rollout 2 names device group 'a;b', which must not contain U+003B SEMICOLON" in problems[1]
    deleted = RolloutRecord(group="", at=AT, full_group=False, factory_wide=False, devices=3)
    assert "rollout 1 went to a device group that has been deleted" in problems_of(wave(history=[deleted]), "f")[0]


def test_a_leading_dot_does_not_make_a_hidden_file():
    assert file_name(".v46") == "_.v46.yaml" and file_name("v46") == "v46.yaml"


def test_free_text_stays_in_its_comment_and_names_that_yaml_reads_otherwise_stay_strings(tmp_path):
    w = wave(
        "0o17",
        tag="1e3",
        history=[record("true", full=True, by="mallory\nphases: []\n# \x1b[31m"), record("0x10", devices=20_000)],
        created_by="bob\u2028evil: 1",
    )
    generated = generate(w, WaveFacts(AT, None), None, factory="demo", now=AT)
    assert "\x1b" not in generated.text and "\u2028" not in generated.text
    assert "Rollout 1, by mallory\\u000aphases: []\\u000a# \\u001b[31m at 2026-11-01T08:00:00Z" in comments(
        generated.text
    )
    spec = loaded(tmp_path, generated.text)
    assert (spec.name, spec.tag, spec.target, spec.factory, spec.expires_at) == ("0o17", "1e3", 46, "demo", AT)
    assert [(p.name, p.group, p.limit and str(p.limit)) for p in spec.phases] == [
        ("true", "true", None),
        ("0x10", "0x10", "100%"),  # more devices than one call's 10,000: a percentage the history lost
    ]
    assert spec.open_ended


def test_finished_waves_are_complete_or_cancel_and_signers_are_named(tmp_path):
    keys = TargetsKeys(threshold=3, offline=("a" * 64, "b" * 64))
    facts = WaveFacts(None, frozenset({"a" * 64, "b" * 64, "c" * 64}))
    done = generate(
        wave(status=WaveStatus.COMPLETE, updated_by="carol", updated_at=AT), facts, keys, factory="d", now=AT
    )
    assert "# Completed by carol at 2026-11-01T08:00:00Z in the factory." in done.text
    assert f"(it needs 3): offline {'a' * 12}, {'b' * 12} and the online key." in comments(done.text)
    spec = loaded(tmp_path, done.text)
    assert spec.complete is not None and spec.phases == () and spec.expires_at is None
    canceled = generate(wave(status=WaveStatus.CANCELED), WaveFacts(None, None), None, factory="d", now=AT)
    assert loaded(tmp_path, canceled.text).cancel


def test_phase_names_are_the_group_where_unique_else_phase_n():
    history = [record("canary", full=True), record(), record("eu", devices=2), record("eu"), record("phase-9")]
    text = generate(wave(history=history), WaveFacts(None, None), None, factory="d", now=AT).text
    names = [line.split(": ")[1] for line in text.splitlines() if line.startswith("  - name: ")]
    assert names == ["canary", "phase-2", "phase-3", "phase-4", "phase-5"]


def test_choose_waves_by_name_status_and_date():
    later = datetime(2026, 12, 1, tzinfo=UTC)
    waves = [
        wave("a"),
        wave("b", status=WaveStatus.COMPLETE),
        ObservedWave("c", 47, "t", WaveStatus.ACTIVE, later),
    ]
    assert [w.name for w in choose_waves(waves, named=(), selection=Selection.ACTIVE, since=None)[0]] == ["a", "c"]
    assert [w.name for w in choose_waves(waves, named=(), selection=Selection.ALL, since=later)[0]] == ["c"]
    chosen, problems = choose_waves(waves, named=("b", "zz"), selection=Selection.ACTIVE, since=None)
    assert [w.name for w in chosen] == ["b"] and problems == ["wave 'zz' does not exist in the factory"]
