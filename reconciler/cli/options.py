"""Command-line options that several of ``reconcile``'s commands share, written once.

The plan and apply command, ``reconcile status`` and ``reconcile devices`` all talk to one factory,
chosen the same way: ``--factory``, then ``--api-url`` (the Foundries API) or else the embedded local
factory at ``--local``. Each option also reads its environment variable, so CI sets them once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

_F = TypeVar("_F", bound=Callable)


def factory_options(command: _F) -> _F:
    """``--factory``, ``--api-url`` and ``--local``, in that order in ``--help``."""
    for option in reversed(
        (
            click.option("--factory", envvar="RECONCILE_FACTORY", help="Factory name [env RECONCILE_FACTORY]."),
            click.option(
                "--api-url",
                envvar="RECONCILE_API_URL",
                help="Foundries API URL [env RECONCILE_API_URL]; without it, the embedded local factory.",
            ),
            click.option(
                "--local",
                envvar="RECONCILE_LOCAL",
                type=click.Path(),
                help="Where the embedded local factory lives [env RECONCILE_LOCAL; default: user state dir].",
            ),
        )
    ):
        command = option(command)
    return command
