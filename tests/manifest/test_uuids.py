"""UUID lists and the small value languages of a manifest: durations, limits, percentages, date-times."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.spec import Limit
from reconciler.errors import Problem
from reconciler.manifest._uuids import MAX_REPORTED, MAX_UUIDS, PATTERN, _fast_path, parse_file, parse_inline
from reconciler.manifest._values import parse_date_time, parse_duration, parse_limit, parse_percent

EXAMPLE = "123e4567-e89b-12d3-a456-426614174000"
A, B, C = (str(uuid.uuid5(uuid.NAMESPACE_URL, f"reconciler-demo:42:{i}")) for i in (65, 66, 67))


def messages(problems: list[Problem]) -> list[str]:
    return [str(problem) for problem in problems]


# --- UUID files ------------------------------------------------------------------------------------------


def test_every_separator_fioctl_accepts():
    text = f"{A},{B};{C}|{A.replace('6', '7', 1)}\n\t{B.replace('0', '1', 1)}\u00a0 {C.replace('8', '9', 1)}\r\n"
    uuids, problems = parse_file(text.encode(), "eu.lst")
    assert problems == []
    assert uuids == (A, B, C, A.replace("6", "7", 1), B.replace("0", "1", 1), C.replace("8", "9", 1))


def test_the_fast_path_and_the_careful_path_agree():
    ascii_only = f"{A}, {B}\n{C}\n".encode()
    with_unicode_space = f"{A},\u2003{B}\n{C}\n".encode()  # not ASCII: tokenized line by line
    assert parse_file(ascii_only, "f") == parse_file(with_unicode_space, "f") == ((A, B, C), [])


@settings(max_examples=60, deadline=None)
@given(
    ids=st.lists(st.uuids().map(str), min_size=1, max_size=30),
    separators=st.lists(st.sampled_from([",", ";", "|", " ", "\n", "\t", " , ", "\r\n", "\u00a0"]), min_size=30),
)
def test_any_mix_of_separators_reads_the_same_uuids(ids, separators):
    text = "".join(value + separators[index] for index, value in enumerate(ids))
    uuids, problems = parse_file(text.encode(), "f")
    distinct = tuple(dict.fromkeys(ids))
    assert uuids == distinct
    assert len(problems) == len(ids) - len(distinct)
    assert all(problem.severity == "warning" for problem in problems)


@st.composite
def near_uuids(draw: st.DrawFn) -> list[str]:
    """Canonical UUIDs written one after the other, cut into tokens anywhere (a 35- and a 37-character
    token make two UUIDs again once joined), with a character dropped, added or changed here and there."""
    text = "".join(draw(st.lists(st.uuids().map(str), min_size=1, max_size=4)))
    cuts = sorted(set(draw(st.lists(st.integers(1, len(text) - 1), max_size=5)) + list(range(36, len(text), 36))))
    if draw(st.booleans()):
        cuts = sorted({cut + draw(st.integers(-1, 1)) for cut in cuts} - {0, len(text)})
    tokens = [text[start:end] for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True) if start < end]
    for _ in range(draw(st.integers(0, 2))):
        index = draw(st.integers(0, len(tokens) - 1))
        token, at = tokens[index], draw(st.integers(0, len(tokens[index])))
        char = draw(st.sampled_from("0af-9"))
        tokens[index] = draw(st.sampled_from([token[:at] + token[at + 1 :], token[:at] + char + token[at:]]))
    return [token for token in tokens if token] or [text]


@settings(max_examples=400, deadline=None)
@given(tokens=near_uuids(), separators=st.lists(st.sampled_from([",", ";", "|", " ", "\n", "\t", ", "]), min_size=20))
def test_the_fast_path_takes_exactly_the_lists_of_distinct_canonical_uuids(tokens, separators):
    data = "".join(token + separators[index % len(separators)] for index, token in enumerate(tokens)).encode()
    canonical = all(re.fullmatch(PATTERN, token) for token in tokens) and len(set(tokens)) == len(tokens)
    assert _fast_path(data) == (tuple(tokens) if canonical else None)
    if not canonical:  # the careful path reads such a file: an error or a warning for each wrong token
        assert parse_file(data, "f")[1]


def test_non_canonical_forms_say_what_to_write():
    text = f"{A}\n{B.upper()}  {{{C}}}\nurn:uuid:{A.replace('-', '')} xyz {'f' * 50}\n"
    assert messages(parse_file(text.encode(), "eu.lst")[1]) == [
        f"eu.lst:2:1: UUID '{B.upper()}' must be written lower-case and hyphenated: {B}",
        f"eu.lst:2:39: UUID '{{{C}}}' must be written lower-case and hyphenated: {C}",
        f"eu.lst:3:1: UUID 'urn:uuid:{A.replace('-', '')}' must be written lower-case and hyphenated: {A}",
        f"eu.lst:3:43: 'xyz' is not a device UUID (lower-case hex 8-4-4-4-12, e.g. {EXAMPLE})",
        f"eu.lst:3:47: '{'f' * 37}...' is not a device UUID (lower-case hex 8-4-4-4-12, e.g. {EXAMPLE})",
    ]


def test_errors_are_placed_after_a_byte_order_mark_as_an_editor_shows_them():
    assert messages(parse_file(b"\xef\xbb\xbfnope\n", "f")[1])[0].startswith("f:1:1: 'nope' is not a device UUID")


def test_duplicates_are_warnings_and_counted_once():
    uuids, problems = parse_file(f"{A} {B}\n{A}\n".encode(), "eu.lst")
    assert uuids == (A, B)
    assert messages(problems) == [f"eu.lst:2:1: warning: duplicate UUID {A} (first at line 1, column 1)"]


def test_at_most_400000_uuids():
    ids = [str(uuid.UUID(int=n)) for n in range(1, MAX_UUIDS + 3)]
    uuids, problems = parse_file("\n".join(ids).encode(), "many.lst")
    assert uuids == ()
    assert messages(problems) == [
        "many.lst:400001:1: too many UUIDs: 400002 in this file, a phase takes at most 400000"
        " (rolled out 10000 per rollout); split them over several phases"
    ]
    assert parse_file("\n".join(ids[:MAX_UUIDS]).encode(), "f") == (tuple(ids[:MAX_UUIDS]), [])


def test_a_garbage_file_gets_a_summary_not_thousands_of_lines():
    problems = parse_file(("x " * 1000).encode(), "g.lst")[1]
    assert len(problems) == MAX_REPORTED + 1
    summary = f"{1000 - MAX_REPORTED} more invalid UUIDs in this file are not shown"
    assert str(problems[-1]) == f"g.lst:1:{2 * MAX_REPORTED + 1}: {summary}"


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "f:1:1: no UUIDs in this file"),
        (b" ,;| \n\n", "f:1:1: no UUIDs in this file"),
        (
            b"# devices\n",
            "f:1:1: comments are not allowed in a UUID list: fioctl --uuids @file would read them as UUIDs",
        ),
        (f"{A}\n  \xff".encode("latin-1"), "f:2:3: not UTF-8 text (byte 0xff); save the file as UTF-8"),
    ],
)
def test_files_that_are_not_uuid_lists(content, expected):
    assert messages(parse_file(content, "f")[1]) == [expected]


def test_inline_lists_report_at_the_manifest_positions():
    uuids, problems = parse_inline([(A, "w.yaml", 9, 9), (A, "w.yaml", 10, 9), ("a,b", "w.yaml", 11, 9)])
    assert uuids == ()
    assert messages(problems) == [
        f"w.yaml:11:9: 'a,b' is not a device UUID (lower-case hex 8-4-4-4-12, e.g. {EXAMPLE})",
        f"w.yaml:10:9: warning: duplicate UUID {A} (first at line 9, column 9)",
    ]


# --- durations ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90s", 90),
        ("30m", 1800),
        ("24h", 86400),
        ("1d12h", 129600),
        ("2w", 1209600),
        ("0s", 0),
        ("1w2d3h4m5s", 788645),
        ("3650d", 3650 * 86400),
        ("007m", 420),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "90", "12 hours", "1h1d", "1.5h", "h", "1H", "-1h", "1h 30m", "2ww", "P1D"])
def test_invalid_durations(text):
    with pytest.raises(ValueError, match=r"must be a duration such as 90s, 30m, 24h, 1d12h or 2w"):
        parse_duration(text)


def test_durations_longer_than_ten_years_are_typos():
    with pytest.raises(ValueError, match=r"must be at most 3650d \(ten years\), got '3651d'"):
        parse_duration("3651d")


# --- limits and percentages ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, limit",
    [
        (1, Limit(1)),
        (10_000, Limit(10_000)),
        ("1%", Limit(1, True)),
        ("100%", Limit(100, True)),
        ("10%", Limit(10, True)),
    ],
)
def test_limits(value, limit):
    assert parse_limit(value) == limit
    assert str(parse_limit(value)) == str(value)


@pytest.mark.parametrize("value", [0, 10_001, -5, "0%", "101%", "10.5%", "10", "%", True, "ten"])
def test_invalid_limits(value):
    with pytest.raises(ValueError, match='must be a number of devices from 1 to 10000 or a percentage from "1%"'):
        parse_limit(value)


@pytest.mark.parametrize(
    "text, value", [("90%", 90.0), ("99.5%", 99.5), ("100%", 100.0), ("0.1%", 0.1), ("100.0%", 100.0)]
)
def test_percentages(text, value):
    assert parse_percent(text) == value


@pytest.mark.parametrize("text", ["0%", "0.0%", "100.5%", "150%", "90", "90 %", "-1%", ".5%", "1e2%"])
def test_invalid_percentages(text):
    with pytest.raises(ValueError, match=r"must be a percentage such as 90% or 99.5% \(more than 0%, at most 100%\)"):
        parse_percent(text)


# --- date-times ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2027-11-22T00:00:00Z", datetime(2027, 11, 22, tzinfo=UTC)),
        ("2027-11-22t00:00:00z", datetime(2027, 11, 22, tzinfo=UTC)),
        ("2027-11-22T02:00:00.5+02:00", datetime(2027, 11, 22, 0, 0, 0, 500000, tzinfo=UTC)),
        ("2027-11-21T19:00:00-05:00", datetime(2027, 11, 22, tzinfo=UTC)),
    ],
)
def test_date_times_become_utc(text, expected):
    assert parse_date_time(text) == expected


@pytest.mark.parametrize("text", ["2027-11-22", "2027-11-22T00:00:00", "2027-11-22 00:00:00Z", "tomorrow"])
def test_date_times_need_rfc3339_with_an_offset(text):
    with pytest.raises(ValueError, match="must be an RFC 3339 date-time such as 2027-11-22T00:00:00Z"):
        parse_date_time(text)


@pytest.mark.parametrize("text", ["2027-02-30T00:00:00Z", "2027-11-22T24:00:00Z", "0001-01-01T00:00:00+01:00"])
def test_date_times_must_exist(text):
    with pytest.raises(ValueError, match=re.escape(f"must be a real date and time, got '{text}'")):
        parse_date_time(text)
