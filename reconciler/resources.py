"""Locate the files shipped with the package: the JSON schemas and the release workflow template.

In a wheel the schemas live at ``reconciler/schemas`` and the workflow at
``reconciler/templates/release.yml`` (pyproject force-includes them there); in a source
checkout or an editable install they are read from the repository's ``schemas/`` and
``examples/workflows/``.
"""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Any

# Paths with os.path, not pathlib: every run loads a schema, and pathlib (with urllib.parse) is 9 ms of
# a --check's imports that nothing else in it needs.
_PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__))
_CHECKOUT_DIR = os.path.dirname(_PACKAGE_DIR)

JsonSchema = dict[str, Any]  # a JSON Schema document as json.loads gives it


def schema_path(name: str) -> str:
    for candidate in (os.path.join(_PACKAGE_DIR, "schemas", name), os.path.join(_CHECKOUT_DIR, "schemas", name)):
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"schema {name} is not installed with the reconciler package")


def workflow_template_path() -> str:
    """The example release workflow, which ``reconcile init-repo`` copies into a new repository."""
    for candidate in (
        os.path.join(_PACKAGE_DIR, "templates", "release.yml"),
        os.path.join(_CHECKOUT_DIR, "examples", "workflows", "release.yml"),
    ):
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError("the release workflow template is not installed with the reconciler package")


def read_text(path: str) -> str:
    """A file shipped with the package, as UTF-8 text."""
    with open(path, encoding="utf-8") as file:
        return file.read()


@cache
def load_schema(name: str) -> JsonSchema:
    schema: JsonSchema = json.loads(read_text(schema_path(name)))
    return schema
