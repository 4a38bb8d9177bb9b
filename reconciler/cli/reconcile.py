"""``reconcile``: validate manifests, plan against the factory, and apply.

Wiring, printing and exit codes only (docs/architecture.md, "Command line"): the flags become one
``RunOptions``; the run's steps against the factory are ``reconciler.apply``'s session. Exit codes: 0
success or no changes; 1 invalid input, refused or failed operation; 2 changes pending (only with
``--detailed-exitcode``). An error is printed as one line per problem, never a traceback (``--debug``
shows one). Heavy modules are imported inside the command so ``reconcile --help`` stays quick.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

from reconciler import terminal
from reconciler.cli import options as cliopts
from reconciler.cli.options import Mode, OutputFormat, RunOptions
from reconciler.errors import ReconcilerError, Severity, UserError, ValidationFailed, more_line
from reconciler.safetext import printable

if TYPE_CHECKING:
    from reconciler.core import LostManifest, Plan, WaveSpec
    from reconciler.factory import DeviceSelection, FactoryClient, WaveListHead

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def _err(message: str, *, error: bool = False) -> None:
    """One line on stderr, escaped: a server's message or a file name cannot add a line (in a GitHub
    Actions log, a line of its own starting ``::warning`` would be a workflow command) or colour it.
    ``error`` prefixes ``error:`` (red on a terminal), added after the escaping so its colour stays."""
    text = printable(message)
    click.echo(terminal.error_line(text) if error else text, err=True)


def _status_command() -> click.Command:
    from reconciler.cli.status import status_command

    return status_command


def _import_command() -> click.Command:
    from reconciler.cli.importcmd import import_command

    return import_command


class _Command(terminal.OneLineUsage):
    """Usage mistakes are one line and exit 1 like every other user error (2 means "changes pending" to CI).

    A first argument naming one of ``SUBCOMMANDS`` (``status``, ``devices``, ``init-repo``) is dispatched to
    that command; the main command's PATHS take every other first argument (a directory of that name is
    ``./status``).
    """

    def main(  # type: ignore[override]  # click's overloads
        self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if argv[:1] and argv[0] in SUBCOMMANDS:
            command = SUBCOMMANDS[argv[0]]()
            return command.main(args=argv[1:], prog_name=f"{prog_name or 'reconcile'} {argv[0]}", **extra)
        return super().main(args=argv, prog_name=prog_name, **extra)


class _Root(_Command):
    """The main command, whose first argument may also name a subcommand: shell completion offers the
    subcommands' names with the paths and completes a subcommand's own options, and a first argument that
    is no file but close to a subcommand's name is a mistake that names it (``reconcile statu``)."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        if extra.get("resilient_parsing") and args[:1] and args[0] in SUBCOMMANDS:
            # shell completion (the only resilient parse): `reconcile status --<TAB>` completes status's options
            command = SUBCOMMANDS[args[0]]()
            return command.make_context(f"{info_name} {args[0]}", args[1:], parent, **extra)
        return super().make_context(info_name, args, parent, **extra)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = args[0] if args else ""
        if not ctx.resilient_parsing and not first.startswith("-") and (mistake := _subcommand_typo(first)):
            raise terminal.UsageMistake(mistake, ctx)  # before click's "no such option" for the subcommand's options
        return super().parse_args(ctx, args)


def _subcommand_typo(path: str) -> str | None:
    """A PATH that does not exist and is close to a subcommand's name (difflib): the mistake that says so."""
    if not path or os.path.lexists(path):
        return None
    import difflib

    close = difflib.get_close_matches(path, SUBCOMMANDS, n=1, cutoff=0.6)
    return f"{path}: no such file or directory; did you mean 'reconcile {close[0]}'?" if close else None


def _complete_paths(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """PATHS, and before the first path the subcommands' names: ``reconcile st<TAB>`` offers ``status``.
    With a name to offer, the files are listed here too (a shell shows only one kind otherwise)."""
    from click.shell_completion import CompletionItem

    names = [] if ctx.params.get("paths") else [name for name in SUBCOMMANDS if name.startswith(incomplete)]
    if not names:
        return [CompletionItem(incomplete, type="file")]
    import glob

    files = sorted(path + os.sep if os.path.isdir(path) else path for path in glob.glob(f"{glob.escape(incomplete)}*"))
    return [CompletionItem(name) for name in [*names, *files]]


if TYPE_CHECKING:
    _ParamType = click.ParamType[float, object]
else:
    _ParamType = click.ParamType  # generic only from click 8.3 (pyproject allows 8.2)


class _Duration(_ParamType):
    """A positive duration as manifests write them (``90s``, ``10m``, ``1h30m``) or plain seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        from reconciler.durations import parse_duration

        text = str(value).strip().lower()
        try:
            seconds = parse_duration(f"{text}s" if text.isdigit() else text)
        except ValueError:
            seconds = 0
        if seconds <= 0:
            self.fail(f"{value!r} is not a duration: use a positive number of seconds or 90s, 10m, 1h", param, ctx)
        return float(seconds)


def _check_key_file(path: str, option: str = "--keys ") -> None:
    """--keys must name a regular file, refused at once otherwise: opening a FIFO or a device would
    wait for a writer forever (the archive loader opens without blocking and checks again)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise UserError(f"{option}{path}: {(exc.strerror or str(exc)).lower()}") from exc
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise UserError(f"{option}{path} is {kind}: give the key archive file (targets.only.key.tgz)")


def _keys_held(path: str) -> str:
    """What a --keys archive holds (``ED25519 key 1f2e...``), read at once: an archive that cannot be read is
    an error before anything else, even when no step of this run needs the key."""
    from reconciler import signing

    return signing.describe_keys(signing.archive_keys(signing.load_key_archive_file(path)))


_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command(cls=_Root, context_settings=_CONTEXT)
@click.argument("paths", nargs=-1, type=click.Path(), shell_complete=_complete_paths)
@click.option("--dry-run", is_flag=True, help="Plan only: no keys needed, never writes.")
@click.option("--check", is_flag=True, help="Validate the manifests only; no backend.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice([f.value for f in OutputFormat]),
    default="text",
    show_default=True,
    help="Plan output.",
)
@click.option("--detailed-exitcode", is_flag=True, help="With --dry-run: exit 2 when ready operations exist.")
@click.option("--base", metavar="REV", help="Plan only the waves whose manifest or UUID files changed since REV.")
@click.option("--rev", metavar="REV", help="Read the manifests at a git revision instead of the work tree.")
@click.option("--allow-dirty", is_flag=True, help="Apply from a work tree with uncommitted changes.")
@click.option("--watch", is_flag=True, help="Re-plan whenever a manifest or UUID file changes.")
@click.option(
    "--out",
    "out_file",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="With --dry-run: save the plan (JSON, with a fingerprint of the factory state) for --plan.",
)
@click.option(
    "--plan",
    "plan_file",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Apply exactly a plan saved with --out; refused when a fresh plan would do anything else.",
)
@click.option(
    "--plan-max-age",
    metavar="DURATION",
    type=_Duration(),
    help="With --plan: refuse a saved plan older than this by the factory's clock (90m, 24h, 7d) [default: 24h].",
)
@cliopts.factory_options
@click.option(
    "--keys",
    type=click.Path(dir_okay=False),
    help="Offline targets key archive (fioctl format); or RECONCILE_KEYS with the archive as base64.",
)
@click.option("--signer", "signer_uri", metavar="URI", help="A securesystemslib signer URI for the offline key.")
@click.option(
    "--without-key",
    is_flag=True,
    help="Apply only the steps that need no key (rollout, complete, "
    "cancel); hold inits for a run with the key. Never reads a key.",
)
@click.option(
    "--unlock",
    is_flag=True,
    help="Free the factory's apply lease left by an apply that died, once the writes it left unsettled "
    "show their outcome in the factory, and exit.",
)
@click.option(
    "--force",
    is_flag=True,
    help="With --unlock: also free a lease whose holder looks alive or that cannot be read, forgetting the "
    "writes it left unsettled (it says which: check those waves' histories).",
)
@click.option(
    "--timeout",
    type=_Duration(),
    default="10m",
    show_default=True,
    envvar="RECONCILE_TIMEOUT",
    help="The most a run may spend with the factory (90s, 10m, 1h); each request also ends after 30s "
    "[env RECONCILE_TIMEOUT].",
)
@click.option(
    "--yes", "-y", "assume_yes", is_flag=True, help="Apply without asking (a prompt appears only on a terminal)."
)
@click.option("--no-color", is_flag=True, help="No colour on a terminal (also: NO_COLOR set).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="reconciler")
def main(
    paths: tuple[str, ...],
    dry_run: bool,
    check: bool,
    output_format: str,
    detailed_exitcode: bool,
    base: str | None,
    rev: str | None,
    allow_dirty: bool,
    watch: bool,
    out_file: str | None,
    plan_file: str | None,
    plan_max_age: float | None,
    factory: str | None,
    api_url: str | None,
    local: str | None,
    allow_insecure_http: bool,
    keys: str | None,
    signer_uri: str | None,
    without_key: bool,
    unlock: bool,
    force: bool,
    timeout: float,
    assume_yes: bool,
    no_color: bool,
    debug: bool,
) -> None:
    """Reconcile production OTA waves with the wave manifests under PATHS (default: the current directory).

    The API token is read from RECONCILE_API_TOKEN and sent as OSF-TOKEN. Other commands: `reconcile
    status` (the waves and their devices), `reconcile devices --tag TAG ... > uuids/canary.lst` (a UUID
    file from the fleet), `reconcile init-repo DIR --factory NAME` (a new release repository), `reconcile
    keys FILE` (the key ids a key archive holds), `reconcile import DIR` (manifests that adopt the factory's
    active waves).
    """
    terminal.disable_color(no_color)
    if api_url and not (check or watch or unlock):
        # A plan's observation goes out together once it has the wave list (a dry run) or the lease (an
        # apply): the connections for its reads open now, sized from the manifest files (not read yet),
        # while the run imports and reads. A saved plan's apply asks once it has read its plan.
        from reconciler import connections, manifestfiles

        applying = not dry_run and not plan_file
        waves = manifestfiles.count(paths or ["."], limit=connections.MAX_CONCURRENT) if not plan_file else 0
        cliopts.connect_early(api_url, allow_insecure_http, connections.observation_connections(waves, apply=applying))
    try:
        _check_saved_plan_options(out_file, plan_file, dry_run=dry_run, check=check, watch=watch, base=base)
        if plan_max_age is not None and not plan_file:
            raise UserError("--plan-max-age is how old a saved plan --plan applies may be: it needs --plan FILE")
        saved = None
        if plan_file:
            from reconciler.apply import load_saved_plan

            saved = load_saved_plan(plan_file)
            paths = paths or saved.paths
        paths_given = list(paths) or ["."]
        if not rev and (mistake := next(filter(None, map(_subcommand_typo, paths)), None)):
            raise UserError(mistake)
        if keys and signer_uri:
            raise UserError("give the offline key once: --keys FILE or --signer URI, not both")
        if without_key and (keys or signer_uri):
            raise UserError("--without-key never uses a key: drop --keys and --signer")
        if keys:
            _check_key_file(keys)
            _err(f"--keys {keys} holds {_keys_held(keys)}")
        if force and not unlock:
            raise UserError("--force works with --unlock")
        if detailed_exitcode and not dry_run:
            raise UserError("--detailed-exitcode works with --dry-run")
        options = RunOptions(
            mode=Mode.of(check=check, dry_run=dry_run),
            output_format=OutputFormat(output_format),
            detailed_exitcode=detailed_exitcode,
            base=base,
            rev=rev,
            allow_dirty=allow_dirty,
            factory=factory,
            api_url=api_url,
            local=local,
            allow_insecure_http=allow_insecure_http,
            keys=keys,
            signer_uri=signer_uri,
            without_key=without_key,
            timeout=timeout,
            out_file=out_file,
            saved=saved,
            plan_max_age=_plan_max_age(plan_max_age),
            assume_yes=assume_yes,
        )
        if unlock:
            sys.exit(_unlock(paths_given, options, force=force))
        if watch:
            if rev:
                raise UserError("--watch reads the work tree; it cannot be combined with --rev")
            from reconciler.cli.watch import watch as watch_paths

            preview = options.preview()
            watch_paths(paths_given, lambda: _captured_run(paths_given, preview))
            sys.exit(EXIT_OK)
        sys.exit(run(paths_given, options))
    except ReconcilerError as exc:
        if debug:
            raise
        _report(exc)
        sys.exit(EXIT_ERROR)
    finally:
        cliopts.discard_early()


@click.command(cls=_Command, context_settings=_CONTEXT)
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--factory", required=True, help="The factory the repository releases to.")
@click.option(
    "--action",
    metavar="OWNER/REPO@REF",
    help="Where action.yml lives, pinned to a commit SHA; without it the workflow names a placeholder to replace.",
)
def init_repo(directory: str, factory: str, action: str | None) -> None:
    """Start a release repository in DIRECTORY: releases/ with a commented first manifest, a vendored
    wave schema for editors, the release workflow and a README for the team. Never overwrites."""
    from pathlib import Path

    from reconciler.cli import initrepo

    try:
        written = initrepo.init_repo(Path(directory), factory, action)
    except ReconcilerError as exc:
        _report(exc)
        sys.exit(EXIT_ERROR)
    for path in written:
        click.echo(printable(f"wrote {path}"))
    initialized = initrepo.git_init(Path(directory))
    if initialized:
        click.echo(printable(f"initialized a git repository in {directory} (git init)"))
    if action and (warning := initrepo.pin_warning(action)):
        _err(f"warning: {warning}")
    if not action:
        _err(
            f"next: replace {initrepo.ACTION_PLACEHOLDER} in .github/workflows/release.yml with the action's repository "
            "and a full commit SHA (or rerun with --action)"
        )
    for line in initrepo.next_steps(Path(directory), factory, initialized):
        _err(line)


@click.command(cls=_Command, context_settings=_CONTEXT)
@click.option("--tag", required=True, help="The production devices of this tag.")
@click.option("--group", help="Only devices in this device group.")
@click.option(
    "--below",
    type=click.IntRange(min=0),
    metavar="VERSION",
    help="Only devices on a build below VERSION (not yet updated).",
)
@click.option("--seen-within", metavar="DURATION", help="Only devices seen within DURATION (e.g. 24h).")
@click.option("--limit", type=click.IntRange(1, 400_000), help="The N most recently seen devices.")
@click.option("--sample", type=click.IntRange(1, 400_000), help="N devices at random (reproducible with --seed).")
@click.option("--seed", type=click.IntRange(min=0), help="The seed of --sample [default: a new one, printed].")
@click.option(
    "--include-staged",
    is_flag=True,
    help="Keep devices the tag's active wave has staged already (is-wave); left out by default.",
)
@cliopts.factory_options
@click.option("--no-color", is_flag=True, help="No colour on a terminal (also: NO_COLOR set).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def devices(
    tag: str,
    group: str | None,
    below: int | None,
    seen_within: str | None,
    limit: int | None,
    sample: int | None,
    seed: int | None,
    include_staged: bool,
    factory: str | None,
    api_url: str | None,
    local: str | None,
    allow_insecure_http: bool,
    no_color: bool,
    debug: bool,
) -> None:
    """Print the UUIDs of matching production devices, one a line: a UUID file for a phase's `uuids:`
    (fioctl's `--uuids @FILE` reads it too). How it was made goes to stderr, for the commit message.
    At most 400,000 devices (a phase's limit; the plan rolls out more than 10,000 in parts): more is an
    error that says how to split."""
    terminal.disable_color(no_color)
    try:
        selection = _device_selection(tag, group, below, seen_within, limit, sample, seed, include_staged)
        from reconciler.factory import FactoryClient, how_made, list_devices, select_backend

        backend = select_backend(api_url=api_url, factory=factory, local=local, allow_insecure_http=allow_insecure_http)
        for note in (backend.note or "").splitlines():  # each line escaped on its own: a note has several
            _err(note)
        progress = terminal.Progress("Reading the device list")
        try:
            with FactoryClient(backend) as client:
                listing = list_devices(client, selection, progress)
        finally:
            progress.close()
    except ReconcilerError as exc:
        if debug:
            raise
        _report(exc)
        sys.exit(EXIT_ERROR)
    click.echo("\n".join(listing.uuids))
    for line in how_made(selection, listing, backend.factory, backend.label):
        _err(line)


def _device_selection(
    tag: str,
    group: str | None,
    below: int | None,
    seen_within: str | None,
    limit: int | None,
    sample: int | None,
    seed: int | None,
    include_staged: bool,
) -> DeviceSelection:
    """``reconcile devices``' options as the selection they make, refused when they contradict each other;
    a ``--sample`` without ``--seed`` gets a new seed (printed in "Made with", so the sample can be made
    again)."""
    import secrets

    from reconciler.factory import DeviceSelection
    from reconciler.manifest import parse_duration

    if limit is not None and sample is not None:
        raise UserError("--limit takes the most recently seen devices, --sample a random set: give one")
    if seed is not None and sample is None:
        raise UserError("--seed makes --sample reproducible; it needs --sample N")
    seconds = None
    if seen_within is not None:
        try:
            seconds = parse_duration(seen_within)
        except ValueError as exc:
            raise UserError(f"--seen-within {exc}") from exc
    if sample is not None and seed is None:
        seed = secrets.randbelow(1_000_000)
    return DeviceSelection(tag, group, below, seen_within, seconds, limit, sample, seed, include_staged)


@click.command(cls=_Command, context_settings=_CONTEXT)
@click.argument("archive", type=click.Path(dir_okay=False))
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def keys_command(archive: str, debug: bool) -> None:
    """Show the keys a key archive (fioctl's targets.only.key.tgz) holds: each key's id and type, one a line.
    The plan names the key ids a wave still needs a signature of; this says which archive holds which.
    Never prints key material."""
    try:
        _check_key_file(archive, option="")
        from reconciler import signing

        for key in signing.archive_keys(signing.load_key_archive_file(archive)):
            click.echo(f"{key.keyid}  {key.keytype}")
    except ReconcilerError as exc:
        if debug:
            raise
        _report(exc)
        sys.exit(EXIT_ERROR)


# `reconcile NAME ...` runs NAME's own command, imported only when named (`reconcile --help` stays quick);
# every other first argument is one of the main command's PATHS.
SUBCOMMANDS: dict[str, Callable[[], click.Command]] = {
    "status": _status_command,
    "devices": lambda: devices,
    "init-repo": lambda: init_repo,
    "keys": lambda: keys_command,
    "import": _import_command,
}


def _check_saved_plan_options(
    out_file: str | None, plan_file: str | None, *, dry_run: bool, check: bool, watch: bool, base: str | None
) -> None:
    if out_file and plan_file:
        raise UserError("--out saves a new plan, --plan applies a saved one: give one")
    for option, given in (("--out", out_file), ("--plan", plan_file)):
        if given and (check or watch or base):
            other = "--check" if check else "--watch" if watch else "--base"
            raise UserError(f"{option} works with whole plans; it cannot be combined with {other}")
    if out_file and not dry_run:
        raise UserError("--out saves a plan without applying it: add --dry-run (then apply it with --plan FILE)")


def _plan_max_age(seconds: float | None) -> timedelta | None:
    """None for the default, which the apply resolves: importing reconciler.apply here for it cost every
    run its import (``--check`` of 1,000 manifests: 0.4 s of CPU more, bench/bench_check.py)."""
    return None if seconds is None else timedelta(seconds=seconds)


def _captured_run(paths: list[str], options: RunOptions) -> str:
    """One run for --watch, returning what it printed; the watch shows it and its changes."""
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        run(paths, options)
    return buffer.getvalue().rstrip("\n")


def _report(exc: ReconcilerError) -> None:
    """Every error line starts with ``error:`` (README); a manifest problem keeps its ``file:line:col:`` first,
    as compilers print it, and one without a position (a path that does not exist) gets the prefix."""
    if isinstance(exc, ValidationFailed):
        for problem in exc.problems:
            _err(str(problem), error=not problem.file and problem.severity is Severity.ERROR)
        if exc.more:
            _err(exc.more)
    else:
        _err(str(exc), error=True)


def run(paths: list[str], options: RunOptions) -> int:
    """Validate the manifests under ``paths``, and unless ``--check``, plan and apply them."""
    ahead = (
        cliopts.read_ahead(
            options.api_url, options.factory, options.allow_insecure_http, options.timeout, paths=paths or ["."]
        )
        if options.mode is not Mode.CHECK and options.saved is None
        else None
    )
    from reconciler import manifest  # after the read-ahead started: its import overlaps the first round trip

    source = provenance = provenance_later = None
    try:
        if ahead is not None and options.mode is Mode.PLAN and not options.rev:
            # A dry run against an API prints its provenance (the commit) with the plan: git is read while
            # the factory answers the observation instead of before it (_plan_and_apply).
            provenance_later = functools.partial(manifest.git_context, paths, rev=None, require_clean=False)
        elif options.rev or options.mode is not Mode.CHECK:
            # Every plan carries provenance; apply refuses a dirty work tree unless --allow-dirty.
            source, provenance = manifest.git_context(
                paths, rev=options.rev, require_clean=options.mode is Mode.APPLY and not options.allow_dirty
            )
        loaded = manifest.load(paths, source=source)
    except BaseException:
        if ahead is not None:
            ahead[0].close()
        raise
    finally:
        if source is not None:
            source.close()  # GitSource keeps git cat-file processes open
    if options.mode is Mode.APPLY and options.api_url:  # the observation's connections open during the lease
        # The waves, now read: more connections open when they outnumber the files ``main`` counted.
        from reconciler.connections import observation_connections

        wanted = observation_connections(sum(not spec.cancel for spec in loaded.specs), apply=True)
        if ahead is not None:
            ahead[0].preconnect(wanted)
        else:  # a saved plan's apply: for the client it makes
            cliopts.connect_early(options.api_url, options.allow_insecure_http, wanted)
    for warning in loaded.warnings:
        _err(str(warning))
    if loaded.warnings_omitted:
        _err(more_line(loaded.warnings_omitted, "warnings"))
    if options.mode is Mode.CHECK:
        click.echo(f"{terminal.plural(loaded.files, 'manifest')}, {terminal.plural(len(loaded.specs), 'wave')}: ok")
        return EXIT_OK
    only, diffs = None, None
    if options.base:
        changes = manifest.changed_waves(paths[0], options.base, options.rev)
        only, diffs = {spec.name for spec in changes.select(loaded.specs)}, changes.diffs
    return _plan_and_apply(
        loaded.specs, options, paths, only, diffs, ahead=ahead, provenance=provenance, provenance_later=provenance_later
    )


def _plan_and_apply(
    specs: list[WaveSpec],
    options: RunOptions,
    paths: list[str],
    only: set[str] | None,
    diffs: dict[str, str] | None,
    *,
    ahead: tuple[FactoryClient, Callable[[], WaveListHead]] | None,
    provenance: dict[str, Any] | None,
    provenance_later: Callable[[], tuple[object, dict[str, Any] | None]] | None,
) -> int:
    """The session's steps in order (reconciler.apply.session), printing the plan between them.
    ``provenance_later`` reads git while the factory answers (a dry run's read-ahead)."""
    from reconciler.apply import DEFAULT_PLAN_MAX_AGE, KeySource, open_session, summary
    from reconciler.factory import FactoryClient, select_backend
    from reconciler.render import plan as render

    _refuse_throwaway_factory_in_ci(options.api_url, options.local)
    backend = (
        ahead[0].backend
        if ahead
        else select_backend(
            api_url=options.api_url,
            factory=options.factory,
            local=options.local,
            allow_insecure_http=options.allow_insecure_http,
        )
    )
    for note in (backend.note or "").splitlines():  # each line escaped on its own: a note has several
        _err(note)
    client = ahead[0] if ahead else FactoryClient(backend, run_timeout=options.timeout)
    provenance_read = client.ahead(lambda: provenance_later()[1]) if provenance_later else None
    keys = KeySource(options.keys, options.signer_uri, options.without_key)
    writes = options.mode is Mode.APPLY
    with open_session(client, (provenance or {}).get("repository"), _err, writes=writes) as session:
        planned = session.observe_and_plan(
            specs,
            only=only,
            waves=ahead[1] if ahead and not writes else None,
            guess=ahead[1] if ahead and writes else None,  # read before the lease: it only chooses what to read
            keys=keys,
            lost=functools.partial(_lost, paths, options.rev),
        )
        if provenance_read is not None:
            provenance = provenance_read()
        try:
            planned = session.count_devices(session.scope_keys(planned, keys))  # may read the key against root
        except ReconcilerError as exc:
            _json_error(options, planned.plan, provenance, diffs, exc)
            raise
        plan = planned.plan
        applying = writes and plan.changes
        if options.output_format is not OutputFormat.JSON or not applying:
            # an apply's JSON comes after it, with each step's outcome; `--out -` puts the saved plan on
            # stdout, so the plan shown goes to stderr
            click.echo(_rendered(plan, options.output_format, provenance, diffs), err=options.out_file == "-")
        if options.out_file:
            session.save(planned, options.out_file, provenance, diffs, paths)
        elif options.saved is not None and not session.check_saved(
            planned, options.saved, DEFAULT_PLAN_MAX_AGE if options.plan_max_age is None else options.plan_max_age
        ):
            return EXIT_ERROR
        if not applying:
            if plan.errors:
                return EXIT_ERROR  # drift, conflicts and errors fail every mode, --detailed-exitcode included
            return EXIT_CHANGES if options.detailed_exitcode and plan.changes else EXIT_OK
        if not session.confirm(planned, assume_yes=options.assume_yes, reviewed=options.saved is not None):
            _err("apply canceled: nothing was applied", error=True)
            return EXIT_ERROR
        try:
            result = session.apply(planned)
        except ReconcilerError as exc:
            _json_error(options, plan, provenance, diffs, exc)
            raise
        if options.output_format is OutputFormat.JSON:
            outcomes = [(o.step, str(o.outcome), o.message) for o in result.outcomes]
            click.echo(render.to_json(plan, provenance, diffs, outcomes))
    return EXIT_OK if summary(plan, result, _err) else EXIT_ERROR


def _lost(paths: list[str], rev: str | None, waves: set[str], factory: str) -> Mapping[str, LostManifest]:
    """The commits of the release repository that renamed or deleted these active waves' manifests."""
    from reconciler import manifest

    return manifest.lost_manifests(paths, waves, factory, rev)


def _json_error(
    options: RunOptions, plan: Plan, provenance: dict[str, Any] | None, diffs: dict[str, str] | None, exc: Exception
) -> None:
    """An apply that stops with an error after planning still answers ``--format json`` on stdout: the plan
    and the error (``error`` in schemas/plan.schema.json); the error line goes to stderr as always."""
    if options.output_format is OutputFormat.JSON and options.mode is Mode.APPLY:
        from reconciler.render import plan as render

        click.echo(json.dumps({**render.to_dict(plan, provenance, diffs), "error": {"message": str(exc)}}, indent=2))


def _rendered(
    plan: Plan, output_format: OutputFormat, provenance: dict[str, Any] | None, diffs: dict[str, str] | None
) -> str:
    from reconciler.render import plan as render

    if output_format is OutputFormat.JSON:
        return render.to_json(plan, provenance, diffs)
    if output_format is OutputFormat.MARKDOWN:
        return render.to_markdown(plan, provenance, diffs)
    return terminal.styled_plan(render.to_text(plan, diffs))


def _refuse_throwaway_factory_in_ci(api_url: str | None, local: str | None) -> None:
    """In CI, a missing API URL is a misconfiguration, not a wish for a demo factory that vanishes with the runner."""
    in_ci = [name for name in ("CI", "GITHUB_ACTIONS") if os.environ.get(name, "").lower() not in ("", "0", "false")]
    if in_ci and not api_url and not local:
        raise UserError(
            f"{' and '.join(in_ci)} set but no API URL: refusing to plan against a throwaway local factory; "
            f"set RECONCILE_API_URL and RECONCILE_FACTORY (and RECONCILE_API_TOKEN), or name a local factory "
            f"with --local PATH or RECONCILE_LOCAL"
        )


def _unlock(paths: list[str], options: RunOptions, *, force: bool) -> int:
    """``--unlock``: free the factory's apply lease left by a dead apply, once the writes it left unsettled
    are settled against the factory (within ``--timeout``); ``--force`` frees a live or unreadable one."""
    from reconciler import manifest
    from reconciler.apply import unlock
    from reconciler.factory import FactoryClient, select_backend

    _, provenance = manifest.git_context(paths, rev=None, require_clean=False)
    if provenance is None:
        raise UserError(f"not a git repository: {paths[0]}: the apply lease lives in the release repository")
    backend = select_backend(
        api_url=options.api_url,
        factory=options.factory,
        local=options.local,
        allow_insecure_http=options.allow_insecure_http,
    )
    with FactoryClient(backend, run_timeout=options.timeout) as client:
        click.echo(printable(unlock(client, provenance["repository"], force=force, echo=_err)))
    return EXIT_OK
