"""Manifests from an untrusted pull request: no reading outside the repository, nothing that acts
instead of showing itself, names the factory accepts, and bounded work and output (issue 17, 3/4/6)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import names
from reconciler.errors import MAX_SHOWN, ValidationFailed
from reconciler.manifest import load
from reconciler.manifest._source import MAX_FILE_BYTES
from reconciler.manifest._yaml import MAX_SCALAR_CHARS
from reconciler.safetext import printable, unsafe_character
from tests.helpers.e2e import reconcile

WAVE = "apiVersion: reconciler/v1\nkind: Wave\nname: {name}\ntarget: 46\ntag: {tag}\n"
SECRET = "root:x:0:0:root:/root:/bin/bash daemon:x:1:1"


def wave(name: str = "v46", tag: str = "production", extra: str = "") -> str:
    return WAVE.format(name=name, tag=tag) + extra


def problems_of(*paths: str) -> list[str]:
    with pytest.raises(ValidationFailed) as failure:
        load(list(paths))
    return [str(problem) for problem in failure.value.problems]


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A git release repository as the current directory, with a file outside it full of secrets."""
    root = tmp_path / "repo"
    (root / "releases").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (tmp_path / "passwd").write_text(SECRET + "\n")
    monkeypatch.chdir(root)
    return root


# -- 3. files outside the repository --------------------------------------------------------------


def test_a_manifest_symlinked_out_of_the_repository_is_refused_without_quoting_it(repo):
    os.symlink(repo.parent / "passwd", repo / "releases" / "p.yaml")
    assert problems_of("releases") == [
        (
            "releases/p.yaml:1:1: cannot read the file: a symbolic link that leaves the release repository;"
            " a manifest must be a file in it"
        )
    ]
    code, out, err = reconcile("--check", "releases")
    assert code == 1 and "root:" not in out + err and "passwd" not in out + err


@pytest.mark.skipif(not os.path.isfile("/etc/passwd"), reason="no /etc/passwd")
def test_a_manifest_symlinked_to_etc_passwd_is_refused_as_the_issue_reproduced(repo):
    os.symlink("/etc/passwd", repo / "releases" / "p.yaml")
    code, _, err = reconcile("--check", "releases/p.yaml")
    assert code == 1
    assert err == (
        "releases/p.yaml:1:1: cannot read the file: a symbolic link that leaves the release"
        " repository; a manifest must be a file in it\n"
    )


def test_a_directory_symlinked_out_of_the_repository_is_refused(repo):
    outside = repo.parent / "elsewhere"
    outside.mkdir()
    (outside / "w.yaml").write_text(wave())
    os.symlink(outside, repo / "linked")
    assert problems_of("linked") == ["linked: a symbolic link that leaves the release repository"]


def test_a_symlink_inside_the_repository_is_read(repo):
    (repo / "releases" / "real.yaml").write_text(wave())
    os.symlink("real.yaml", repo / "releases" / "alias.yml")
    assert [spec.name for spec in load(["releases/alias.yml"]).specs] == ["v46"]


def test_a_document_that_is_not_a_mapping_is_named_by_its_kind_not_quoted(repo):
    (repo / "releases" / "w.yaml").write_text(SECRET + "\n")
    assert problems_of("releases") == [
        "releases/w.yaml:1:1: a manifest must be a mapping with kind: Wave, got a string"
    ]


# -- 4. names, tags and groups the factory accepts; characters that act -----------------------------


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        (
            wave(name="v46\u0430"),
            (
                "name must contain only letters, digits, '_', '.' and '-', got 'v46\u0430':"
                " U+0430 CYRILLIC SMALL LETTER A (character 4) is not allowed"
            ),
        ),
        (
            wave(tag="prod<img>"),
            (
                "tag must be a tag name made of letters, digits, '_', '.', '+' and '-',"
                " got 'prod<img>': U+003C LESS-THAN SIGN (character 5) is not allowed"
            ),
        ),
        (
            wave(extra="phases:\n  - group: '<img src=x>'\n"),
            (
                "group must be a device group name made of letters, digits, '_', '.' and '-', got '<img src=x>':"
                " U+003C LESS-THAN SIGN (character 1) is not allowed"
            ),
        ),
        (
            wave(extra="phases:\n  - group: 'a`b'\n"),
            (
                "group must be a device group name made of letters, digits, '_', '.' and '-', got 'a`b':"
                " U+0060 GRAVE ACCENT (character 2) is not allowed"
            ),
        ),
    ],
)
def test_names_tags_and_groups_follow_the_factory_patterns_and_name_the_character(repo, manifest, expected):
    (repo / "releases" / "w.yaml").write_text(manifest)
    [problem] = problems_of("releases")
    assert problem.split(": ", 1)[1] == expected


@pytest.mark.parametrize(
    ("escaped", "named"),
    [
        ("a\\nb", "U+000A LINE FEED"),
        ("\\e[31mred", "U+001B ESCAPE"),
        ("\\e]0;pwned\\a", "U+001B ESCAPE"),
        ("evil\\u202Etxt", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("zero\\u200Bwidth", "U+200B ZERO WIDTH SPACE"),
    ],
)
def test_control_and_bidi_characters_written_as_escapes_are_refused_by_code_point(repo, escaped, named):
    (repo / "releases" / "w.yaml").write_text(wave(extra=f'phases:\n  - group: "{escaped}"\n'))
    [problem] = problems_of("releases")
    assert problem.startswith("releases/w.yaml:7:12: ")
    assert f"{named} is not allowed in a manifest: no control, format or bidirectional characters" in problem


def test_a_block_scalar_newline_is_refused(repo):
    (repo / "releases" / "w.yaml").write_text(wave(extra="phases:\n  - group: |\n      a\n      ::warning::x\n"))
    [problem] = problems_of("releases")
    assert "U+000A LINE FEED is not allowed in a manifest" in problem and "::warning" not in problem


def test_a_raw_bidi_override_anywhere_in_the_file_is_refused_at_its_position(repo):
    (repo / "releases" / "w.yaml").write_text(wave() + "# approved \u202e dangerous\n")
    assert problems_of("releases") == [
        (
            "releases/w.yaml:6:12: U+202E RIGHT-TO-LEFT OVERRIDE is not allowed in a manifest: no control, format or"
            " bidirectional characters; remove it (it may be invisible in an editor)"
        )
    ]


def test_an_unknown_key_with_an_escape_is_refused_and_printed_escaped(repo):
    (repo / "releases" / "w.yaml").write_text(wave(extra='"grou\\e[2Jp": x\n'))
    [problem] = problems_of("releases")
    assert "U+001B ESCAPE" in problem and "\x1b" not in problem


@pytest.mark.parametrize("key", ["name", "tag", "group", "factory"])
def test_names_are_at_most_100_characters_like_the_factory(repo, key):
    def manifest(value: str) -> str:
        if key == "group":
            return wave(extra=f"phases:\n  - group: {value}\n")
        if key == "factory":
            return wave(extra=f"factory: {value}\n")
        return wave(**{key: value})

    (repo / "releases" / "w.yaml").write_text(manifest("a" * 100))
    assert len(load(["releases"]).specs) == 1
    (repo / "releases" / "w.yaml").write_text(manifest("a" * 101))
    [problem] = problems_of("releases")
    assert problem.endswith(f"{key} must be at most 100 characters long, got 101")


# -- 6. bounded work and output ---------------------------------------------------------------------


def test_a_15_mb_scalar_is_refused_quickly_with_a_short_message(repo):
    (repo / "releases" / "w.yaml").write_text(wave(extra=f"sourceTag: {'a' * 15_000_000}\n"))
    started = time.monotonic()
    [problem] = problems_of("releases")
    assert time.monotonic() - started < 10
    assert problem == (
        f"releases/w.yaml:6:12: a value of 15,000,000 characters is too long: at most {MAX_SCALAR_CHARS:,}"
    )


def test_a_1_mb_wave_name_is_refused(repo):
    (repo / "releases" / "w.yaml").write_text(wave(name="a" * 1_000_000))
    [problem] = problems_of("releases")
    assert len(problem) < 200 and "too long" in problem


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(repo):
    with open(repo / "releases" / "big.yaml", "wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    tracemalloc.start()
    try:
        assert problems_of("releases") == ["releases/big.yaml:1:1: cannot read the file: larger than 16 MiB"]
        assert tracemalloc.get_traced_memory()[1] < MAX_FILE_BYTES // 4
    finally:
        tracemalloc.stop()


def flood(repo: Path, body: str) -> tuple[list[str], float]:
    (repo / "releases" / "w.yaml").write_text(body)
    started = time.monotonic()
    code, out, err = reconcile("--check", "releases")
    elapsed = time.monotonic() - started
    assert code == 1 and out == ""
    return err.splitlines(), elapsed


@pytest.mark.slow
def test_100000_unknown_keys_print_51_lines(repo):
    lines, elapsed = flood(repo, wave(extra="".join(f"k{i}: 1\n" for i in range(100_000))))
    assert len(lines) == MAX_SHOWN + 1
    assert lines[0].startswith("releases/w.yaml:6:1: unknown key 'k0'")
    assert lines[-1] == "... and 99,950 more errors (the first 50 are shown)"
    assert elapsed < 60


def test_unknown_keys_build_no_problem_per_key(repo):
    """Memory stays bounded while collecting: 20,000 unknown keys keep the same few problems."""
    (repo / "releases" / "w.yaml").write_text(wave(extra="".join(f"k{i}: 1\n" for i in range(20_000))))
    with pytest.raises(ValidationFailed) as failure:
        load(["releases"])
    assert len(failure.value.problems) == MAX_SHOWN
    assert failure.value.more == "... and 19,950 more errors (the first 50 are shown)"


def test_20000_bad_phases_print_51_lines_quickly(repo):
    phases = "".join(f"  - name: p{i}\n    bogus: 1\n" for i in range(20_000))
    lines, elapsed = flood(repo, wave(extra="phases:\n" + phases))
    assert len(lines) == MAX_SHOWN + 1
    assert lines[0] == (
        "releases/w.yaml:7:5: phase 'p0' needs at least one of group, limit, uuids"
        " (to update every device, use complete: true)"
    )
    assert lines[-1].startswith("... and at least ") and lines[-1].endswith(" more errors (the first 50 are shown)")
    assert elapsed < 30


def test_many_bad_files_print_at_most_50_errors(repo):
    for index in range(80):
        (repo / "releases" / f"w{index:02}.yaml").write_text(wave(name=f"w{index}", extra="soak: 1h\n"))
    code, _, err = reconcile("--check", "releases")
    lines = err.splitlines()
    assert code == 1 and len(lines) == MAX_SHOWN + 1
    assert lines[0].startswith("releases/w00.yaml:6:1: unknown key 'soak'")
    assert lines[-1] == "... and 30 more errors (the first 50 are shown)"


def test_duplicate_uuid_warnings_are_bounded_too(repo):
    uuid = "123e4567-e89b-12d3-a456-426614174000"
    items = "".join(f"      - {uuid}\n" for _ in range(200))
    (repo / "releases" / "w.yaml").write_text(wave(extra=f"phases:\n  - uuids:\n{items}"))
    code, _, err = reconcile("--check", "releases")
    lines = err.splitlines()
    assert code == 0 and len(lines) == MAX_SHOWN + 1
    assert lines[-1] == "... and 149 more warnings (the first 50 are shown)"


# -- the escaping function itself -----------------------------------------------------------------


def test_every_control_format_and_separator_character_is_escaped():
    import unicodedata

    acting = [
        chr(c)
        for c in range(0x110000)
        if unicodedata.category(chr(c)) in ("Cc", "Cf", "Zl", "Zp", "Cs") and chr(c) != "\t"
    ]
    assert [f"U+{ord(c):04X}" for c in acting if unsafe_character(c) is None] == []


def test_every_character_a_manifest_value_refuses_is_one_isprintable_refuses():
    """The YAML builder clears a printable value with str.isprintable and asks unsafe_character only
    about the others (manifest/_yaml.py, _Builder._string)."""
    missed = [c for c in range(0x110000) if unsafe_character(chr(c)) is not None and chr(c).isprintable()]
    assert [f"U+{c:04X}" for c in missed] == []


@given(st.text(st.characters(max_codepoint=0x7F)), st.booleans())
def test_ascii_text_is_searched_with_the_small_class_and_finds_what_the_whole_class_finds(text, lines):
    """unsafe_character searches ASCII text for the C0 controls and DEL only: the same first character
    at the same place as the whole class (every format and separator character lies beyond ASCII)."""
    from reconciler import safetext

    whole = (safetext._UNSAFE_IN_FILE if lines else safetext._UNSAFE).search(text)
    assert unsafe_character(text, lines=lines) == (None if whole is None else (whole.start(), whole.group()))


@given(st.text())
def test_printable_output_is_one_line_of_inert_characters(text):
    shown = printable(text)
    assert unsafe_character(shown) is None and "\n" not in shown


def factory_takes(group: str) -> bool:
    """The factory's group names, less '.' and '..' (URL path steps): reconciler/names.py."""
    return names.problem(names.NameKind.GROUP, group) is None


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=120))
def test_any_group_loads_only_if_the_factory_takes_it_and_every_problem_prints_inert(value):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "w.yaml"
        path.write_text(wave(extra=f"phases:\n  - group: {json.dumps(value)}\n"), encoding="utf-8")
        try:
            [spec] = load([str(path)]).specs
        except ValidationFailed as failure:
            assert not factory_takes(value)
            for line in str(failure).split("\n"):
                assert unsafe_character(line) is None and not line.lstrip().startswith("::")
        else:
            assert factory_takes(value) and spec.phases[0].group == value


def test_status_prints_at_most_50_errors_and_counts_the_rest(repo):
    for index in range(80):
        (repo / "releases" / f"w{index:02}.yaml").write_text(wave(name=f"w{index}", extra="soak: 1h\n"))
    code, out, err = reconcile("status", "releases")
    lines = err.splitlines()
    assert code == 1 and out == "" and len(lines) == MAX_SHOWN + 1
    assert lines[-1] == "... and 30 more errors (the first 50 are shown)"
