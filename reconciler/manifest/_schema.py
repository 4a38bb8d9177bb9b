"""Checking a document against schemas/wave.schema.json, with messages written for people.

Two validators come from the one schema file. jsonschema is the authority and explains
every failure, but it costs about a millisecond per document (and 50 ms to import), too
slow for a release repository of a thousand manifests on every push. So the schema is
also compiled into plain Python predicates that answer "valid or not" in microseconds;
jsonschema is imported and run only for documents the predicate rejects. The predicate may reject a valid document
(then jsonschema simply finds nothing), never accept an invalid one; tests check this.

jsonschema's own messages (``'grup' was unexpected``, ``{...} is not valid under any of
the given schemas``) are replaced: each schema node can carry an ``errorMessage`` (the
keyword YAML editors show too), and the generic cases get sentences naming the key.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import yaml

from reconciler import names
from reconciler.errors import MAX_SHOWN, Problem, Problems
from reconciler.manifest._uuids import PATTERN as UUID_PATTERN
from reconciler.manifest._uuids import invalid_message
from reconciler.manifest._values import parse_failure_bound
from reconciler.manifest._yaml import Document, YamlPath
from reconciler.names import NameKind
from reconciler.resources import JsonSchema, load_schema
from reconciler.safetext import code_point

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

Predicate = Callable[[object], bool]

_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description", "default", "examples", "errorMessage"}
_OWN_MESSAGE = {"type", "const", "pattern", "anyOf", "oneOf", "not", "minLength"}  # where errorMessage applies
# What the factory accepts, and so what schemas/wave.schema.json allows (names are sent unescaped in
# URL paths, /work/shared/reference/foundries-api.md §1.1): fioctl validates no names itself, the
# server does (fioctl:subcommands/waves/rollout.go#L52-53). Foundries' open-source servers use
# ^[a-zA-Z0-9_\-\.\+]+$ for tags and ^[a-zA-Z0-9_\-\.]+$ for update and rollout names
# (foundriesio/dg-satellite server/ui/api/handlers_rollouts.go, validTagRegex/validUpdateRegex; the
# reference's §5.3). No source states a maximum length; the local factory, stricter where the reference
# is silent, takes 1-100 characters for wave, tag, group and factory names (localfactory/waves.py
# NAME_RE/TAG_RE, groups.py GROUP_NAME_RE), so the schema says maxLength 100 and a longer name fails
# --check instead of the init. Groups follow the name pattern, as the local factory's groups do.
MAX_EXPLAINED = 4 * MAX_SHOWN  # schema problems explained per document; past them only a lower bound
# A pattern of one character class, after lookaheads if any: ^[a-zA-Z0-9_.-]+$, ^(?!\.\.?$)[a-zA-Z0-9_.-]+$
_CHARACTER_CLASS = re.compile(r"\^(?:\(\?![^)]*\))*(\[[^\]]+\])\+\$")
# The names whose pattern is one of names.py's rules; a value failing only the rule's further parts (a dot
# segment, a git ref component) is explained by names.problem.
_NAME_KINDS = {
    "name": NameKind.WAVE,
    "group": NameKind.GROUP,
    "tag": NameKind.TAG,
    "sourceTag": NameKind.TAG,
    "factory": NameKind.FACTORY,
}
# The values of the right shape that a "not" refuses (a bound below 0%): the loader's parser words it.
_PARSERS: dict[str, Callable[[str], object]] = {"failed": parse_failure_bound}
_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "empty",
}


class WaveSchema:
    """The wave schema, loaded and compiled once per process."""

    def __init__(self, schema: JsonSchema | None = None):
        self.schema = schema if schema is not None else load_schema("wave.schema.json")
        self.is_valid: Predicate = _Compiler(self.schema).compile(self.schema)
        self._validator: Draft202012Validator | None = (
            None  # imported when a document first fails: valid runs never pay
        )

    def _errors(self, data: object) -> Iterator[ValidationError]:
        """jsonschema's errors one at a time: 20,000 bad phases must not be held in memory at once."""
        if self._validator is None:
            from jsonschema import Draft202012Validator

            self._validator = Draft202012Validator(self.schema)
        errors: Iterator[ValidationError] = self._validator.iter_errors(data)
        return errors

    def check(self, document: Document) -> tuple[Problems, set[YamlPath]]:
        """The document's schema violations, each at its own line and column (the first
        ``errors.MAX_SHOWN`` kept, the others counted), and the paths of the values found wrong
        (later checks leave those alone).

        jsonschema explains a violation in about a millisecond, so a flood (20,000 bad phases)
        is explained only up to MAX_EXPLAINED problems; the count is then marked a lower bound.
        """
        found = Problems()
        if self.is_valid(document.data):
            return found, set()
        if _quote_plain_scalars(self.schema, document) and self.is_valid(document.data):
            return found, set()
        seen: set[tuple[int, int, str]] = set()  # so a problem two errors explain alike is counted once
        flagged: set[YamlPath] = set()
        for error in self._errors(document.data):
            if len(seen) >= MAX_EXPLAINED:
                found.incomplete = True
                break
            for path, problem in self._explain(error, document):
                if problem is None:  # a problem too far down the list to be worth building
                    flagged.add(path)
                    found.skip(1)
                    continue
                if id(document.node_at(path)) in document.rejected:
                    continue  # reading the YAML already reported this value
                flagged.add(path)
                key = (problem.line, problem.col, problem.message)
                if key not in seen:
                    seen.add(key)
                    found.append(problem)
        return found, flagged

    def _explain(self, error: ValidationError, document: Document) -> list[tuple[YamlPath, Problem | None]]:
        path: YamlPath = tuple(error.absolute_path)
        instance = error.instance
        keyword = error.validator
        if keyword == "additionalProperties":
            # Only the first MAX_SHOWN unknown keys (file order) can be shown; the others are counted
            # without a message, so 100,000 of them cost no suggestions and no Problem objects.
            allowed = sorted(error.schema.get("properties", {}))
            unknown = (key for key in instance if key not in allowed)
            return [
                (
                    (*path, key),
                    document.problem(document.key_node(path, key), _unknown_key(key, allowed))
                    if index < MAX_SHOWN
                    else None,
                )
                for index, key in enumerate(unknown)
            ]
        if keyword == "required":
            subject = f"{_name(path, document.data)} is missing" if path else "missing"
            return [
                (path, document.problem(document.node_at(path), f"{subject} required key '{key}'"))
                for key in error.validator_value
                if key not in instance
            ]
        if keyword in ("anyOf", "oneOf") and isinstance(instance, (dict, list)):
            branch = self._branch_for(error)
            if branch is not None:
                return [
                    explained
                    for sub in error.context or ()
                    if sub.relative_schema_path[0] == branch
                    for explained in self._explain(sub, document)
                ]
        message = _sentence(error, _name(path, document.data))
        if keyword == "uniqueItems":  # at the repeated entry
            node = document.node_at((*path, _first_repeat(instance)))
        elif isinstance(instance, (dict, list)) and path and isinstance(path[-1], str):
            node = document.key_node(path[:-1], path[-1])  # `complete:` rather than the line below it
        else:
            node = document.node_at(path)
        return [(path, document.problem(node, message))]

    def _branch_for(self, error: ValidationError) -> int | None:
        """The one anyOf/oneOf branch whose type matches the instance (its errors are the useful ones)."""
        kind = "object" if isinstance(error.instance, dict) else "array"
        matches = [
            index
            for index, branch in enumerate(error.validator_value)
            if _resolve(self.schema, branch).get("type") == kind
        ]
        return matches[0] if len(matches) == 1 else None


def _sentence(error: ValidationError, name: str) -> str:
    keyword, value, instance = error.validator, error.validator_value, error.instance
    own = error.schema.get("errorMessage") if keyword in _OWN_MESSAGE else None
    if keyword == "maxLength":
        return f"{name} must be at most {value} characters long, got {len(instance):,}"
    if own:
        parse = _PARSERS.get(str(error.absolute_path[-1]) if error.absolute_path else "")
        if keyword == "not" and parse is not None and isinstance(instance, str):
            try:
                parse(instance)
            except ValueError as problem:  # the loader's own words, so a schema and a loader refusal read alike
                return f"{name} {problem}"
        if not own.startswith("must") or keyword == "not":  # the message says what the value may not be
            return f"{name} {own}"
        if keyword != "pattern":
            return f"{name} {own}, got {describe(instance)}"
        if value == UUID_PATTERN:  # the UUID lists' own message, the same for an inline list and a file
            return invalid_message(instance)
        outside = _first_outside(error)
        kind = _NAME_KINDS.get(str(error.absolute_path[-1]) if error.absolute_path else "")
        if not outside and kind is not None and kind.pattern == value:
            return f"{name} {names.problem(kind, instance)}"
        return f"{name} {own}, got {describe(instance)}{outside}"
    if keyword == "type":
        expected = " or ".join(_TYPE_WORDS.get(kind, kind) for kind in ([value] if isinstance(value, str) else value))
        return f"{name} must be {expected}, got {describe(instance)}"
    if keyword == "minimum":
        return f"{name} must be at least {value}, got {describe(instance)}"
    if keyword == "maximum":
        return f"{name} must be at most {value}, got {describe(instance)}"
    if keyword in ("minItems", "minLength"):
        return f"{name} must not be empty"
    if keyword == "uniqueItems":
        return f"{name} lists {describe(instance[_first_repeat(instance)])} more than once"
    if keyword == "const":
        return f"{name} must be {describe(value)}, got {describe(instance)}"
    if keyword == "pattern":
        return f"{name} must match {value}, got {describe(instance)}"
    return f"{name} is not valid ({keyword})"


def _first_outside(error: ValidationError) -> str:
    """For a value failing a one-character-class pattern: which character is not allowed, by code
    point, so a look-alike (``v46а``, with a Cyrillic a) or an invisible character is found at once."""
    character_class = _CHARACTER_CLASS.fullmatch(error.validator_value)
    if character_class is None or not isinstance(error.instance, str):
        return ""
    allowed = re.compile(character_class.group(1))
    for index, char in enumerate(error.instance):
        if not allowed.fullmatch(char):
            return f": {code_point(char)} (character {index + 1}) is not allowed"
    return ""


def _first_repeat(items: list[object]) -> int:
    return next((index for index, item in enumerate(items) if item in items[:index]), 0)


def kind_of(value: object) -> str:
    """A value's kind without its content: ``a string``, ``a list``."""
    if isinstance(value, bool):
        return "true or false"
    if value is None:
        return "an empty value"
    kind = {dict: "object", list: "array", int: "integer"}.get(type(value), "string")
    return _TYPE_WORDS[kind]


def describe(value: object) -> str:
    """A YAML value as a message shows it: short, and never the whole of a big structure."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "an empty value"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int):
        text = str(value)
        return text if len(text) <= 20 else text[:17] + "..."
    text = str(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _name(path: YamlPath, data: object) -> str:
    """How a message names the value at ``path``: its key, ``phase 'beta'``, or ``prune[1]``."""
    if not path:
        return "the document"
    last = path[-1]
    if isinstance(last, str):
        return last
    parent = path[-2] if len(path) > 1 else ""
    if parent == "phases":
        phase = data.get("phases", [])[last] if isinstance(data, dict) else None
        name = phase.get("name") if isinstance(phase, dict) else None
        return f"phase '{name}'" if isinstance(name, str) else f"phase {last + 1}"
    return f"{parent}[{last}]"


def _unknown_key(key: str, allowed: list[str]) -> str:
    lowered = {name.lower(): name for name in allowed}
    close = difflib.get_close_matches(key.lower(), list(lowered), n=1, cutoff=0.6)
    hint = f" (did you mean '{lowered[close[0]]}'?)" if close else ""
    shown = key if len(key) <= 40 else key[:37] + "..."
    return f"unknown key '{shown}'{hint}; allowed keys: {', '.join(allowed)}"


def _quote_plain_scalars(root: JsonSchema, document: Document) -> bool:
    """Read unquoted numbers and booleans as the text they are where the schema wants a string.

    ``name: 2024`` and ``group: 10`` mean the strings; YAML made them numbers. Returns
    whether anything changed (then the document is checked again). The schema is walked
    along the data (``properties``, ``items``, ``$ref``) rather than read from jsonschema's
    errors, which cost a millisecond each in a document with thousands of them.
    """
    changed = False
    pending: list[tuple[YamlPath, object, JsonSchema | bool]] = [((), document.data, root)]
    while pending:
        path, value, schema = pending.pop()
        schema = _resolve(root, schema)
        if isinstance(value, dict):
            properties = schema.get("properties", {})
            for key, item in value.items():
                if key in properties:
                    pending.append(((*path, key), item, properties[key]))
        elif isinstance(value, list):
            if "items" in schema:
                pending += [((*path, index), item, schema["items"]) for index, item in enumerate(value)]
        elif schema.get("type") == "string" and isinstance(value, (int, bool)) and path:
            node = document.node_at(path)
            if isinstance(node, yaml.ScalarNode) and not node.style:  # plain: '' from libyaml
                parent: Any = document.data
                for part in path[:-1]:
                    parent = parent[part]
                parent[path[-1]] = node.value
                changed = True
    return changed


def _resolve(root: JsonSchema, schema: JsonSchema | bool) -> JsonSchema:
    """Follow a local ``$ref`` (the schema uses only ``#/$defs/...``)."""
    while isinstance(schema, dict) and "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = target
    return schema if isinstance(schema, dict) else {}


# The keywords that constrain one kind of value each (any other kind passes them), compiled together.
_STRING_KEYWORDS = ("pattern", "minLength", "maxLength")
_NUMBER_KEYWORDS = ("minimum", "maximum")
_ARRAY_KEYWORDS = ("items", "minItems", "uniqueItems")
_OBJECT_KEYWORDS = ("required", "properties", "additionalProperties")
_OTHER_KEYWORDS = ("type", "$ref", "const", "anyOf", "allOf", "not", "if", "then", "else")


class _Compiler:
    """Compiles the subset of JSON Schema 2020-12 the wave schema uses into predicates.

    Any other keyword raises at start-up, so the schema cannot silently outgrow it. The keywords
    of one kind of value (a string's pattern and lengths, an object's required keys and properties)
    become one function that tests the value's type once, with ``type`` folded in when it names
    that kind: a manifest has about 70 values, each checked by one or two calls rather than one
    per keyword. Loops are plain ``for`` statements: generator expressions cost more than the checks.
    """

    def __init__(self, root: JsonSchema):
        self.root = root

    def compile(self, schema: JsonSchema | bool) -> Predicate:
        if schema is False:
            return lambda value: False
        if schema is True:
            return lambda value: True
        kinds = (_STRING_KEYWORDS, _NUMBER_KEYWORDS, _ARRAY_KEYWORDS, _OBJECT_KEYWORDS, _OTHER_KEYWORDS)
        for keyword, value in schema.items():
            if keyword not in _ANNOTATIONS and not any(keyword in kind for kind in kinds):
                raise ValueError(f"wave schema: keyword {keyword!r} with {value!r} is not supported by the fast check")
        kind = schema.get("type")
        checks: list[Predicate] = []
        folded = False  # whether one of the checks below tests the type too
        if any(keyword in schema for keyword in _STRING_KEYWORDS):
            folded |= kind == "string"
            checks.append(_string(schema, strict=kind == "string"))
        if any(keyword in schema for keyword in _NUMBER_KEYWORDS):
            folded |= kind == "integer"
            checks.append(_number(schema, integer=kind == "integer"))
        if any(keyword in schema for keyword in _ARRAY_KEYWORDS):
            folded |= kind == "array"
            items = self.compile(schema["items"]) if "items" in schema else None
            checks.append(_array(schema, items, strict=kind == "array"))
        if any(keyword in schema for keyword in _OBJECT_KEYWORDS):
            folded |= kind == "object"
            properties = {key: self.compile(sub) for key, sub in schema.get("properties", {}).items()}
            checks.append(_object(schema, properties, strict=kind == "object"))
        if kind is not None and not folded:
            checks.insert(0, _TYPE_CHECKS[kind])
        checks += self._others(schema)
        return _all_of(checks)

    def _others(self, schema: JsonSchema) -> list[Predicate]:
        """The keywords that are not about one kind of value: references, constants, combinations."""
        checks: list[Predicate] = []
        if "$ref" in schema:
            checks.append(self.compile(_resolve(self.root, schema)))
        if "const" in schema:
            checks.append(_const(schema["const"]))
        if "anyOf" in schema:
            checks.append(_any_of([self.compile(sub) for sub in schema["anyOf"]]))
        if "allOf" in schema:
            checks.append(_all_of([self.compile(sub) for sub in schema["allOf"]]))
        if "not" in schema:
            negated = self.compile(schema["not"])
            checks.append(lambda instance: not negated(instance))
        if "if" in schema:
            condition = self.compile(schema["if"])
            then = self.compile(schema.get("then", True))
            otherwise = self.compile(schema.get("else", True))
            checks.append(lambda instance: then(instance) if condition(instance) else otherwise(instance))
        return checks


def _const(value: object) -> Predicate:
    if isinstance(value, bool):
        return lambda instance: instance is value
    if isinstance(value, str):
        return lambda instance: isinstance(instance, str) and instance == value
    raise ValueError(f"wave schema: const {value!r} is not supported by the fast check")


def _string(schema: JsonSchema, *, strict: bool) -> Predicate:
    """pattern, minLength and maxLength; ``strict``: the value must be a string (``type: string``)."""
    shortest, longest = schema.get("minLength", 0), schema.get("maxLength", math.inf)
    search = re.compile(schema["pattern"]).search if "pattern" in schema else None

    def string(instance: object) -> bool:
        if not isinstance(instance, str):
            return not strict
        return shortest <= len(instance) <= longest and (search is None or search(instance) is not None)

    return string


def _number(schema: JsonSchema, *, integer: bool) -> Predicate:
    """minimum and maximum; ``integer``: the value must be an integer (``type: integer``)."""
    low: float = schema.get("minimum", -math.inf)
    high: float = schema.get("maximum", math.inf)

    def number(instance: object) -> bool:
        if isinstance(instance, bool) or not isinstance(instance, (int, float)):
            return not integer
        if integer and isinstance(instance, float) and not instance.is_integer():
            return False
        return low <= instance <= high

    return number


def _array(schema: JsonSchema, items: Predicate | None, *, strict: bool) -> Predicate:
    """items, minItems and uniqueItems; ``strict``: the value must be a list (``type: array``)."""
    fewest, unique = schema.get("minItems", 0), schema.get("uniqueItems", False)

    def array(instance: object) -> bool:
        if not isinstance(instance, list):
            return not strict
        if len(instance) < fewest or (unique and not _unique_items(instance)):
            return False
        if items is not None:
            for item in instance:
                if not items(item):
                    return False
        return True

    return array


def _object(schema: JsonSchema, properties: dict[str, Predicate], *, strict: bool) -> Predicate:
    """required, properties and additionalProperties (false only); ``strict``: the value must be a
    mapping (``type: object``)."""
    required = tuple(schema.get("required", ()))
    closed = schema.get("additionalProperties", True)
    if closed not in (True, False):
        raise ValueError(f"wave schema: additionalProperties {closed!r} is not supported by the fast check")
    allowed = frozenset(properties) if closed is False else None

    def mapping(instance: object) -> bool:
        if not isinstance(instance, dict):
            return not strict
        for key in required:
            if key not in instance:
                return False
        if allowed is not None and not allowed.issuperset(instance):
            return False
        if properties:
            for key, value in instance.items():
                check = properties.get(key)
                if check is not None and not check(value):
                    return False
        return True

    return mapping


def _all_of(checks: list[Predicate]) -> Predicate:
    if not checks:
        return lambda instance: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda instance: first(instance) and second(instance)

    def all_of(instance: object) -> bool:
        for check in checks:  # noqa: SIM110 - all() of a generator costs more than the checks
            if not check(instance):
                return False
        return True

    return all_of


def _any_of(checks: list[Predicate]) -> Predicate:
    def any_of(instance: object) -> bool:
        for check in checks:  # noqa: SIM110 - as in _all_of
            if check(instance):
                return True
        return False

    return any_of


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _unique_items(instance: list[object]) -> bool:
    try:
        return len(set(instance)) == len(instance)
    except TypeError:  # unhashable items: let jsonschema decide
        return False


_TYPE_CHECKS: dict[str, Predicate] = {
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "string": lambda value: isinstance(value, str),
    "boolean": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
    "number": _is_number,
    "integer": lambda value: (
        (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())
    ),
}
