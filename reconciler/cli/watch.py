"""``reconcile --watch``: re-plan whenever a manifest or UUID file changes, and say what moved.

An operator editing a wave manifest wants the plan next to the editor, updated within a
second of each save, with the lines that changed since the previous plan picked out. While
they type, files pass through invalid states; a run that fails is shown like any other and
the watch goes on. Ctrl-C ends it quietly.
"""

from __future__ import annotations

import difflib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from reconciler.errors import ReconcilerError, UserError, ValidationFailed
from reconciler.safetext import printable

# A batch of file events is handed over once no event came for STEP_MS, and at the latest
# DEBOUNCE_MS after the first: a save that writes several files gives one re-plan.
DEBOUNCE_MS = 500
STEP_MS = 50
# The watcher reports "nothing happened" this often; the first such report says it is armed.
ARMED_MS = 200


def _lines(plan: str | Sequence[object]) -> list[str]:
    if isinstance(plan, str):
        return plan.splitlines()
    return [item if isinstance(item, str) else json.dumps(item, sort_keys=True) for item in plan]


def plan_changes(old: str | Sequence[object], new: str | Sequence[object]) -> list[str]:
    """Lines added (``+ ``) and removed (``- ``) between two plans, in plan order.

    Takes two plan texts, or two lists of JSON operations (each compared as one line).
    """
    lines = []
    for line in difflib.unified_diff(_lines(old), _lines(new), n=0, lineterm=""):
        if line.startswith(("+++", "---", "@@")):
            continue
        lines.append(f"{line[0]} {line[1:]}")
    return lines


def relevant(path: str, roots: Iterable[str]) -> bool:
    """Whether a changed path can affect the plan: a file that is not hidden below a watched root.

    Manifests are ``*.yaml``/``*.yml``, but UUID lists may have any name, so every visible
    file counts; editors' hidden swap and lock files (``.a.yaml.swp``, ``.#a.yaml``) and
    directories such as ``.git`` do not.
    """
    path = os.path.abspath(path)
    for root in roots:
        root = os.path.abspath(root)
        if path == root:
            return True
        if path.startswith(root.rstrip(os.sep) + os.sep):
            rel = os.path.relpath(path, root)
            return not any(part.startswith(".") or part.endswith("~") for part in rel.split(os.sep))
    return False


def _run(run_once: Callable[[], str]) -> str:
    try:
        return run_once()
    except ValidationFailed as exc:
        return str(exc)  # one file:line:col line per problem
    except ReconcilerError as exc:
        return f"error: {printable(str(exc))}"


def watch(
    paths: Sequence[str],
    run_once: Callable[[], str],
    stop_event: threading.Event | None = None,
    echo: Callable[[str], None] = print,
) -> None:
    """Run ``run_once`` now and after every relevant change under ``paths`` until stopped.

    ``run_once`` validates and plans, returning the text to show; a ``ReconcilerError`` it raises
    is shown instead. After the first run each report names the changed files, shows the
    new output and then the lines that changed since the previous output. Returns when
    ``stop_event`` is set or on Ctrl-C.
    """
    from watchfiles import Change, DefaultFilter
    from watchfiles import watch as watch_changes

    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise UserError(f"{missing[0]}: no such file or directory to watch")
    roots = [os.path.abspath(p) for p in paths]

    class PlanInputs(DefaultFilter):
        def __call__(self, change: Change, path: str) -> bool:
            return super().__call__(change, path) and relevant(path, roots)

    # The first plan runs only once the watcher is armed (its first empty report), so a save
    # made after "Watching" is printed, or while that plan runs, is never missed.
    previous: str | None = None
    try:
        for changes in watch_changes(
            *roots,
            watch_filter=PlanInputs(),
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            stop_event=stop_event,
            rust_timeout=ARMED_MS,
            yield_on_timeout=True,
        ):
            if previous is None:
                previous = _run(run_once)
                echo(previous)
                echo(f"Watching {', '.join(paths)} for changes (Ctrl-C to stop).")
                continue
            if not changes:
                continue
            changed = sorted({os.path.relpath(path) for _, path in changes})
            echo("")
            echo(printable(f"[{time.strftime('%H:%M:%S')}] changed: {', '.join(changed)}"))  # file names: escaped
            current = _run(run_once)
            echo(current)
            diff = plan_changes(previous, current)
            echo("Since the last plan:" + ("" if diff else " no difference."))
            for line in diff:
                echo(line)
            previous = current
    except KeyboardInterrupt:
        echo("Stopped watching.")
