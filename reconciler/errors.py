"""Errors a user can cause, and how they are reported.

Every mistake a user makes is reported as one line, ``file:line:col: message`` for a
problem in a file, or a plain sentence otherwise; the CLI prints it and exits 1 with no
traceback. Messages never contain key material or tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    """An error stops the run (exit 1); a warning is printed and the run goes on."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class Problem:
    """One finding about the user's input, with its position (1-based line and column)."""

    file: str
    line: int
    col: int
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        prefix = "" if self.severity is Severity.ERROR else "warning: "
        if not self.file:
            return f"{prefix}{self.message}"
        return f"{self.file}:{self.line}:{self.col}: {prefix}{self.message}"


class UserError(Exception):
    """A refusal caused by the user's input or environment; shown as one line, exit 1."""


class ValidationFailed(UserError):
    """Manifest validation found errors; ``problems`` holds all of them, sorted."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class BackendError(UserError):
    """The factory refused or failed a request; the message says what and why. ``outcome_unknown``:
    a write whose answer was lost (dropped connection, deadline, a gateway's 502/503/504) may have
    landed, so it must be checked against the factory before anyone calls it failed or repeats it."""

    def __init__(self, message: str, status: int | None = None, *, outcome_unknown: bool = False):
        self.status = status
        self.outcome_unknown = outcome_unknown
        super().__init__(message)
