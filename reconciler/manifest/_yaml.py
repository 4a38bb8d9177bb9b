"""YAML documents as plain data plus the node tree, so every value keeps its position.

Why not ``yaml.safe_load``: it forgets positions, keeps the last of two duplicate keys
silently, and resolves scalars the YAML 1.1 way (``yes`` becomes a bool, ``2027-01-01``
a date, ``1.10`` the float 1.1). Manifests are read the YAML 1.2 way instead: only
``true``/``false`` are booleans, only ``null``/``~``/empty are null, integers are
integers, and everything else stays a string (there are no floats in the language).
libyaml does the scanning and composing; building the data from the nodes is our own
small walk, which is also where duplicate keys, unsupported tags, recursive aliases and
alias bombs are caught.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import yaml

from reconciler.errors import Problem, Problems, Severity
from reconciler.safetext import code_point, unsafe_character

_CORE = "tag:yaml.org,2002:"
_STR, _INT, _BOOL, _NULL, _SEQ, _MAP = (_CORE + kind for kind in ("str", "int", "bool", "null", "seq", "map"))
_WORDS = dict.fromkeys(("", "~", "null", "Null", "NULL"), _NULL) | dict.fromkeys(
    ("true", "True", "TRUE", "false", "False", "FALSE"), _BOOL
)
_INTEGER = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")  # YAML 1.2 core schema
_DECIMAL = re.compile(r"[-+]?[0-9]+")
_Scalar, _Mapping = yaml.ScalarNode, yaml.MappingNode

YamlPath = tuple[str | int, ...]  # mapping keys and list indexes from a document's root down to one value


class _Loader(yaml.CSafeLoader):
    """libyaml's parser with YAML 1.2 core-schema resolution and no floats or dates."""

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: Any) -> str:
        """The tag of a node; libyaml calls this for every node, so it is a dict lookup and a regex.

        ``value`` is a scalar's text and ``implicit`` its (plain, quoted) flags; a collection gives
        None and one flag. Both stay ``Any`` (the stubs leave them untyped) so that this hot path
        needs no narrowing.
        """
        if kind is _Scalar:
            if implicit[0]:  # plain, unquoted
                tag = _WORDS.get(value)
                if tag is not None:
                    return tag
                if value[0] in "-+0123456789" and _INTEGER.fullmatch(value):
                    return _INT
            return _STR
        return _SEQ if kind is yaml.SequenceNode else _MAP

    # The C composer calls these around every node for path resolvers (add_path_resolver), which we do not
    # use: doing nothing here, rather than asking whether there are any, saves 2 % of a 1,000-manifest check.
    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass


def position(node: yaml.Node) -> tuple[int, int]:
    """1-based line and column where ``node`` starts."""
    return node.start_mark.line + 1, node.start_mark.column + 1


@dataclass
class Document:
    """One YAML document of a file: its data and its root node (for positions)."""

    data: object
    node: yaml.Node
    file: str
    rejected: set[int] = field(default_factory=set)  # ids of nodes already reported (their value is None)
    clean: bool = True  # False when reading it found problems (a duplicate key, a rejected value)
    # id(mapping of data) -> the node it was read from and its value nodes, as the builder recorded them
    built: dict[int, tuple[yaml.MappingNode, dict[str, yaml.Node]]] = field(default_factory=dict, repr=False)
    _entries: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]] = field(default_factory=dict, repr=False)  # by id(node)

    def nodes_of(self, mapping: dict[str, object]) -> tuple[yaml.MappingNode, dict[str, yaml.Node]]:
        """The node a mapping of ``data`` was read from, and the value node of each of its keys, as the
        builder recorded them: a wave's positions (17 of them) are found without walking from the root.
        For the mapping at ``path``, they are ``node_at(path)`` and ``node_at((*path, key))``."""
        return self.built[id(mapping)]

    def node_at(self, path: YamlPath) -> yaml.Node:
        """The node of the value at ``path`` (keys and list indexes), or its deepest existing parent."""
        node = self.node
        for part in path:
            child = self._child(node, part)
            if child is None:
                break
            node = child
        return node

    def nodes_at(self, path: YamlPath, parts: Iterable[str | int]) -> list[yaml.Node]:
        """``node_at((*path, part))`` for each part, walking down to ``path`` once: the positions of an
        inline list's items (up to 400,000 UUIDs) cost one step each rather than a walk from the root."""
        parent = self.node
        for part in path:
            child = self._child(parent, part)
            if child is None:
                return [parent for _ in parts]
            parent = child
        return [parent if (child := self._child(parent, part)) is None else child for part in parts]

    def _child(self, node: yaml.Node, part: str | int) -> yaml.Node | None:
        if isinstance(node, yaml.MappingNode):
            entry = self._mapping(node).get(part) if isinstance(part, str) else None
            return None if entry is None else entry[1]
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child: yaml.Node = node.value[part]
            return child
        return None

    def key_node(self, path: YamlPath, key: str) -> yaml.Node:
        """The node of ``key`` itself in the mapping at ``path`` (for an unknown key)."""
        mapping = self.node_at(path)
        entry = self._mapping(mapping).get(key) if isinstance(mapping, yaml.MappingNode) else None
        return mapping if entry is None else entry[0]

    def problem(self, node: yaml.Node, message: str, severity: Severity = Severity.ERROR) -> Problem:
        line, col = position(node)
        return Problem(self.file, line, col, message, severity)

    def _mapping(self, node: yaml.MappingNode) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        entries = self._entries.get(id(node))
        if entries is None:
            # Read backwards, so that of duplicate keys the first is kept (as the data keeps it).
            entries = {key.value: (key, value) for key, value in reversed(node.value) if key.__class__ is _Scalar}
            self._entries[id(node)] = entries
        return entries


MAX_DEPTH = 100  # nesting levels; a manifest needs 5. Deeper input would exhaust the (C) stack.
MAX_VALUES = 200_000  # values per document after expanding aliases; five inline 10,000-UUID lists need 50,000
# Characters per key or value. The longest real value is a UUID file's path (Linux allows 4,096 bytes);
# names and tags stop at 100 (the schema), so a 15 MB scalar is refused here, before any pattern runs on it.
MAX_SCALAR_CHARS = 4096


def read_documents(text: str, file: str) -> tuple[list[Document], Problems]:
    """Every document of ``text`` (empty ones skipped) and the problems found reading them.

    A syntax error ends the file: the documents before it are still returned. So does a control,
    format or bidirectional character written into the file itself (a comment included: a right-to-left
    override in a comment can make a reviewer read the lines after it in another order).
    """
    problems = Problems()
    refused = _unsafe_text(text, file) or _too_deep(text, file)
    if refused is not None:
        problems.append(refused)
        return [], problems
    documents: list[Document] = []
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # check_node() said there is one: only a broken loader gets here
                break
            builder = _Builder(file)
            data = builder.build_document(node)
            problems.extend(builder.problems)
            if data is not None:
                documents.append(Document(data, node, file, builder.rejected, not builder.problems, builder.built))
    except yaml.YAMLError as error:
        problems.append(_syntax_problem(error, text, file))
    finally:
        loader.dispose()
    return documents, problems


def _unsafe_text(text: str, file: str) -> Problem | None:
    """A problem at the first character that would act instead of showing itself (libyaml refuses most
    controls already, but not bidirectional controls, zero-width characters or line separators)."""
    found = unsafe_character(text, lines=True)
    if found is None:
        return None
    offset, char = found
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return Problem(file, line, col, f"{_refusal(char)}; remove it (it may be invisible in an editor)")


def _refusal(char: str) -> str:
    return f"{code_point(char)} is not allowed in a manifest: no control, format or bidirectional characters"


def _too_deep(text: str, file: str) -> Problem | None:
    """A problem if collections nest deeper than MAX_DEPTH, found by streaming events (no recursion).

    Every nesting level needs one of ``[ { - ? :``, so most files are cleared by counting them.
    PyYAML 6.0.4 and later refuse 1,000 levels in the scanner, which reads up to 1,024 characters
    ahead, so its error can arrive before our 101st event does. Then the text up to that error is
    streamed again: our limit, our message and our position on every PyYAML version.
    """
    if sum(text.count(char) for char in "[{-?:") <= MAX_DEPTH:
        return None
    problem, stopped_at = _depth_scan(text, file)
    if problem is None and stopped_at is not None:
        problem, _ = _depth_scan(text[:stopped_at], file)
    return problem


def _depth_scan(text: str, file: str) -> tuple[Problem | None, int | None]:
    """Our nesting problem, or None and the character index where the YAML scanner gave up (if it did)."""
    loader = _Loader(text)
    depth = 0
    try:
        while (event := loader.get_event()) is not None and not isinstance(event, yaml.StreamEndEvent):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH and event.start_mark is not None:
                    line, col = event.start_mark.line + 1, event.start_mark.column + 1
                    return Problem(file, line, col, f"nested more than {MAX_DEPTH} levels deep"), None
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        return None, (mark.index if mark is not None and 0 < mark.index < len(text) else None)
    finally:
        loader.dispose()
    return None, None


def _syntax_problem(error: yaml.YAMLError, text: str, file: str) -> Problem:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if mark is not None:
        line, col = mark.line + 1, mark.column + 1
    elif isinstance(position := getattr(error, "position", None), int):  # libyaml reader errors: a character index
        offset = position
        line = text.count("\n", 0, offset) + 1
        col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    else:
        line, col = 1, 1
    what = getattr(error, "problem", None) or getattr(error, "reason", None) or str(error)
    context = getattr(error, "context", None)
    detail = f"{what} ({context})" if context else what
    return Problem(file, line, col, f"invalid YAML: {detail}")


class _TooManyValues(Exception):
    pass


class _Builder:
    """Turns a node tree into dicts, lists and scalars, collecting problems on the way.

    Aliases are expanded (each use gets its own copy), at most MAX_VALUES values per
    document so that alias "bombs" stop early; an alias inside its own anchor is refused.
    """

    def __init__(self, file: str):
        self.file = file
        self.problems = Problems()
        self.rejected: set[int] = set()
        self.built: dict[int, tuple[yaml.MappingNode, dict[str, yaml.Node]]] = {}  # Document.nodes_of
        self._open: set[int] = set()
        self._values = 0

    def _problem(self, node: yaml.Node, message: str) -> None:
        line, col = position(node)
        self.problems.append(Problem(self.file, line, col, message))

    def _reject(self, node: yaml.Node, message: str) -> None:
        """Report a value that cannot be read; it becomes None, and nobody reports it again."""
        self._problem(node, message)
        self.rejected.add(id(node))

    def build_document(self, node: yaml.Node) -> object:
        try:
            return self._build(node)
        except _TooManyValues:
            self._problem(node, f"more than {MAX_VALUES} values once YAML aliases are expanded")
            return None

    def _build(self, node: yaml.Node) -> object:
        """The value of any node. Plain strings, the bulk of a manifest, are handled inline by
        the callers: this walk is per node, so it avoids a call where it can."""
        if node.__class__ is _Scalar:
            return self._scalar(node)
        key = id(node)
        if key in self._open:
            self._reject(node, "recursive YAML alias: an anchor cannot contain an alias of itself")
            return None
        self._values += len(node.value)
        if self._values > MAX_VALUES:
            raise _TooManyValues
        self._open.add(key)
        value: dict[str, object] | list[object] | None
        if node.__class__ is _Mapping:
            value = self._mapping(node)
        else:
            value = self._sequence(cast(yaml.SequenceNode, node))
        self._open.discard(key)
        return value

    def _sequence(self, node: yaml.SequenceNode) -> list[object] | None:
        if node.tag != _SEQ:
            self._reject(node, f"unsupported YAML tag {_short(node.tag)}: write a plain list")
            return None
        return [
            self._string(item) if item.__class__ is _Scalar and item.tag == _STR else self._build(item)
            for item in node.value
        ]

    def _mapping(self, node: yaml.MappingNode) -> dict[str, object] | None:
        if node.tag != _MAP:
            self._reject(node, f"unsupported YAML tag {_short(node.tag)}: write a plain mapping")
            return None
        result: dict[str, object] = {}
        values: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if key_node.__class__ is not _Scalar:
                self._problem(key_node, "mapping keys must be plain names, not lists or mappings")
                continue
            key = self._string(key_node)
            if key is None:
                continue
            if key in result:
                first = next(k for k, _ in node.value if k.__class__ is _Scalar and k.value == key)
                self._problem(key_node, f"duplicate key '{key}' (first at line {first.start_mark.line + 1})")
                continue
            values[key] = value_node
            result[key] = (
                self._string(value_node)
                if value_node.__class__ is _Scalar and value_node.tag == _STR
                else self._build(value_node)
            )
        self.built[id(result)] = node, values
        return result

    def _string(self, node: yaml.ScalarNode) -> str | None:
        """A string scalar's text, unless it is too long or holds a character that acts instead of
        showing itself (written as an escape such as ``"\\e[31m"`` or ``"\\u202e"``, or a block
        scalar's newline): those are refused, naming the character."""
        text: str = node.value
        if len(text) > MAX_SCALAR_CHARS:
            self._reject(node, f"a value of {len(text):,} characters is too long: at most {MAX_SCALAR_CHARS:,}")
            return None
        # Every character unsafe_character finds is one str.isprintable refuses (a test checks each code
        # point), so the bulk of a manifest, printable text, is cleared by one method call.
        found = None if text.isprintable() else unsafe_character(text)
        if found is not None:
            offset, char = found
            self._reject(node, f"{_refusal(char)} (character {offset + 1} of this value)")
            return None
        return text

    def _scalar(self, node: yaml.ScalarNode) -> object:
        tag, text = node.tag, node.value
        if tag == _STR:
            return self._string(node)
        if tag == _NULL:
            if _WORDS.get(text) == _NULL:
                return None
        elif tag == _BOOL:
            if text.lower() in ("true", "false"):
                return text.lower() == "true"
        elif tag == _INT:
            number = _integer(text)
            if number is not None:
                return number
        else:
            self._reject(node, f"unsupported YAML tag {_short(tag)}: write a plain value")
            return None
        self._reject(node, f"'{text[:40]}' is not a valid {_short(tag)} value")
        return None


def _integer(text: str) -> int | None:
    try:
        if _DECIMAL.fullmatch(text):
            return int(text, 10)
        if text[:2] in ("0x", "0o"):
            return int(text, 0)
    except ValueError:  # more digits than Python converts
        pass
    return None


def _short(tag: str) -> str:
    return "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag
