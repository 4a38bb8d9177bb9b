"""Locate the files shipped with the package: the JSON schemas and the release workflow template.

In a wheel the schemas live at ``reconciler/schemas`` and the workflow at
``reconciler/templates/release.yml`` (pyproject force-includes them there); in a source
checkout or an editable install they are read from the repository's ``schemas/`` and
``examples/workflows/``.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

_PACKAGE_DIR = Path(__file__).resolve().parent

JsonSchema = dict[str, Any]  # a JSON Schema document as json.loads gives it


def schema_path(name: str) -> Path:
    for candidate in (_PACKAGE_DIR / "schemas" / name, _PACKAGE_DIR.parent / "schemas" / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"schema {name} is not installed with the reconciler package")


def workflow_template_path() -> Path:
    """The example release workflow, which ``reconcile init-repo`` copies into a new repository."""
    for candidate in (
        _PACKAGE_DIR / "templates" / "release.yml",
        _PACKAGE_DIR.parent / "examples" / "workflows" / "release.yml",
    ):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("the release workflow template is not installed with the reconciler package")


@cache
def load_schema(name: str) -> JsonSchema:
    schema: JsonSchema = json.loads(schema_path(name).read_text(encoding="utf-8"))
    return schema
