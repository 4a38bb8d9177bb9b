"""canonical_json: byte-identical to fioctl's encoder (reference §4.3).

securesystemslib's OLPC encoder agrees with it on strings without \\n \\r \\t and on data without
floats; the differences are tested explicitly.
"""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from securesystemslib.exceptions import FormatError
from securesystemslib.formats import encode_canonical

from reconciler import signing
from reconciler.signing import TufError

# Text fioctl and securesystemslib write alike: no \n \r \t, no lone surrogates.
agreeing_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\n\r\t"))
any_text = st.text(st.characters(blacklist_categories=["Cs"]))


def json_values(text):
    scalars = st.none() | st.booleans() | st.integers(min_value=-(1 << 70), max_value=1 << 70) | text
    return st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(text, inner, max_size=5), max_leaves=30
    )


def general_encoder(obj) -> bytes:
    """The encoder without the json.dumps fast path."""
    parts: list[str] = []
    signing._canonical._encode(obj, parts)
    return "".join(parts).encode()


@settings(max_examples=200, deadline=None)
@given(json_values(agreeing_text))
def test_agrees_with_securesystemslib(value):
    assert signing.canonical_json(value) == encode_canonical(value).encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(json_values(any_text))
def test_fast_path_equals_general_encoder_and_round_trips(value):
    out = signing.canonical_json(value)
    assert out == general_encoder(value)
    # Decoded as UTF-8 first: json.loads(bytes) guesses the encoding from NUL bytes, and canonical JSON
    # writes a NUL character raw, so '"\x00...' would be read as UTF-16. strict=False: raw control characters.
    assert json.loads(out.decode("utf-8"), strict=False) == value


def test_a_raw_nul_at_the_start_of_a_string_round_trips():
    """The example hypothesis found with the lowest test dependencies: bytes '"\x00' looked like UTF-16."""
    for value in ("\x00\u0100", "\x000"):
        assert json.loads(signing.canonical_json(value).decode("utf-8"), strict=False) == value


@given(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-(2.0**62), max_value=2.0**62).filter(
        lambda f: f == int(f)
    )
)
def test_integral_floats_are_written_as_integers(f):
    assert signing.canonical_json({"n": f}) == b'{"n":%d}' % int(f)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("a\nb\rc\td", b'"a\\nb\\rc\\td"'),  # fioctl escapes these three ...
        ("\x00\x01\x08\x0c\x1f\x7f", b'"\x00\x01\x08\x0c\x1f\x7f"'),  # ... and writes other controls raw
        ('q"b\\', b'"q\\"b\\\\"'),
        ("é☃日本\u2028😀", '"é☃日本\u2028😀"'.encode()),  # non-ASCII raw UTF-8
        ("<>&", b'"<>&"'),
        ({"b": 1, "a": [True, False, None], "": {}}, b'{"":{},"a":[true,false,null],"b":1}'),
        ((1, (2,)), b"[1,[2]]"),
        (OrderedDict([("z", 1), ("a", 2)]), b'{"a":2,"z":1}'),
        ({"\U0001f600": 1, "\uffff": 2, "é": 3, "Z": 4}, '{"Z":4,"é":3,"\uffff":2,"\U0001f600":1}'.encode()),
        (1.0, b"1"),
        (-0.0, b"0"),
        ({"n": 1e15, "m": [2.0]}, b'{"m":[2],"n":1000000000000000}'),
        (1 << 80, b"1208925819614629174706176"),
    ],
)
def test_explicit_encodings(value, expected):
    assert signing.canonical_json(value) == expected


@pytest.mark.parametrize(
    "value, differs",
    [
        ("a\nb", b'"a\nb"'),  # securesystemslib writes \n raw
        ("\t", b'"\t"'),
    ],
)
def test_where_securesystemslib_differs(value, differs):
    assert encode_canonical(value).encode() == differs
    assert signing.canonical_json(value) != differs


def test_securesystemslib_refuses_the_integral_floats_fioctl_writes():
    with pytest.raises(FormatError):
        encode_canonical({"n": 1.0})
    assert signing.canonical_json({"n": 1.0}) == b'{"n":1}'


def test_backslash_before_b_f_u_is_not_taken_for_an_escape():
    assert signing.canonical_json(["\\b\\f\\u0041"]) == b'["\\\\b\\\\f\\\\u0041"]'


@pytest.mark.parametrize(
    "value, message",
    [
        (1.5, "non-integral number 1.5"),
        ({"a": [0.1]}, "non-integral number 0.1"),
        (float("nan"), "non-integral"),
        (float("inf"), "non-integral"),
        (2.0**63, "64-bit"),
        ({1: "a"}, "keys must be strings"),
        ({None: "a"}, "keys must be strings"),
        ({"a": {1, 2}}, "cannot encode a set"),
        (b"bytes", "cannot encode a bytes"),
        ("\ud800", "lone surrogate"),
        ({"\udfff": 1}, "lone surrogate"),
    ],
)
def test_refused_values(value, message):
    with pytest.raises(TufError, match=message):
        signing.canonical_json(value)


def test_circular_and_too_deep_data_are_refused():
    loop: dict = {}
    loop["self"] = loop
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    for value in (loop, [loop], deep):
        with pytest.raises(TufError, match="circular or too deeply nested"):
            signing.canonical_json(value)
