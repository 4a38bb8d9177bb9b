"""``reconcile``: validate manifests, plan against the factory, and apply.

Wiring and exit codes only (DESIGN.md §6): 0 success or no changes; 1 invalid input, refused
or failed operation; 2 changes pending (only with ``--detailed-exitcode``). A user's mistake
is printed as one line per problem, never a traceback (``--debug`` shows one). Heavy
modules are imported inside the command so ``reconcile --help`` stays quick.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from reconciler import terminal
from reconciler.cli import options as cliopts
from reconciler.errors import ReconcilerError, UserError, ValidationFailed, more_line
from reconciler.safetext import printable

if TYPE_CHECKING:
    from reconciler.factory import FactoryClient

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


class _Command(terminal.OneLineUsage):
    """Usage mistakes are one line and exit 1 like every other user error (2 means "changes pending" to CI).

    A first argument naming one of ``SUBCOMMANDS`` (``status``, ``devices``, ``init-repo``) is dispatched to
    that command; the main command's PATHS take every other first argument (a directory of that name is
    ``./status``).
    """

    def main(self, args=None, prog_name=None, **extra):  # type: ignore[override]  # click's overloads
        argv = list(sys.argv[1:] if args is None else args)
        if argv[:1] and argv[0] in SUBCOMMANDS:
            command = SUBCOMMANDS[argv[0]]()
            return command.main(args=argv[1:], prog_name=f"{prog_name or 'reconcile'} {argv[0]}", **extra)
        return super().main(args=argv, prog_name=prog_name, **extra)


class _Duration(click.ParamType):
    """A positive duration as manifests write them (``90s``, ``10m``, ``1h30m``) or plain seconds."""

    name = "duration"

    def convert(self, value, param, ctx):
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


def _check_key_file(path: str) -> None:
    """--keys must name a regular file, refused at once otherwise: opening a FIFO or a device would
    wait for a writer forever (the archive loader opens without blocking and checks again)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise UserError(f"--keys {path}: {(exc.strerror or str(exc)).lower()}") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise UserError(f"--keys {path} is {kind}: give the key archive file (targets.only.key.tgz)")


_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command(cls=_Command, context_settings=_CONTEXT)
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--dry-run", is_flag=True, help="Plan only: no keys needed, never writes.")
@click.option("--check", is_flag=True, help="Validate the manifests only; no backend.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "markdown"]),
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
@click.option("--unlock", is_flag=True, help="Free the factory's apply lease left by an apply that died, and exit.")
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
    paths,
    dry_run,
    check,
    output_format,
    detailed_exitcode,
    base,
    rev,
    allow_dirty,
    watch,
    out_file,
    plan_file,
    factory,
    api_url,
    local,
    keys,
    signer_uri,
    without_key,
    unlock,
    timeout,
    assume_yes,
    no_color,
    debug,
):
    """Reconcile production OTA waves with the wave manifests under PATHS (default: the current directory).

    The API token is read from RECONCILE_API_TOKEN and sent as OSF-TOKEN. Other commands: `reconcile
    status` (the waves and their devices), `reconcile devices --tag TAG ... > uuids/canary.lst` (a UUID
    file from the fleet), `reconcile init-repo DIR --factory NAME` (a new release repository).
    """
    options = {
        "dry_run": dry_run,
        "check": check,
        "output_format": output_format,
        "detailed_exitcode": detailed_exitcode,
        "base": base,
        "rev": rev,
        "allow_dirty": allow_dirty,
        "factory": factory,
        "api_url": api_url,
        "local": local,
        "keys": keys,
        "signer_uri": signer_uri,
        "without_key": without_key,
        "timeout": timeout,
        "out_file": out_file,
        "saved": None,
        "assume_yes": assume_yes,
    }
    terminal.disable_color(no_color)
    try:
        _check_saved_plan_options(out_file, plan_file, dry_run=dry_run, check=check, watch=watch, base=base)
        if plan_file:
            from reconciler.apply import savedplan

            options["saved"] = savedplan.load(plan_file)
            paths = paths or tuple(options["saved"]["saved"].get("paths") or ())
        paths = list(paths) or ["."]
        if keys and signer_uri:
            raise UserError("give the offline key once: --keys FILE or --signer URI, not both")
        if without_key and (keys or signer_uri):
            raise UserError("--without-key never uses a key: drop --keys and --signer")
        if keys:
            _check_key_file(keys)
        if detailed_exitcode and not dry_run:
            raise UserError("--detailed-exitcode works with --dry-run")
        if unlock:
            sys.exit(_unlock(paths, factory, api_url, local))
        if watch:
            if rev:
                raise UserError("--watch reads the work tree; it cannot be combined with --rev")
            from reconciler.cli.watch import watch as watch_paths

            # A watch previews: it never applies, whatever the other options say.
            watch_paths(paths, lambda: _captured_run(paths, {**options, "dry_run": True}))
            sys.exit(EXIT_OK)
        sys.exit(run(paths, **options))
    except ReconcilerError as exc:
        if debug:
            raise
        _report(exc)
        sys.exit(EXIT_ERROR)


@click.command(cls=_Command, context_settings=_CONTEXT)
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--factory", required=True, help="The factory the repository releases to.")
@click.option(
    "--action",
    metavar="OWNER/REPO@REF",
    help="Where action.yml lives, pinned to a commit SHA; without it the workflow names a placeholder to replace.",
)
def init_repo(directory, factory, action):
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
        click.echo(f"wrote {path}")
    if not action:
        _err(
            f"next: replace {initrepo.ACTION_PLACEHOLDER} in .github/workflows/release.yml with the action's repository "
            "and a full commit SHA (or rerun with --action)"
        )


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
@cliopts.factory_options
@click.option("--no-color", is_flag=True, help="No colour on a terminal (also: NO_COLOR set).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def devices(tag, group, below, seen_within, limit, sample, seed, factory, api_url, local, no_color, debug):
    """Print the UUIDs of matching production devices, one a line: a UUID file for a phase's `uuids:`
    (fioctl's `--uuids @FILE` reads it too). How it was made goes to stderr, for the commit message.
    At most 400,000 devices (a phase's limit; the plan rolls out more than 10,000 in parts): more is an
    error that says how to split."""
    terminal.disable_color(no_color)
    try:
        if limit is not None and sample is not None:
            raise UserError("--limit takes the most recently seen devices, --sample a random set: give one")
        if seed is not None and sample is None:
            raise UserError("--seed makes --sample reproducible; it needs --sample N")
        sys.exit(_devices(tag, group, below, seen_within, limit, sample, seed, factory, api_url, local))
    except ReconcilerError as exc:
        if debug:
            raise
        _report(exc)
        sys.exit(EXIT_ERROR)


def _devices(tag, group, below, seen_within, limit, sample, seed, factory, api_url, local) -> int:
    import secrets

    from reconciler.factory import DeviceSelection, FactoryClient, how_made, list_devices, select_backend
    from reconciler.manifest import parse_duration

    seconds = None
    if seen_within is not None:
        try:
            seconds = parse_duration(seen_within)
        except ValueError as exc:
            raise UserError(f"--seen-within {exc}") from None
    if sample is not None and seed is None:
        seed = secrets.randbelow(1_000_000)  # printed in "Made with", so the sample can be made again
    selection = DeviceSelection(tag, group, below, seen_within, seconds, limit, sample, seed)
    backend = select_backend(api_url=api_url, factory=factory, local=local)
    if backend.note:
        _err(backend.note)
    progress = terminal.Progress("Reading the device list")
    try:
        with FactoryClient(backend) as client:
            listing = list_devices(client, selection, progress)
    finally:
        progress.close()
    click.echo("\n".join(listing.uuids))
    for line in how_made(selection, listing, backend.factory, backend.label):
        _err(line)
    return EXIT_OK


# `reconcile NAME ...` runs NAME's own command, imported only when named (`reconcile --help` stays quick);
# every other first argument is one of the main command's PATHS.
SUBCOMMANDS: dict[str, Callable[[], click.Command]] = {
    "status": _status_command,
    "devices": lambda: devices,
    "init-repo": lambda: init_repo,
}


def _check_saved_plan_options(out_file, plan_file, *, dry_run, check, watch, base) -> None:
    if out_file and plan_file:
        raise UserError("--out saves a new plan, --plan applies a saved one: give one")
    for option, given in (("--out", out_file), ("--plan", plan_file)):
        if given and (check or watch or base):
            other = "--check" if check else "--watch" if watch else "--base"
            raise UserError(f"{option} works with whole plans; it cannot be combined with {other}")
    if out_file and not dry_run:
        raise UserError("--out saves a plan without applying it: add --dry-run (then apply it with --plan FILE)")


def _captured_run(paths, options) -> str:
    """One run for --watch, returning what it printed; the watch shows it and its changes."""
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        run(paths, **options)
    return buffer.getvalue().rstrip("\n")


def _report(exc: ReconcilerError) -> None:
    if isinstance(exc, ValidationFailed):
        for problem in exc.problems:
            _err(str(problem))
        if exc.more:
            _err(exc.more)
    else:
        _err(str(exc), error=True)


def run(
    paths,
    *,
    dry_run,
    check,
    output_format,
    detailed_exitcode,
    base,
    rev,
    allow_dirty,
    factory,
    api_url,
    local,
    keys,
    signer_uri,
    without_key,
    timeout,
    out_file=None,
    saved=None,
    assume_yes=True,
) -> int:
    ahead = _read_ahead(api_url, factory, timeout) if dry_run and not check and saved is None else None
    from reconciler import manifest  # after the read-ahead started: its import overlaps the first round trip

    source = provenance = provenance_later = None
    try:
        if ahead is not None and not rev:
            # A dry run against an API prints its provenance (the commit) with the plan: git is read while
            # the factory answers the observation instead of before it (_plan_and_apply).
            provenance_later = functools.partial(manifest.git_context, paths, rev=None, require_clean=False)
        elif rev or not check:
            # Every plan carries provenance; apply refuses a dirty work tree unless --allow-dirty.
            source, provenance = manifest.git_context(paths, rev=rev, require_clean=not dry_run and not allow_dirty)
        loaded = manifest.load(paths, source=source)
    except BaseException:
        if ahead is not None:
            ahead[0].close()
        raise
    finally:
        if source is not None:
            source.close()  # GitSource keeps git cat-file processes open
    for warning in loaded.warnings:
        _err(str(warning))
    if loaded.warnings_omitted:
        _err(more_line(loaded.warnings_omitted, "warnings"))
    if check:
        click.echo(f"{terminal.plural(loaded.files, 'manifest')}, {terminal.plural(len(loaded.specs), 'wave')}: ok")
        return EXIT_OK
    only, diffs = None, None
    if base:
        changes = manifest.changed_waves(paths[0], base, rev)
        only, diffs = {spec.name for spec in changes.select(loaded.specs)}, changes.diffs
    return _plan_and_apply(
        loaded.specs,
        only=only,
        dry_run=dry_run,
        output_format=output_format,
        detailed_exitcode=detailed_exitcode,
        factory=factory,
        api_url=api_url,
        local=local,
        keys=keys,
        signer_uri=signer_uri,
        provenance=provenance,
        diffs=diffs,
        without_key=without_key,
        timeout=timeout,
        paths=paths,
        out_file=out_file,
        saved=saved,
        assume_yes=assume_yes,
        ahead=ahead,
        provenance_later=provenance_later,
    )


def _read_ahead(api_url, factory, timeout) -> tuple[FactoryClient, Callable[[], list[dict]]] | None:
    """A plan against an API starts reading the wave list (which needs no manifest) before the
    manifests load, so its round trips overlap with reading files. Only for a dry run: an apply reads
    the factory once it holds the apply lease. The embedded factory has no round trips to hide, and
    creating it would be a write before validation. A mistake in the options is reported in its usual
    place, after the manifests' own errors."""
    if not api_url:
        return None
    from reconciler.factory import FactoryClient, select_backend

    try:
        client = FactoryClient(select_backend(api_url=api_url, factory=factory, local=None), run_timeout=timeout)
    except ReconcilerError:
        return None
    return client, client.ahead(client.list_waves)


def _plan_and_apply(
    specs,
    *,
    only,
    dry_run,
    output_format,
    detailed_exitcode,
    factory,
    api_url,
    local,
    keys,
    signer_uri,
    provenance,
    diffs,
    without_key,
    timeout,
    paths,
    out_file,
    saved,
    assume_yes,
    ahead=None,
    provenance_later=None,
) -> int:
    from reconciler.core import SignOp, build_plan, without_keyed_steps, without_signs_by
    from reconciler.factory import FactoryClient, fill_device_counts, observe, select_backend
    from reconciler.render import plan as render

    if saved is not None:
        from reconciler.apply import savedplan

        specs = savedplan.pinned(saved, specs)  # the reviewed expiry of a relative `expires: 365d`
    _refuse_throwaway_factory_in_ci(api_url, local)
    backend = ahead[0].backend if ahead else select_backend(api_url=api_url, factory=factory, local=local)
    if backend.note:
        _err(backend.note)
    client = ahead[0] if ahead else FactoryClient(backend, run_timeout=timeout)
    provenance_read = client.ahead(lambda: provenance_later()[1]) if provenance_later else None
    repository = (provenance or {}).get("repository")
    with client, _exclusive_writer(client, backend, repository, dry_run) as guard:
        observed = observe(client, specs, ahead[1] if ahead else None, signing=not dry_run and not without_key)
        if provenance_read is not None:
            provenance = provenance_read()
        observed_at = time.monotonic()
        plan = build_plan(specs, observed)
        if only is not None:
            plan = plan.restricted_to(only)  # --base: the changed waves, planned in the context of all
        make_signer = None if without_key else _signer_factory(keys, signer_uri, backend)
        if without_key:
            plan = without_keyed_steps(plan)  # inits wait for the keyed job; nothing below loads a key
            if os.environ.get("RECONCILE_KEYS"):
                _err("warning: RECONCILE_KEYS is set but --without-key never reads it; keep the key out of this job")
        elif (
            not dry_run
            and make_signer is not None
            and observed.signing is not None
            and any(isinstance(op, SignOp) and op.ready for op in plan.operations)
        ):
            # Which waves this run's key may sign is known only once the key is read against root.
            make_signer = _made_once(make_signer)
            signer = make_signer(observed.signing.root, observed.signing.online_key)
            plan = without_signs_by(plan, signer.keyid)
        plan = fill_device_counts(client, plan, observed)
        applying = not dry_run and plan.changes
        if output_format != "json" or not applying:  # an apply's JSON comes after it, with each step's outcome
            click.echo(_rendered(plan, output_format, provenance, diffs))
        if out_file or saved is not None:
            from reconciler.apply import savedplan

            if out_file:
                if plan.errors:
                    raise UserError(f"the plan has errors: not saved to {out_file}")
                savedplan.write(
                    out_file,
                    {
                        **render.to_dict(plan, provenance, diffs),
                        "saved": savedplan.saved_section(plan, observed, paths),
                    },
                )
                _err(f"Saved the plan to {out_file}: apply exactly these steps with `reconcile --plan {out_file}`.")
            else:
                stale = savedplan.stale_reasons(saved, plan, observed)
                for reason in stale:
                    _err(f"stale plan: {reason}", error=True)
                if stale:
                    _err("Make a new plan with `reconcile --dry-run --out FILE` and review it.")
                    return EXIT_ERROR
        if not applying:
            if plan.errors:
                return EXIT_ERROR  # drift, conflicts and errors fail every mode, --detailed-exitcode included
            return EXIT_CHANGES if detailed_exitcode and plan.changes else EXIT_OK
        from reconciler.apply import Outcome, apply_plan

        # A person at a terminal confirms what they just read; CI (no TTY) and a reviewed saved plan do not.
        prompted = not assume_yes and saved is None and terminal.interactive()
        if prompted and not terminal.confirm_apply(len(plan.ready)):
            _err("apply canceled: nothing was applied", error=True)
            return EXIT_ERROR
        _err("Applying:")
        # The first step starts from this observation while it is fresh (apply.FRESH_FOR); after a person
        # confirmed, the apply observes the factory again.
        result = apply_plan(
            client,
            specs,
            plan,
            make_signer,
            terminal.counted(_err, len(plan.ready)),
            guard,
            None if prompted else observed,
            observed_at,
        )
        if output_format == "json":
            outcomes = [(o.step, str(o.outcome), o.message) for o in result.outcomes]
            click.echo(render.to_json(plan, provenance, diffs, outcomes))
    done, already = len(result.of(Outcome.DONE)), len(result.of(Outcome.ALREADY_DONE))
    if result.ok and not plan.errors:
        _err(f"Apply complete: {done} done, {already} already done.")
        return EXIT_OK
    _err(
        f"Apply incomplete: {done} done, {already} already done, {len(result.of(Outcome.FAILED))} failed, "
        f"{len(result.of(Outcome.HELD))} held."
    )
    for failed in result.of(Outcome.FAILED):
        _err(f"{failed.step.describe()} failed: {failed.message}", error=True)
    for wave in plan.held:
        _err(f"held: wave '{wave.wave}' (tag {wave.tag}) and the later steps of its tag: {wave.reason}")
    for step in result.of(Outcome.HELD):
        _err(f"held: {step.step.describe()}: {step.message}")
    return EXIT_ERROR


def _rendered(plan, output_format: str, provenance, diffs) -> str:
    from reconciler.render import plan as render

    if output_format == "json":
        return render.to_json(plan, provenance, diffs)
    if output_format == "markdown":
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


@contextlib.contextmanager
def _exclusive_writer(client, backend, repository, dry_run: bool):
    """At most one writer per factory, from before the plan to the last write (README, "Concurrent
    writers"): the apply lease in the release repository, plus a local factory's directory lock."""
    if dry_run:
        yield None
        return
    from reconciler.apply import exclusive_writer

    local_dir = os.path.dirname(backend.lock_path) if backend.lock_path else None
    with exclusive_writer(client, repository, local_dir, _err) as guard:
        yield guard


def _unlock(paths, factory, api_url, local) -> int:
    """``--unlock``: free the factory's apply lease left by a dead apply (its unsettled write stays noted)."""
    from reconciler import manifest
    from reconciler.apply import lease_store, unlock
    from reconciler.factory import select_backend

    _, provenance = manifest.git_context(paths, rev=None, require_clean=False)
    if provenance is None:
        raise UserError(f"not a git repository: {paths[0]}: the apply lease lives in the release repository")
    backend = select_backend(api_url=api_url, factory=factory, local=local)
    click.echo(unlock(lease_store(provenance["repository"], backend), backend.factory))
    return EXIT_OK


def _made_once(make_signer):
    """The signer factory, making its signer once: the plan reads the key's id before the apply signs."""
    made: list = []

    def once(root, online):
        if not made:
            made.append(make_signer(root, online))
        return made[0]

    return once


def _signer_factory(keys, signer_uri, backend):
    """How to get the offline targets signer once root and the online key are known (None: no key given).

    In order: --signer, --keys, RECONCILE_KEYS, then the embedded factory's operator key.
    """
    if keys:
        signer_uri = f"archive:{keys}"
    elif not signer_uri and os.environ.get("RECONCILE_KEYS"):
        signer_uri = "envvar:RECONCILE_KEYS"
    elif not signer_uri and backend.keys_archive:
        signer_uri = f"archive:{backend.keys_archive}"
    if not signer_uri:
        return None
    from reconciler import signing

    return lambda root, online: signing.signer_from_uri(signer_uri, root, online)
