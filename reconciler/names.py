"""The names a manifest and ``reconcile-factory init`` accept for waves, groups, tags and factories.

One place for the rules, because two sides that must not import each other apply them: the manifest
loader (and schemas/wave.schema.json, whose patterns are these, checked by a test) refuses a bad name
at its manifest line, and the local factory refuses it at ``reconcile-factory init --name``.

Where a name goes decides what it may be. The API's characters first: fioctl puts wave, group, tag
and factory names into URL paths unescaped and the server checks them (Foundries' open-source
servers allow ``^[a-zA-Z0-9_\\-\\.]+$``, tags also ``+``: reference/foundries-api.md
§5.3), at most 100 characters (the local factory's bound; no source states one). Then the path: as
a URL path segment, ``.`` and ``..`` are not names but steps (httpx, like every client following
RFC 3986, removes dot segments), so a wave named ``..`` would be created and then addressed as
another path: ``cancel`` would get 404 and the tag stay held. Then git: the factory name is a
component of the apply lease's ref ``refs/reconcile/locks/<factory>``, so it must be a component git
accepts (``ref_component_problem``, the rules of ``git check-ref-format``).
"""

from __future__ import annotations

import re
from enum import Enum

from reconciler.safetext import code_point

MAX_LENGTH = 100
_WORDS = "letters, digits, '_', '.' and '-'"
_TAG_WORDS = "letters, digits, '_', '.', '+' and '-'"
_DOTS = r"(?!\.\.?$)"  # not a dot segment
# A git ref component (one without '/'), as git's refs.c check_refname_component reads it.
_GIT_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


class NameKind(Enum):
    """What a name names; each kind has its characters and its further rules."""

    WAVE = "wave name"
    GROUP = "device group name"
    TAG = "tag"
    FACTORY = "factory name"

    @property
    def characters(self) -> str:
        """The allowed characters as a regular-expression class."""
        return "[a-zA-Z0-9_.+-]" if self is NameKind.TAG else "[a-zA-Z0-9_.-]"

    @property
    def pattern(self) -> str:
        """The whole rule as a regular expression that Python and JSON Schema (ECMA 262) read alike."""
        if self is NameKind.FACTORY:  # a git ref component: no leading '.', no '..', no trailing '.' or '.lock'
            return rf"^(?!\.)(?!.*\.\.)(?!.*\.lock$)(?!.*\.$){self.characters}+$"
        return rf"^{_DOTS}{self.characters}+$"

    @property
    def allowed(self) -> str:
        return _TAG_WORDS if self is NameKind.TAG else _WORDS

    @property
    def example(self) -> str:
        return {"WAVE": "rel-46", "GROUP": "canary", "TAG": "production", "FACTORY": "acme-prod"}[self.name]


def problem(kind: NameKind, name: str) -> str | None:
    """What is wrong with ``name`` as a ``kind``, completing "<name> ...", with what is allowed and how
    to fix it; None when it is fine."""
    fix = f"use 1-{MAX_LENGTH} {kind.allowed}, e.g. {kind.example}"
    if not name:
        return f"must not be empty; {fix}"
    outside = re.compile(kind.characters)
    for index, char in enumerate(name):
        if not outside.fullmatch(char):
            return f"must not contain {code_point(char)} (character {index + 1}); {fix}"
    if len(name) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters long, got {len(name):,}; {fix}"
    if name in (".", ".."):
        return (
            f"must not be '{name}': the {kind.value} is a segment of the factory's URL paths, where '{name}' "
            f"means {'this' if name == '.' else 'the parent'} directory, so requests for it would reach another "
            f"path; add letters or digits, e.g. {kind.example}"
        )
    if kind is NameKind.FACTORY:
        reason = ref_component_problem(name)
        if reason is not None:
            return (
                f"{reason}: the factory name is a component of the git ref refs/reconcile/locks/<factory> (the "
                f"apply lease), and git refuses it; {fix}, not starting or ending with '.', without '..' and not "
                f"ending in '.lock'"
            )
    return None


def ref_component_problem(component: str) -> str | None:
    """Why git refuses ``component`` as one component of a ref name (``git check-ref-format``), or None.

    The rules of git's refs.c for a component without '/': not empty, not starting with '.', no
    '..', no '@{', no control character, space, ``~ ^ : ? * [ \\``, not ending with '.lock' or '.',
    and the whole name not '@'."""
    if not component:
        return "must not be empty"
    found = _GIT_FORBIDDEN.search(component)
    if found is not None:
        return f"must not contain {code_point(found.group())}"
    if "/" in component:
        return "must not contain '/'"
    if component.startswith("."):
        return "must not start with '.'"
    if ".." in component:
        return "must not contain '..'"
    if "@{" in component:
        return "must not contain '@{'"
    if component == "@":
        return "must not be '@'"
    if component.endswith(".lock"):
        return "must not end with '.lock'"
    if component.endswith("."):
        return "must not end with '.'"
    return None
