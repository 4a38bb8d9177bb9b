"""Property tests: whatever a file holds, the loader answers with specs or ValidationFailed, never a traceback;
and the compiled schema check agrees with jsonschema."""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from reconciler.errors import ValidationFailed
from reconciler.manifest import load
from reconciler.manifest._schema import WaveSchema
from reconciler.resources import load_schema

KEYS = [
    "apiVersion",
    "kind",
    "name",
    "target",
    "tag",
    "factory",
    "sourceTag",
    "expires",
    "expiresAt",
    "prune",
    "phases",
    "complete",
    "cancel",
    "group",
    "limit",
    "uuids",
    "wait",
    "require",
    "updated",
]
MEANINGFUL = [
    "reconciler/v1",
    "Wave",
    "production",
    "canary",
    "24h",
    "1d12h",
    "0s",
    "10%",
    "150%",
    "90%",
    "99.5%",
    "2027-11-22T00:00:00Z",
    "69694f5d-e7ba-5ff7-ab3c-bd601dc2f2a3",
    "uuids/eu.lst",
    "../../x",
    "yes",
    "1.10",
]
VALID = {
    "apiVersion": "reconciler/v1",
    "kind": "Wave",
    "name": "v46",
    "target": 46,
    "tag": "production",
    "prune": [44],
    "phases": [
        {"name": "canary", "group": "canary"},
        {"group": "beta", "limit": "10%", "wait": "24h", "require": {"updated": "90%"}},
        {"group": "eu-emea", "uuids": ["69694f5d-e7ba-5ff7-ab3c-bd601dc2f2a3"], "limit": 5},
    ],
    "complete": {"wait": "48h", "require": {"updated": "98%"}},
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(MEANINGFUL),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8))
structures = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)),
    max_leaves=10,
)
documents = st.one_of(st.dictionaries(keys, structures, max_size=8), structures)

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def outcome(path) -> list:
    """The problems of loading ``path`` (empty when it loads); anything but ValidationFailed escapes."""
    try:
        load([str(path)])
    except ValidationFailed as failure:
        for problem in failure.problems:
            assert problem.line >= 1 and problem.col >= 1 and problem.message
            assert "is not valid under any" not in problem.message  # no raw jsonschema text
        return failure.problems
    return []


@FUZZ
@given(docs=st.lists(documents, min_size=1, max_size=3))
def test_random_yaml_documents_never_escape(scratch, docs):
    path = scratch / "random.yaml"
    path.write_text(yaml.safe_dump_all(docs, allow_unicode=True))
    outcome(path)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _paths(sub, (*prefix, key))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            yield from _paths(sub, (*prefix, index))


def _mutated(data) -> dict:
    """The valid manifest with one to three values replaced, removed, or keys added."""
    doc = copy.deepcopy(VALID)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from([p for p in _paths(doc) if p]))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = data.draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            parent[path[-1]] = data.draw(structures)
        elif action == "remove":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(keys)] = data.draw(structures)
    return doc


@FUZZ
@given(data=st.data())
def test_mutated_manifests_never_escape_and_every_problem_is_placed(scratch, data):
    path = scratch / "mutated.yaml"
    path.write_text(yaml.safe_dump(_mutated(data), allow_unicode=True))
    outcome(path)


@FUZZ
@given(content=st.binary(max_size=300))
def test_random_bytes_never_escape(scratch, content):
    path = scratch / "bytes.yaml"
    path.write_bytes(content)
    outcome(path)


@FUZZ
@given(content=st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#\n\t %@`?,~")), max_size=80))
def test_yaml_punctuation_soup_never_escapes(scratch, content):
    path = scratch / "soup.yaml"
    path.write_text(content)
    outcome(path)


SCHEMA = load_schema("wave.schema.json")
JSONSCHEMA = Draft202012Validator(SCHEMA)
COMPILED = WaveSchema(SCHEMA)


@settings(max_examples=150, deadline=None)
@given(doc=documents)
def test_the_compiled_check_agrees_with_jsonschema_on_random_data(doc):
    assert COMPILED.is_valid(doc) == JSONSCHEMA.is_valid(doc), json.dumps(doc, default=str)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_the_compiled_check_agrees_with_jsonschema_near_valid_manifests(data):
    doc = _mutated(data)
    assert COMPILED.is_valid(doc) == JSONSCHEMA.is_valid(doc), json.dumps(doc, default=str)


def test_the_compiled_check_accepts_the_valid_manifest():
    assert COMPILED.is_valid(VALID) and JSONSCHEMA.is_valid(VALID)
