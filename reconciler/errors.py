"""The reconciler's errors, and how they are reported.

Every error is reported as one line, ``file:line:col: message`` for a problem in a file, or a
plain sentence otherwise; the CLI prints it and exits 1 with no traceback (``--debug`` shows
one, with its cause). Messages never contain key material or tokens. The tree, like httpx's,
says who can fix what went wrong::

    ReconcilerError                 anything the reconciler refuses or fails: one line, exit 1
    ├── UserError                   the input or the environment is wrong; the user fixes it
    │   ├── ValidationFailed        manifest errors, one line per problem
    │   ├── manifest.SourceError    a manifest file that cannot be read (missing, a link out, ...)
    │   └── signing.TufError        keys, roots and signatures that do not fit together
    ├── BackendError                the factory refused or failed a request
    │   └── OutcomeUnknown          a write whose answer was lost: it may have landed
    ├── apply.ConcurrentWriter      the factory shows a write that was not ours
    └── apply.LeaseHeld             another apply holds the factory's apply lease

Catch ``ReconcilerError`` to report any of them; a narrower class to handle one case (an
apply settles an ``OutcomeUnknown`` by watching the factory instead of sending the write again).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

from msgspec import Struct

from reconciler.safetext import printable

if TYPE_CHECKING:
    import httpx

# Errors (and, separately, warnings) printed per run: a generated or hostile manifest with 100,000
# unknown keys gets the first 50 and "and 99,950 more errors", not a wall of text.
MAX_SHOWN = 50


class Severity(StrEnum):
    """An error stops the run (exit 1); a warning is printed and the run goes on."""

    ERROR = "error"
    WARNING = "warning"


class Problem(Struct, frozen=True, order=True):
    """One finding about the user's input, with its position (1-based line and column)."""

    file: str
    line: int
    col: int
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        """One line whatever the file name or message holds: control and bidi characters, newlines
        included, are shown as ``\\u`` escapes, so a file name cannot forge a line or recolour a terminal."""
        prefix = "" if self.severity is Severity.ERROR else "warning: "
        if not self.file:
            return f"{prefix}{printable(self.message)}"
        file = printable(self.file)
        if not (file[0].isalnum() or file[0] in "/._~"):
            # A file named "::error::x.yaml" or "##[warning]x.yaml" would start a workflow command
            # (the Actions runner reads one from any line that starts so, after leading spaces).
            file = "./" + file
        return f"{file}:{self.line}:{self.col}: {prefix}{printable(self.message)}"


class Problems:
    """The first ``MAX_SHOWN`` problems in (file, line, column) order and a count of all of them.

    Memory stays bounded however many are added: the list is cut back to the smallest
    ``MAX_SHOWN`` whenever it doubles. ``skip(n)`` counts problems that were not even built
    (the 100,000th unknown key of a mapping), which sort after every kept one.
    """

    def __init__(self) -> None:
        self._kept: list[Problem] = []
        self.total = 0
        self.incomplete = False  # checking stopped early: ``total`` is a lower bound

    def append(self, problem: Problem) -> None:
        self.total += 1
        self._kept.append(problem)
        if len(self._kept) >= 2 * MAX_SHOWN:
            self._kept = sorted(self._kept)[:MAX_SHOWN]

    def extend(self, problems: Iterable[Problem]) -> None:
        """Add problems; from another ``Problems``, its kept ones and the count of the others."""
        for problem in problems:
            self.append(problem)
        if isinstance(problems, Problems):
            self.skip(problems.omitted)
            self.incomplete |= problems.incomplete

    def skip(self, count: int) -> None:
        self.total += count

    def more(self, what: str = "errors") -> str | None:
        """The line that stands for the problems not shown, if any."""
        if not self.omitted and not self.incomplete:
            return None
        return more_line(self.omitted, what, at_least=self.incomplete)

    @property
    def shown(self) -> list[Problem]:
        return sorted(self._kept)[:MAX_SHOWN]

    @property
    def omitted(self) -> int:
        return self.total - len(self.shown)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.shown)

    def __bool__(self) -> bool:
        return self.total > 0

    def __len__(self) -> int:
        return self.total


def more_line(omitted: int, what: str = "errors", *, at_least: bool = False) -> str:
    """The line that stands for the problems not printed."""
    return f"... and {'at least ' if at_least else ''}{omitted:,} more {what} (the first {MAX_SHOWN} are shown)"


class ReconcilerError(Exception):
    """The root of the tree above: shown as one line, exit 1."""


class UserError(ReconcilerError):
    """A refusal caused by the user's input or environment."""


class ValidationFailed(UserError):
    """Manifest validation found errors; ``problems`` holds the first ``MAX_SHOWN`` of them, sorted,
    and ``more`` is the line that counts the rest (None when there are none)."""

    def __init__(self, problems: list[Problem] | Problems):
        if not isinstance(problems, Problems):
            collected = Problems()
            collected.extend(problems)
            problems = collected
        self.problems = problems.shown
        self.more = problems.more()
        lines = [str(p) for p in self.problems] + ([self.more] if self.more else [])
        super().__init__("\n".join(lines))


class BackendError(ReconcilerError):
    """The factory refused or failed a request; the message says what and why, ``status`` the HTTP
    status when the factory (or a gateway in front of it) answered."""

    outcome_unknown: ClassVar[bool] = False  # True for OutcomeUnknown: the write may have landed

    def __init__(self, message: str, status: int | None = None):
        self.status = status
        super().__init__(message)


class OutcomeUnknown(BackendError):
    """A write whose answer was lost (dropped connection, deadline, a gateway's 502/503/504) may have
    landed, so it must be checked against the factory before anyone calls it failed or repeats it."""

    outcome_unknown: ClassVar[bool] = True


def error_text(response: httpx.Response) -> str:
    """An HTTP error body as one line, the way fioctl shows the factory's (reference §1.1); GitHub's
    REST errors have the same ``message`` and ``errors`` fields."""
    status = f"HTTP {response.status_code}"
    try:
        data = response.json()
    except ValueError:
        text = response.text.strip().replace("\n", " ")
        return f"{status}: {text}" if text and len(response.content) < 512 else status
    if not isinstance(data, dict):
        return status
    message = data.get("message") or data.get("msg") or data.get("title") or ""
    errors = data.get("errors")
    details = []
    if isinstance(errors, list):
        details = [str(e) for e in errors]
    elif isinstance(errors, dict):
        details = [f"{k}: {v}" for k, v in errors.items()]
    line = "; ".join(part for part in [message, *details] if part)
    return f"{line} ({status})" if line else status
