"""The command line: ``reconcile`` (``reconcile.py``) and ``reconcile status`` (``status.py``), their
shared options (``options.py``), ``init-repo`` (``initrepo.py``) and ``--watch`` (``watch.py``).
Wiring and exit codes; the work is done by ``factory``, ``core``, ``apply`` and ``render``."""

from __future__ import annotations

import atexit
import gc
import os
import sys
from typing import TYPE_CHECKING

from reconciler.cli import preconnect

if TYPE_CHECKING:
    from reconciler.cli.reconcile import main

__all__ = ["main", "program"]


def __getattr__(name: str) -> object:
    """``main``, imported when asked for: ``program`` starts connecting to the API before it loads."""
    if name == "main":
        from reconciler.cli.reconcile import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def program() -> None:
    """The ``reconcile`` program (pyproject's console script): ``main`` in a process of its own.

    The garbage collector runs rarely there: a run builds hundreds of thousands of objects that live until
    it ends (the manifests' YAML nodes and UUID lists, the factory's answers), almost none of them in
    reference cycles, and CPython's default (a young collection every 700 new containers, each older
    one walking every object the imports made) spent 5-8 % of a run's CPU finding nothing. Young
    collections come every 100,000 new containers, and ``gc.freeze`` takes what is imported by now (the
    command line's modules; the rest are imported as a command needs them) out of every collection.
    Measured (CPU, best of 5, these two settings against none): ``--check`` of 1,000 manifests
    1.32 -> 1.26 s, the plan bench's local dry run 1.24 -> 1.18 s.

    Nor are those objects freed one by one when the process ends (``_end``): after ``main`` exits, and
    after every exit handler the run registered has run, the output is flushed and the process ends
    there. Tearing the interpreter down took 55-66 ms of a dry run against the API (13-16 ms of a
    ``--check``) and gave nothing back: the memory is the system's again either way. mypy ends the
    same way (``mypy.util.hard_exit``, unless ``--no-fast-exit``).

    Only here, not in ``main``: a process that calls ``main`` among other work (a test run) keeps the
    collector as it set it, and goes on after it.

    Before anything else, the connections to the API a plan, apply or status will want first begin to
    open (``preconnect``): the command line's modules, imported next, take about 80 ms of CPU, which the
    connections' handshakes then overlap."""
    preconnect.start(sys.argv[1:], os.environ)
    from reconciler.cli.reconcile import main

    gc.freeze()
    gc.set_threshold(100_000)
    status: list[int] = []
    atexit.register(_end, status)  # the first registered runs last: after every handler the run registers
    try:
        main()
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):  # a message instead is printed by the interpreter
            status.append(done.code or 0)
        raise


def _end(status: list[int]) -> None:
    """End the process with ``main``'s exit status, once its output is out. Nothing happens when ``main``
    did not exit (an uncaught exception: the interpreter prints it), nor when the output cannot be
    flushed (a closed pipe: the interpreter reports it as it always does)."""
    if not status:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(status[0])
