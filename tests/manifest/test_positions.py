"""Positions found without a walk from the root (``Document.nodes_of``, ``Document.nodes_at``) are the
very nodes ``node_at`` finds, so every ``file:line:col`` stays what the walk gave: duplicate keys,
refused keys and values, aliases and flow or block style included."""

from __future__ import annotations

import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core import Location
from reconciler.manifest import load
from reconciler.manifest._yaml import Document, YamlPath, position, read_documents

KEYS = ["a", "b", "name", "phases", '"a"', '"k\\n"', "'b'"]  # repeated, quoted, refused (a newline)
SCALARS = ["x", "1", "true", "~", '"q"', "'s'", '"\\e[31m"', "!!int 7", "!!str 8"]


@st.composite
def flow_yaml(draw: st.DrawFn, depth: int = 0, anchors: list[str] | None = None) -> str:
    """A YAML value in flow style, line breaks between items, anchors and aliases to earlier anchors."""
    anchors = [] if anchors is None else anchors
    kinds = ["scalar"] + (["map", "list"] if depth < 3 else []) + (["alias"] if anchors else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "scalar":
        return draw(st.sampled_from(SCALARS))
    if kind == "alias":
        return "*" + draw(st.sampled_from(anchors))
    anchor = ""
    if draw(st.booleans()):
        name = f"n{len(anchors)}"
        anchor = f"&{name} "
    if kind == "map":
        items = [
            f"{draw(st.sampled_from(KEYS))}: {draw(flow_yaml(depth + 1, anchors))}"
            for _ in range(draw(st.integers(0, 4)))
        ]
        text = "{" + ",".join(draw(st.sampled_from([" ", "\n  ", "\n"])) + item for item in items) + "}"
    else:
        items = [draw(flow_yaml(depth + 1, anchors)) for _ in range(draw(st.integers(0, 4)))]
        text = "[" + ",".join(draw(st.sampled_from([" ", "\n  ", "\n"])) + item for item in items) + "]"
    if anchor:
        anchors.append(anchor[1:-1])  # usable after its node, as YAML requires
    return anchor + text


def walk(value: object, path: YamlPath = ()) -> list[tuple[YamlPath, object]]:
    """Every mapping and list of ``data`` with its path."""
    found: list[tuple[YamlPath, object]] = []
    if isinstance(value, dict):
        found.append((path, value))
        for key, item in value.items():
            found += walk(item, (*path, key))
    elif isinstance(value, list):
        found.append((path, value))
        for index, item in enumerate(value):
            found += walk(item, (*path, index))
    return found


def check_document(document: Document) -> None:
    for path, value in walk(document.data):
        parts: list[str | int] = list(value) if isinstance(value, dict) else list(range(len(value)))
        assert document.nodes_at(path, parts) == [document.node_at((*path, part)) for part in parts]
        if isinstance(value, dict):
            node, values = document.nodes_of(value)
            assert node is document.node_at(path)
            assert values.keys() == value.keys()
            for key in value:
                assert values[key] is document.node_at((*path, key))


@settings(max_examples=300, deadline=None)
@given(body=flow_yaml())
def test_positions_found_directly_are_those_of_the_walk_from_the_root(body):
    documents, _ = read_documents(f"top: {body}\nother: [1, 2]\ntop: again\n", "f.yaml")
    for document in documents:
        check_document(document)


def test_nodes_at_below_a_missing_path_stops_where_node_at_stops():
    (document,), _ = read_documents("a: {b: [1, {c: 2}]}\n", "f.yaml")
    for path in [("x",), ("a", "x"), ("a", "b", 5), ("a", "b", "c"), ("a", "b", 0)]:
        assert document.nodes_at(path, ["c", 0]) == [document.node_at((*path, "c")), document.node_at((*path, 0))]


MANIFEST = textwrap.dedent(
    """\
    apiVersion: reconciler/v1
    kind: Wave
    name: v46
    target: 46
    tag: production
    prune: [44,
      45]
    expires: 365d
    phases:
      - &first {name: canary, group: canary,
          limit: 10}
      -   name: beta
          group: beta
          uuids: [123e4567-e89b-12d3-a456-426614174000,
                  123e4567-e89b-12d3-a456-426614174001]
          require: {failed: "<2%"}
    onFailure: cancel
    complete:
      wait: 1h
    """
)


def test_a_waves_positions_are_those_of_its_values(tmp_path, monkeypatch):
    """The spec's positions, phases' positions and inline UUIDs' lines, against the walk from the root."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "v46.yaml").write_text(MANIFEST)
    (spec,) = load(["v46.yaml"]).specs
    (document,), _ = read_documents(MANIFEST, "v46.yaml")

    def at(*path: str | int) -> Location:
        return Location("v46.yaml", *position(document.node_at(path)))

    assert spec.positions == {key: at(key) for key in ("target", "tag", "prune", "expires", "phases", "onFailure")}
    assert spec.positions["prune"] == Location("v46.yaml", 6, 8)
    canary, beta = spec.phases
    assert canary.location == at("phases", 0) == Location("v46.yaml", 10, 5)  # at its anchor
    assert canary.positions == {"group": at("phases", 0, "group"), "limit": at("phases", 0, "limit")}
    assert canary.positions["limit"] == Location("v46.yaml", 11, 14)
    assert beta.location == at("phases", 1)
    assert beta.positions == {"group": at("phases", 1, "group"), "uuids": at("phases", 1, "uuids")}
    assert list(beta.uuid_locations or ()) == [at("phases", 1, "uuids", 0), Location("v46.yaml", 15, 15)]
    assert beta.gate.failed is not None and beta.gate.failed.location == at("phases", 1, "require", "failed")
