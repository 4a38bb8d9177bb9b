"""Command-line options: those that several of ``reconcile``'s commands share, written once, and the
main command's options as one value.

The plan and apply command, ``reconcile status`` and ``reconcile devices`` all talk to one factory,
chosen the same way: ``--factory``, then ``--api-url`` (the Foundries API) or else the embedded local
factory at ``--local``. Each option also reads its environment variable, so CI sets them once.

``RunOptions`` is what the main command was asked to do, built once from its flags after they were
checked against each other; the run reads it instead of passing two dozen flags along.

``connect_early`` opens connections to the API those options name as soon as the command line is read;
``read_ahead``: a plan, an apply or a status against it starts reading the wave list before the
manifests load.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

import click
from msgspec import Struct
from msgspec.structs import replace

from reconciler.cli import preconnect

if TYPE_CHECKING:
    from reconciler.apply import SavedPlan
    from reconciler.factory import FactoryClient, WaveListHead

_F = TypeVar("_F", bound=Callable[..., Any])


def factory_options(command: _F) -> _F:
    """``--factory``, ``--api-url``, ``--local`` and ``--allow-insecure-http``, in that order in ``--help``."""
    for option in reversed(
        (
            click.option("--factory", envvar="RECONCILE_FACTORY", help="Factory name [env RECONCILE_FACTORY]."),
            click.option(
                preconnect.API_URL_OPTION,
                envvar=preconnect.API_URL_ENV,
                help=f"Foundries API URL [env {preconnect.API_URL_ENV}]; without it, the embedded local factory.",
            ),
            click.option(
                "--local",
                envvar="RECONCILE_LOCAL",
                type=click.Path(),
                help="Where the embedded local factory lives [env RECONCILE_LOCAL; default: user state dir].",
            ),
            click.option(
                "--allow-insecure-http",
                is_flag=True,
                envvar="RECONCILE_ALLOW_INSECURE_HTTP",
                help="Allow a plain http:// API URL to another machine: the token travels in clear "
                "[env RECONCILE_ALLOW_INSECURE_HTTP].",
            ),
        )
    ):
        command = option(command)
    return command


class Mode(Enum):
    """How far a run goes: ``--check`` wins over ``--dry-run``, which wins over applying."""

    CHECK = "check"  # validate the manifests; no factory
    PLAN = "plan"  # plan against the factory; never writes, needs no key
    APPLY = "apply"  # plan, then apply under the factory's apply lease

    @classmethod
    def of(cls, *, check: bool, dry_run: bool) -> Mode:
        return cls.CHECK if check else cls.PLAN if dry_run else cls.APPLY


class OutputFormat(StrEnum):
    """``--format``: how the plan is printed."""

    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"


class StatusFormat(StrEnum):
    """``reconcile status --format``: the plan's formats and a self-contained HTML page (``render/report.py``),
    which only the status report has: a plan is read in a terminal or a pull request, a status also on a phone."""

    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"
    HTML = "html"


class RunOptions(Struct, frozen=True):
    """One run of the main command. ``saved`` is the plan ``--plan`` loaded (schemas/savedplan.schema.json)."""

    mode: Mode
    output_format: OutputFormat
    detailed_exitcode: bool  # with --dry-run: exit 2 when ready steps exist
    base: str | None  # plan only the waves changed since this revision
    rev: str | None  # read the manifests at this revision
    allow_dirty: bool
    factory: str | None
    api_url: str | None
    local: str | None
    allow_insecure_http: bool  # --allow-insecure-http: plain http:// to another machine
    keys: str | None  # --keys: the offline key archive
    signer_uri: str | None  # --signer
    without_key: bool
    timeout: float  # seconds the run may spend with the factory
    out_file: str | None  # --out: save the plan here
    saved: SavedPlan | None
    # --plan-max-age: the oldest saved plan --plan applies, by the factory's clock; None: the default
    # (reconciler.apply.DEFAULT_PLAN_MAX_AGE, not imported here so that a run without --plan does not load apply)
    plan_max_age: timedelta | None
    assume_yes: bool

    def preview(self) -> RunOptions:
        """The same run as a preview (``--watch``): it never applies, whatever the other options say."""
        return replace(self, mode=Mode.PLAN) if self.mode is Mode.APPLY else self


def connect_early(api_url: str, allow_insecure_http: bool, count: int) -> None:
    """Begin opening ``count`` connections to the API before any client exists: over TLS each waits two
    round trips, which then pass while the run imports its modules, reads its manifests or takes its lease
    (reconciler/connections.py). As soon as the command line is read, from the manifest files counted then
    (``manifestfiles.count``): a plan's observation's and an apply's own reads
    (``connections.observation_connections``), a status's (``connections.status_connections``); once the
    manifests are read, a saved plan's apply asks again with its waves. The client made for the API later
    claims them; ``discard_early`` closes them if nothing did."""
    from reconciler import connections

    connections.start(api_url, allow_insecure_http, count)


def discard_early() -> None:
    """Close the connections ``connect_early`` opened that no client claimed (the run ended before it made one)."""
    if "reconciler.connections" in sys.modules:  # nothing was opened when it was never imported
        from reconciler import connections

        connections.discard()


def read_ahead(
    api_url: str | None,
    factory: str | None,
    allow_insecure_http: bool,
    timeout: float | None = None,
    *,
    paths: Sequence[str] = (),
) -> tuple[FactoryClient, Callable[[], WaveListHead]] | None:
    """A client for the API, already reading the wave list (its first page, or the whole of a short list:
    ``list_ahead``; neither needs a manifest), and the function that waits for it: a dry run, an apply or
    a status starts it before the manifests load, so its round trips overlap with reading files. The
    manifest files under ``paths`` are counted first (not read): how many pages of the list go out at once
    (``list_ahead``). An apply's list is only a guess of what its observation, read once it holds the
    apply lease, will read (factory/observe.py ``observe(guess=...)``). None for the embedded factory (no
    round trips to hide; creating it would be a write before validation) and for options that are wrong:
    the mistake is reported in its usual place, after the manifests' own errors. ``timeout``: ``--timeout``."""
    if not api_url:
        return None
    from reconciler import manifestfiles
    from reconciler.errors import ReconcilerError
    from reconciler.factory import AHEAD_WAVES, FactoryClient, list_ahead, select_backend

    try:
        backend = select_backend(api_url=api_url, factory=factory, local=None, allow_insecure_http=allow_insecure_http)
        client = FactoryClient(backend) if timeout is None else FactoryClient(backend, run_timeout=timeout)
    except ReconcilerError:
        return None
    files = manifestfiles.count(paths, limit=AHEAD_WAVES)
    return client, client.ahead(functools.partial(list_ahead, client, files))
