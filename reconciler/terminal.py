"""A terminal that helps: colour, a confirmation prompt and progress, only for a person at a TTY.

A leaf module (click only), shared by ``reconcile`` and ``reconcile-factory``. The rules, as
Terraform, git and the no-color.org convention have them:

- colour only on a TTY, never with ``NO_COLOR`` set (to anything non-empty) or ``--no-color``, never
  in JSON. Styles go through ``click.style``; ``click.echo`` strips them from a stream that is not
  a terminal and from every stream once ``disable_color`` set the context's ``color`` to False;
- prompt only when stdin is a TTY: CI runs without one and applies as before;
- progress goes to stderr, only when stderr is a TTY, on one line rewritten in place.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from typing import IO, Any

import click

from reconciler.safetext import printable

SYMBOL_COLORS = {"+": "green", "~": "yellow", "*": "cyan", "-": "red"}
_PLAN_STEP = re.compile(r"^(  )([+~*-])( \S+)")


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 manifest``, ``2 manifests``, ``1,000 devices``."""
    return f"{count:,} {word if count == 1 else many or word + 's'}"


def disable_color(no_color_flag: bool) -> None:
    """Honour ``--no-color`` and ``NO_COLOR`` for everything the current command echoes."""
    if no_color_flag or os.environ.get("NO_COLOR"):
        click.get_current_context().color = False


def interactive() -> bool:
    """A person can answer a prompt: stdin is a terminal (never in CI)."""
    return sys.stdin.isatty()


def styled_plan(text: str) -> str:
    """The text plan with its step symbols coloured, ``blocked:`` dimmed and problem headings marked."""
    lines = []
    for line in text.split("\n"):
        step = _PLAN_STEP.match(line)
        if step:
            color = SYMBOL_COLORS[step.group(2)]
            line = step.group(1) + click.style(step.group(2) + step.group(3), fg=color, bold=True) + line[step.end() :]
        elif line.lstrip().startswith("blocked:"):
            line = click.style(line, fg="yellow", dim=True)
        elif line == "Errors:":
            line = click.style(line, fg="red", bold=True)
        elif line == "Warnings:":
            line = click.style(line, fg="yellow", bold=True)
        lines.append(line)
    return "\n".join(lines)


def error_line(message: str) -> str:
    """``error: ...`` with the prefix in red (plain when colour is off)."""
    return click.style("error:", fg="red", bold=True) + " " + message


class UsageMistake(click.UsageError):
    """A usage mistake as every other mistake is shown: one line, ``error: ... (see 'reconcile --help')``,
    exit 1. click's own form is three lines and exit 2, and CI reads 2 as "changes pending"."""

    exit_code = 1

    @classmethod
    def of(cls, error: click.UsageError) -> UsageMistake:
        return error if isinstance(error, UsageMistake) else cls(error.format_message(), error.ctx)

    def show(self, file: IO[Any] | None = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        # Escaped: the message quotes what was typed, and an option name can carry a newline, a bidi
        # control (U+202E) or an escape sequence like any other argument.
        click.echo(error_line(printable(self.format_message() + hint)), err=True)


class OneLineUsage(click.Command):
    """Mixed into a command or group class: click's usage errors from parsing become ``UsageMistake``."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as error:
            raise UsageMistake.of(error) from None


def confirm_apply(steps: int) -> bool:
    """``Apply 3 steps? [y/N]``: anything but yes declines (Terraform accepts only "yes"; y is enough here)."""
    return click.confirm(f"Apply {plural(steps, 'step')}?", default=False, err=True)


class Progress:
    """``label 12,000/1,000,000 (1%)`` on stderr, rewritten at most ten times a second, TTY only."""

    def __init__(self, label: str, enabled: bool | None = None):
        self.label = label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last = 0.0
        self._shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done < total:
            return
        self._last = now
        share = f" ({100 * done // total}%)" if total else ""
        sys.stderr.write(f"\r{self.label} {done:,}/{total:,}{share}\033[K")
        sys.stderr.flush()
        self._shown = True

    def close(self) -> None:
        """Clear the progress line so the command's own output starts on a clean line."""
        if self._shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._shown = False


def counted(echo: Callable[[str], None], total: int) -> Callable[[str], None]:
    """Apply's per-step lines prefixed ``[2/7]`` on a TTY, so a long apply shows how far it is."""
    if total < 2 or not sys.stderr.isatty():
        return echo
    done = 0

    def echo_counted(line: str) -> None:
        nonlocal done
        done += 1
        echo(f"[{done}/{total}] {line.lstrip()}")

    return echo_counted
