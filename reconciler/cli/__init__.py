"""The command line: ``reconcile`` (``reconcile.py``) and ``reconcile status`` (``status.py``), their
shared options (``options.py``), ``init-repo`` (``initrepo.py``) and ``--watch`` (``watch.py``).
Wiring and exit codes; the work is done by ``factory``, ``core``, ``apply`` and ``render``."""

from reconciler.cli.reconcile import main

__all__ = ["main"]
