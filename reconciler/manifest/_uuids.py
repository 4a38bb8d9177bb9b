"""Device UUID lists: a file in the release repository or an inline list in a manifest.

A file uses fioctl's ``--uuids @file`` format (so the same file works by hand): UUIDs
separated by commas, semicolons, ``|`` or any white space, no comments. Every UUID must
be canonical (lower-case, hyphenated 8-4-4-4-12) because the factory compares them as
strings; other spellings are reported with the canonical form to write instead. A phase
takes at most 400,000 UUIDs; the planner rolls out more than the factory's 10,000 per call in
parts (core/ledger.py). The bound keeps a list below the 16 MiB file cap (400,000 UUIDs of 36
characters and a CR LF are 15.2 MB), so a hostile file is stopped by a count at its own line, and
a huge list costs at most 40 rollouts of one phase. Errors point at the UUID's own line and
column; a repeated UUID is a warning naming both places.

Files of valid UUIDs, the common case, are checked with a few whole-buffer byte
operations instead of a Python loop per UUID; only a file that fails them is tokenized
line by line to find out where and why.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from typing import overload

from reconciler.core import MAX_PHASE_UUIDS, MAX_ROLLOUT_UUIDS, Location
from reconciler.errors import Problem, Severity
from reconciler.manifest._source import decode_utf8
from reconciler.safetext import code_point

MAX_UUIDS = MAX_PHASE_UUIDS  # per phase; core/ledger.py splits it into rollouts of at most 10,000
MAX_REPORTED = 20  # invalid UUIDs reported per list; a garbage file gets a summary, not thousands of lines
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TOKEN = re.compile(r"[^\s,;|]+")
# The fast path's one pass over a file: hex digits and '-' stay, the separators become spaces and any
# other byte becomes NUL, which one search then finds (a NUL in the file is no UUID character either).
_FAST_TABLE = bytes(
    byte if byte in b"0123456789abcdef-" else 0x20 if byte in b",;| \t\n\r\x0b\x0c" else 0 for byte in range(256)
)
_EXAMPLE = "123e4567-e89b-12d3-a456-426614174000"
# The pattern schemas/wave.schema.json gives an inline list's UUIDs (a test checks they agree).
PATTERN = "^" + _CANONICAL.pattern + "$"
MAX_NAMED = 5  # foreign characters named per UUID
_UUID_CHARS = frozenset("0123456789abcdefABCDEF-")
# Letters of other scripts that look like the hex letters and the dash, with no compatibility mapping to
# them (NFKC maps fullwidth and mathematical forms; these it leaves alone).
_LOOK_ALIKES = {
    "\u0430": "a",  # CYRILLIC SMALL LETTER A
    "\u0410": "a",  # CYRILLIC CAPITAL LETTER A
    "\u0391": "a",  # GREEK CAPITAL LETTER ALPHA
    "\u0412": "b",  # CYRILLIC CAPITAL LETTER VE
    "\u0392": "b",  # GREEK CAPITAL LETTER BETA
    "\u0441": "c",  # CYRILLIC SMALL LETTER ES
    "\u0421": "c",  # CYRILLIC CAPITAL LETTER ES
    "\u03f2": "c",  # GREEK LUNATE SIGMA SYMBOL
    "\u0501": "d",  # CYRILLIC SMALL LETTER KOMI DE
    "\u0435": "e",  # CYRILLIC SMALL LETTER IE
    "\u0415": "e",  # CYRILLIC CAPITAL LETTER IE
    "\u0395": "e",  # GREEK CAPITAL LETTER EPSILON
    "\u2010": "-",  # HYPHEN
    "\u2011": "-",  # NON-BREAKING HYPHEN
    "\u2012": "-",  # FIGURE DASH
    "\u2013": "-",  # EN DASH
    "\u2014": "-",  # EM DASH
    "\u2212": "-",  # MINUS SIGN
}
_COMMENT = "comments are not allowed in a UUID list: fioctl --uuids @file would read them as UUIDs"

Token = tuple[str, str, int, int]  # text, file, line, column


def parse_file(data: bytes, file: str) -> tuple[tuple[str, ...], list[Problem]]:
    """The UUIDs of a list file's bytes, in file order, and the problems (errors and warnings)."""
    fast = _fast_path(data)
    if fast is not None:
        return fast, []
    text = decode_utf8(data, file)
    if isinstance(text, Problem):
        return (), [text]
    tokens: list[Token] = []
    comments: list[Problem] = []
    for number, line in enumerate(text.split("\n"), start=1):
        for match in _TOKEN.finditer(line):
            if match.group().startswith("#"):
                comments.append(Problem(file, number, match.start() + 1, _COMMENT))
                break
            tokens.append((match.group(), file, number, match.start() + 1))
    if not tokens and not comments:
        return (), [Problem(file, 1, 1, "no UUIDs in this file")]
    uuids, problems = _check(tokens, "in this file")
    return ((), comments + problems) if comments else (uuids, problems)


class UuidLines(Sequence[Location]):
    """Where each UUID of a list file is written, parallel to its UUIDs, worked out on first use: a plan
    points at a UUID's own line only for one the factory would refuse, so the lines of a repository's
    half a million UUIDs are not located on every run (``bench/bench_check.py``)."""

    def __init__(self, data: bytes, file: str, uuids: tuple[str, ...]):
        self._data, self._file, self._uuids = data, file, uuids
        self._lines: tuple[Location, ...] | None = None

    def _located(self) -> tuple[Location, ...]:
        if self._lines is None:
            found = positions(self._data)
            self._lines = tuple(Location(self._file, *found[u]) for u in self._uuids)  # valid UUIDs are tokens
            self._data = b""
        return self._lines

    @overload
    def __getitem__(self, index: int) -> Location: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Location]: ...
    def __getitem__(self, index: int | slice) -> Location | Sequence[Location]:
        return self._located()[index]

    def __len__(self) -> int:
        return len(self._uuids)


def positions(data: bytes) -> dict[str, tuple[int, int]]:
    """Each token's first (line, column) in a list file, so a check against the factory can point at its line."""
    found: dict[str, tuple[int, int]] = {}
    for number, line in enumerate(data.decode("utf-8", errors="replace").split("\n"), start=1):
        for match in _TOKEN.finditer(line):
            found.setdefault(match.group(), (number, match.start() + 1))
    return found


def parse_inline(tokens: Iterable[Token]) -> tuple[tuple[str, ...], list[Problem]]:
    """The UUIDs of an inline manifest list; each token carries its own manifest position."""
    return _check(list(tokens), "in this list")


def _check(tokens: list[Token], where: str) -> tuple[tuple[str, ...], list[Problem]]:
    """Canonical form, the MAX_UUIDS limit and duplicates, for tokens already split apart."""
    errors: list[Problem] = []
    warnings: list[Problem] = []
    first_seen: dict[str, Token] = {}
    unreported: list[Token] = []
    for token in tokens:
        text, file, line, col = token
        if not _CANONICAL.fullmatch(text):
            if len(errors) < MAX_REPORTED:
                errors.append(Problem(file, line, col, invalid_message(text)))
            else:
                unreported.append(token)
        elif text in first_seen:
            _, first_file, first_line, first_col = first_seen[text]
            same_file = first_file == file
            place = f"line {first_line}, column {first_col}" if same_file else f"{first_file}:{first_line}:{first_col}"
            warnings.append(Problem(file, line, col, f"duplicate UUID {text} (first at {place})", Severity.WARNING))
        else:
            first_seen[text] = token
    if unreported:
        _, file, line, col = unreported[0]
        errors.append(Problem(file, line, col, f"{len(unreported)} more invalid UUIDs {where} are not shown"))
    if len(tokens) > MAX_UUIDS:
        _, file, line, col = tokens[MAX_UUIDS]
        errors.append(
            Problem(
                file,
                line,
                col,
                f"too many UUIDs: {len(tokens)} {where}, a phase takes at most {MAX_UUIDS}"
                f" (rolled out {MAX_ROLLOUT_UUIDS} per rollout); split them over several phases",
            )
        )
    if errors:
        return (), errors + warnings
    return tuple(first_seen), warnings


def invalid_message(text: str) -> str:
    """Why ``text`` is not a canonical device UUID and what to write instead (the schema's message too)."""
    if not text.isascii():
        return _foreign_message(text)
    try:
        canonical = str(uuid.UUID(text))  # also reads upper case, braces, urn:uuid: and 32 bare digits
    except ValueError:
        return f"{_quoted(text)} is not a device UUID (lower-case hex 8-4-4-4-12, e.g. {_EXAMPLE})"
    return f"UUID '{text}' must be written lower-case and hyphenated: {canonical}"


def _foreign_message(text: str) -> str:
    """A UUID with characters beyond ASCII, each named by code point with the ASCII one to type instead.

    A digit of another script (fullwidth ``１``, Arabic-Indic ``١``) or a look-alike letter (Cyrillic
    ``а``) reads as the UUID on screen, and Python's ``uuid.UUID`` even accepts the digits, but the factory
    compares UUIDs as ASCII strings: such a device would never be found."""
    named: list[str] = []
    fixed: list[str] = []
    for index, char in enumerate(text):
        ascii_char = char if char.isascii() else _ascii_for(char)
        fixed.append(ascii_char or "")
        if char.isascii() or len(named) > MAX_NAMED:
            continue
        instead = f"type {ascii_char}" if ascii_char else "remove it" if _invisible(char) else "not a UUID character"
        named.append(f"{code_point(char)} (character {index + 1}): {instead}")
    if len(named) > MAX_NAMED:
        named[MAX_NAMED:] = ["and more"]
    hint = "UUIDs are ASCII: 0-9, a-f and '-'"
    try:
        canonical = str(uuid.UUID("".join(fixed).lower()))
        if canonical.isascii() and _CANONICAL.fullmatch(canonical):
            hint = f"write {canonical}"
    except ValueError:
        pass
    return f"{_quoted(text)} is not a device UUID: {'; '.join(named)}; {hint}"


def _ascii_for(char: str) -> str | None:
    """The ASCII character ``char`` stands for in a UUID, if it has one."""
    digit = unicodedata.decimal(char, None)
    if digit is not None:
        return str(digit)
    folded = unicodedata.normalize("NFKC", char)
    if folded.isascii() and len(folded) == 1 and folded in _UUID_CHARS:
        return folded.lower()
    return _LOOK_ALIKES.get(char)


def _invisible(char: str) -> bool:
    return unicodedata.category(char) in ("Cf", "Zs", "Zl", "Zp")


def _quoted(text: str) -> str:
    """A token quoted for a message, shortened like the manifest's values."""
    return f"'{text if len(text) <= 40 else text[:37] + '...'}'"


def _fast_path(data: bytes) -> tuple[str, ...] | None:
    """The UUIDs if the buffer is nothing but distinct canonical UUIDs and ASCII separators, else None."""
    spaced = data.translate(_FAST_TABLE)
    if b"\0" in spaced:
        return None
    items = spaced.decode("ascii").split()
    count = len(items)
    if not 0 < count <= MAX_UUIDS:
        return None
    # The items hold no white space, so if every 37th character of them joined by spaces is a space, those
    # are all the spaces and each item is 36 characters long; then the dashes must be at 8, 13, 18 and 23.
    joined = " ".join(items)
    if len(joined) != 37 * count - 1 or joined.count("-") != 4 * count or joined[36::37] != " " * (count - 1):
        return None
    dashes = "-" * count
    if any(joined[offset::37] != dashes for offset in (8, 13, 18, 23)):
        return None
    if len(set(items)) != count:
        return None
    return tuple(items)
