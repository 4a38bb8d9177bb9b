"""Locate the JSON schemas shipped with the package.

In a wheel the schemas live at ``reconciler/schemas`` (pyproject force-includes the
top-level ``schemas/`` there); in a source checkout or an editable install they are
read from the repository's ``schemas/`` directory.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def schema_path(name: str) -> Path:
    for candidate in (_PACKAGE_DIR / "schemas" / name, _PACKAGE_DIR.parent / "schemas" / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"schema {name} is not installed with the reconciler package")


@cache
def load_schema(name: str) -> dict:
    return json.loads(schema_path(name).read_text(encoding="utf-8"))
