"""``python -m reconciler.localfactory`` = ``reconcile-factory``."""

from .cli import main

main()
