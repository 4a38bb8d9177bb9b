"""``reconcile --check`` sees what it can without the factory: look-alike characters in UUIDs by code
point, and an expiry that ends before the waits do."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from reconciler.cli.reconcile import main

WAVE = "apiVersion: reconciler/v1\nkind: Wave\nname: rel-46\ntarget: 46\ntag: production\n"
GOOD = "123e4567-e89b-12d3-a456-426614174000"


def check(tmp_path, monkeypatch, manifest: str, files: dict[str, str] | None = None) -> tuple[int, list[str]]:
    (tmp_path / "w.yaml").write_text(manifest, encoding="utf-8")
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--check", "w.yaml"])
    return result.exit_code, result.stderr.splitlines()


LOOK_ALIKES = [
    (
        "\uff11\uff12\uff13e4567-e89b-12d3-a456-426614174000",
        "U+FF11 FULLWIDTH DIGIT ONE (character 1): type 1; U+FF12 FULLWIDTH DIGIT TWO (character 2): type 2; "
        f"U+FF13 FULLWIDTH DIGIT THREE (character 3): type 3; write {GOOD}",
    ),
    (
        "\u0661\u0662\u0663e4567-e89b-12d3-a456-426614174000",
        "U+0661 ARABIC-INDIC DIGIT ONE (character 1): type 1; U+0662 ARABIC-INDIC DIGIT TWO (character 2): type 2; "
        f"U+0663 ARABIC-INDIC DIGIT THREE (character 3): type 3; write {GOOD}",
    ),
    (
        "123e4567-e89b-12d3-\u0430456-426614174000",
        f"U+0430 CYRILLIC SMALL LETTER A (character 20): type a; write {GOOD}",
    ),
    (
        "123e4567\u2013e89b-12d3-a456-426614174000",
        f"U+2013 EN DASH (character 9): type -; write {GOOD}",
    ),
    (
        "123e4567-e89b-12d3-a456-42661417400\u00e9",
        "U+00E9 LATIN SMALL LETTER E WITH ACUTE (character 36): not a UUID character; UUIDs are ASCII: 0-9, a-f "
        "and '-'",
    ),
]


@pytest.mark.parametrize(("text", "named"), LOOK_ALIKES, ids=["fullwidth", "arabic-indic", "cyrillic", "dash", "e"])
def test_a_look_alike_in_an_inline_uuid_is_named_by_code_point(tmp_path, monkeypatch, text, named):
    code, lines = check(tmp_path, monkeypatch, WAVE + f'phases:\n  - uuids:\n      - "{text}"\n')
    assert (code, lines) == (1, [f"w.yaml:8:9: '{text}' is not a device UUID: {named}"])


@pytest.mark.parametrize(("text", "named"), LOOK_ALIKES, ids=["fullwidth", "arabic-indic", "cyrillic", "dash", "e"])
def test_a_look_alike_in_a_uuid_file_is_named_by_code_point(tmp_path, monkeypatch, text, named):
    code, lines = check(
        tmp_path, monkeypatch, WAVE + "phases:\n  - uuids: eu.lst\n", {"eu.lst": f"{GOOD[:-1]}1\n{text}\n"}
    )
    assert (code, lines) == (1, [f"eu.lst:2:1: '{text}' is not a device UUID: {named}"])


def test_an_invisible_character_is_to_be_removed_and_shown_escaped(tmp_path, monkeypatch):
    code, lines = check(tmp_path, monkeypatch, WAVE + "phases:\n  - uuids: eu.lst\n", {"eu.lst": f"{GOOD}\u200b\n"})
    assert (code, lines) == (
        1,
        [
            f"eu.lst:1:1: '{GOOD}\\u200b' is not a device UUID: U+200B ZERO WIDTH SPACE (character 37): remove it; "
            f"write {GOOD}"
        ],
    )


EXPIRY = "wave 'rel-46' would expire ({}) before its waits are over ({} in all): an expired wave cannot be rolled out or completed; set expires well beyond the waits (e.g. expires: 365d)"


def test_check_refuses_an_expiry_shorter_than_the_waits_at_the_expires_line(tmp_path, monkeypatch):
    manifest = WAVE + "expires: 2d\nphases:\n  - group: canary\n  - group: beta\n    wait: 1d\ncomplete:\n  wait: 2d\n"
    code, lines = check(tmp_path, monkeypatch, manifest)
    assert (code, lines) == (1, ["w.yaml:6:10: " + EXPIRY.format("48h from now", "3d")])


def test_the_default_expiry_counts_too_at_the_wave(tmp_path, monkeypatch):
    manifest = WAVE + "phases:\n  - group: canary\n  - group: beta\n    wait: 2000h\ncomplete:\n  wait: 7000h\n"
    code, lines = check(tmp_path, monkeypatch, manifest)
    assert (code, lines) == (1, ["w.yaml:3:1: " + EXPIRY.format("365d from now", "375d")])


@pytest.mark.parametrize(
    "rest",
    [
        "expires: 4d\nphases:\n  - group: canary\n    wait: 3d\ncomplete: true\n",  # longer than the waits
        "expires: 2d\ncancel: true\nphases:\n  - group: canary\n    wait: 3d\n",  # a cancel creates nothing
        "expiresAt: 2027-01-01T00:00:00Z\nphases:\n  - group: canary\n    wait: 3d\n",  # depends on the creation
        "expires: 2d\nphases:\n  - group: canary\n    wait: 3d\ncomplete: {wait: 1h}\ncancel: true\n",
    ],
)
def test_expiries_check_cannot_fault(tmp_path, monkeypatch, rest):
    code, lines = check(tmp_path, monkeypatch, WAVE + rest)
    assert code == 0, lines
