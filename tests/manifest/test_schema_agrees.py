"""schemas/wave.schema.json says what ``reconcile --check`` says about each single value.

An editor with the schema (YAML language server, check-jsonschema in a pre-commit hook) must flag what
--check refuses, value by value: an inline UUID written upper-case, a wave named '..'. Every manifest
fixture of the tests and examples/, and hostile values, are run through jsonschema itself and through
``reconcile --check``; for every scalar of every document the two verdicts must agree, except for the
rules no schema can state about one value (they span values, files or the calendar), listed below.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from reconciler.cli.reconcile import main
from reconciler.manifest._yaml import Document, YamlPath, position, read_documents

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "schemas" / "wave.schema.json").read_text())
FIXTURES = sorted(
    path
    for path in [
        *(REPO / "tests" / "manifest" / "data").rglob("*.yaml"),
        *(REPO / "examples" / "releases").glob("*.yaml"),
    ]
    if path.name != "not-utf8.yaml"  # not text: no schema reads it
)
# What --check refuses that is not a property of one value: (message fragment, why no schema can say it).
BEYOND_A_SCHEMA = [
    ("must be a real date and time", "a calendar (2027-02-30), not a pattern"),
    ("must be at most 3650d", "the sum of a duration's units"),
    ("prune lists the wave's own target", "two values: prune and target"),
    ("would expire (", "two values: expires and the waits"),
    ("is used twice in this wave", "two phases"),
    ("is already used at", "two waves"),
    ("would both stay active", "two waves"),
    ("uuids file '", "a file's place in the repository"),
]
HOSTILE = """\
apiVersion: reconciler/v1
kind: Wave
name: ..
factory: prod.lock
target: 46
tag: "."
sourceTag: ..
expires: 0d
phases:
  - group: ..
    uuids:
      - 0845BE26-D08A-529D-AD97-6BCC37E36A55
      - demo-000066
      - "{0845be26-d08a-529d-ad97-6bcc37e36a55}"
      - "\\uff10845be26-d08a-529d-ad97-6bcc37e36a55"
      - "0845be26-d08a-529d-ad97-6bcc37e36a5\\u0430"
    require: {updated: 0%, failed: "<0%"}
  - group: .x
    limit: 0%
complete: {wait: 1h, require: {updated: "0.0%", failed: "<00.00%"}}
---
apiVersion: reconciler/v1
kind: Wave
name: x.
factory: .hidden
target: 47
tag: ".."
cancel: true
---
apiVersion: reconciler/v1
kind: Wave
name: ok-name
factory: a..b
target: 48
tag: a+b
expires: 0w0d0h0m0s
complete: true
---
apiVersion: reconciler/v1
kind: Wave
name: short
target: 49
tag: other
expires: 2d
phases:
  - group: beta
    wait: 3d
"""


def leaves(data: object, path: YamlPath = ()) -> Iterator[YamlPath]:
    """The path of every scalar in a document."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from leaves(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from leaves(value, (*path, index))
    else:
        yield path


def schema_refuses(document: Document) -> set[YamlPath]:
    """The scalars jsonschema refuses, however deep in anyOf branches the refusal is."""
    found: set[YamlPath] = set()
    pending = list(Draft202012Validator(SCHEMA).iter_errors(document.data))
    while pending:
        error = pending.pop()
        found.add(tuple(error.absolute_path))
        if error.validator == "uniqueItems":  # --check points at the repeated item
            items = error.instance
            found.add((*error.absolute_path, next(i for i, item in enumerate(items) if item in items[:i])))
        pending += error.context or ()
    return found


def check_refuses(file: Path) -> tuple[set[tuple[int, int]], list[str]]:
    """The line and column of every error ``reconcile --check`` reports in ``file``, and its messages."""
    result = CliRunner().invoke(main, ["--check", file.name])
    assert result.exit_code in (0, 1) and "Traceback" not in result.output, result.output
    where: set[tuple[int, int]] = set()
    messages: list[str] = []
    for line in result.stderr.splitlines():
        match = re.match(rf"{re.escape(file.name)}:(\d+):(\d+): (.*)", line)
        if match and not match.group(3).startswith("warning"):
            where.add((int(match.group(1)), int(match.group(2))))
            messages.append(line)
    return where, messages


def disagreements(file: Path) -> list[str]:
    refused_by_check, messages = check_refuses(file)
    documents, _ = read_documents(file.read_text(encoding="utf-8", errors="replace"), file.name)
    found = []
    for document in documents:
        by_schema = schema_refuses(document)
        for path in leaves(document.data):
            line, col = position(document.node_at(path))
            by_check = (line, col) in refused_by_check
            if by_check == (path in by_schema):
                continue
            said = [m for m in messages if m.startswith(f"{file.name}:{line}:{col}: ")]
            if by_check and all(any(f in m for f, _ in BEYOND_A_SCHEMA) for m in said):
                continue
            found.append(f"{file.name}:{line}:{col} {path}: schema {'accepts' if by_check else 'refuses'}; {said}")
    return found


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_schema_and_check_agree_on_every_value_of_the_fixtures(fixture, monkeypatch):
    monkeypatch.chdir(fixture.parent)
    assert disagreements(fixture) == []


def test_the_schema_and_check_agree_on_hostile_values(tmp_path, monkeypatch):
    (tmp_path / "hostile.yaml").write_text(HOSTILE)
    monkeypatch.chdir(tmp_path)
    assert disagreements(tmp_path / "hostile.yaml") == []
    by_schema = set().union(*(schema_refuses(d) for d in read_documents(HOSTILE, "h")[0]))
    assert {("name",), ("factory",), ("tag",), ("phases", 0, "uuids", 0), ("phases", 0, "uuids", 4)} <= by_schema


def test_every_exception_is_still_needed(tmp_path, monkeypatch):
    """Each rule beyond a schema is met by a fixture or the hostile file, so the list hides nothing for long."""
    (tmp_path / "hostile.yaml").write_text(HOSTILE)
    said = []
    for file in [*FIXTURES, tmp_path / "hostile.yaml"]:
        monkeypatch.chdir(file.parent)
        said += check_refuses(file)[1]
    assert [f for f, _ in BEYOND_A_SCHEMA if f not in "\n".join(said)] == []
