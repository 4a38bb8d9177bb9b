"""The manifest keys of failure gates: ``require.failed`` and ``onFailure``, read and refused at file:line:col."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.spec import Location, OnFailure
from reconciler.errors import ValidationFailed
from reconciler.manifest import load
from reconciler.manifest._values import parse_failure_bound, parse_percent
from reconciler.resources import load_schema

HEAD = "apiVersion: reconciler/v1\nkind: Wave\nname: v46\ntarget: 46\ntag: production\n"
PHASES = "phases:\n  - name: canary\n    group: canary\n  - name: beta\n    group: beta\n    require:\n"


def write(tmp_path, text: str) -> str:
    path = tmp_path / "v46.yaml"
    path.write_text(text)
    return str(path)


def problems(tmp_path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ValidationFailed) as failure:
        load([path])
    return [str(problem).removeprefix(path) for problem in failure.value.problems]


def test_bounds_and_on_failure_are_read_with_their_positions(tmp_path):
    text = (
        HEAD
        + "onFailure: cancel\n"
        + PHASES
        + '      updated: 90%\n      failed: "<2%"\n'
        + "complete:\n  require: {failed: <=0.5%}\n"
    )
    (spec,) = load([write(tmp_path, text)]).specs
    assert spec.on_failure is OnFailure.CANCEL and spec.at("onFailure").line == 6
    beta = spec.phases[1].gate
    assert str(beta.failed) == "<2%" and beta.updated_percent == 90.0
    assert beta.failed.location == Location(str(tmp_path / "v46.yaml"), 14, 15)
    assert spec.complete is not None and str(spec.complete.gate.failed) == "<=0.5%"
    assert spec.phases[0].gate.failed is None


def test_on_failure_defaults_to_halt(tmp_path):
    (spec,) = load([write(tmp_path, HEAD + PHASES + "      failed: <2%\n")]).specs
    assert spec.on_failure is OnFailure.HALT and str(spec.phases[1].gate.failed) == "<2%"


BAD = {
    "failed: 2%": ':12:15: failed must be a bound such as "<2%" or "<=0.5%" (below, or at most, a percentage of the '
    "devices reached), got '2%'",
    'failed: "< 2%"': ':12:15: failed must be a bound such as "<2%" or "<=0.5%" (below, or at most, a percentage '
    "of the devices reached), got '< 2%'",
    'failed: ">2%"': ':12:15: failed must be a bound such as "<2%" or "<=0.5%" (below, or at most, a percentage '
    "of the devices reached), got '>2%'",
    "failed: 2": ':12:15: failed must be a bound such as "<2%" or "<=0.5%" (below, or at most, a percentage of the '
    "devices reached), got '2'",
    "failed: <101%": ':12:15: failed must be a bound such as "<2%" or "<=0.5%" (below, or at most, a percentage of '
    "the devices reached), got '<101%'",
    "failed: <0%": ':12:15: failed must bound a percentage from 0% to 100% ("<0%" can never hold; "<=0%" allows '
    "no failure), got '<0%'",
    "onlineWithin: 24h\n      failed: <2%": ":12:21: onlineWithin only narrows require.updated; add updated (e.g. "
    "updated: 90%) or remove onlineWithin",
}


@pytest.mark.parametrize("line", list(BAD), ids=list(BAD))
def test_a_bad_bound_is_one_line_at_its_value(tmp_path, line):
    assert problems(tmp_path, HEAD + PHASES + f"      {line}\n") == [BAD[line]]


def test_a_require_without_updated_or_failed_is_refused(tmp_path):
    assert problems(tmp_path, HEAD + PHASES.removesuffix("    require:\n") + "    require: {}\n") == [
        ':11:5: require needs updated, failed or both, e.g. {updated: 90%} or {failed: "<2%"}'
    ]


@pytest.mark.parametrize("value", ["stop", "Halt", "true", "[halt]"])
def test_on_failure_is_halt_or_cancel(tmp_path, value):
    shown = {"true": "true", "[halt]": "a list"}.get(value, repr(value))
    column = 1 if value == "[halt]" else 12  # a list is reported at its key, like other structures
    assert problems(tmp_path, HEAD + f"onFailure: {value}\n" + PHASES + "      failed: <2%\n") == [
        f":6:{column}: onFailure must be halt or cancel, got {shown}"
    ]


def test_the_schema_describes_the_new_keys_and_its_pattern_matches_the_parser():
    schema = load_schema("wave.schema.json")
    failed = schema["$defs"]["require"]["properties"]["failed"]
    assert "install" in failed["description"] and "onFailure" in failed["description"]
    assert "halt" in schema["properties"]["onFailure"]["description"]
    pattern = re.compile(failed["pattern"])
    for text in ("<2%", "<=2%", "<=0%", "<0.5%", "<100%", "<=100.0%"):
        assert pattern.fullmatch(text) and parse_failure_bound(text)
    for text in ("2%", "< 2%", "=<2%", "<2", "<101%", "<2%%", ">2%"):
        assert not pattern.fullmatch(text)


@given(st.text(alphabet="<=%.0123456789 ", max_size=8))
def test_the_parser_accepts_only_what_the_schema_pattern_allows(text):
    """The schema flags a bad bound in editors; the parser never accepts what the schema refuses."""
    pattern = re.compile(load_schema("wave.schema.json")["$defs"]["require"]["properties"]["failed"]["pattern"])
    try:
        bound = parse_failure_bound(text)
    except ValueError:
        return
    assert pattern.fullmatch(text)
    assert parse_failure_bound(str(bound)) == bound


@given(st.text(alphabet="%.0123456789 ", max_size=8))
def test_the_percent_parser_accepts_only_what_the_schema_pattern_allows(text):
    """The same for ``require.updated``: ``099%`` is refused by both, not only by the editor's schema."""
    pattern = re.compile(load_schema("wave.schema.json")["$defs"]["require"]["properties"]["updated"]["pattern"])
    try:
        percent = parse_percent(text)
    except ValueError:
        return
    assert pattern.fullmatch(text)
    assert 0 < percent <= 100


def test_leading_zeros_are_refused_as_the_schema_refuses_them():
    for text in ("<001%", "<=010.5%", "<=000%"):
        with pytest.raises(ValueError, match="must be a bound such as"):
            parse_failure_bound(text)
    for text in ("099%", "001%"):
        with pytest.raises(ValueError, match="must be a percentage such as"):
            parse_percent(text)
