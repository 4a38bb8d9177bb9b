"""``reconcile``: validate manifests, plan against the factory, and apply.

Wiring and exit codes only (DESIGN.md §6): 0 success or no changes; 1 invalid input, refused
or failed operation; 2 changes pending (only with ``--detailed-exitcode``). A user's mistake
is printed as one line per problem, never a traceback (``--debug`` shows one). Heavy
modules are imported inside the command so ``reconcile --help`` stays quick.
"""

from __future__ import annotations

import contextlib
import os
import sys

import click

from reconciler import terminal
from reconciler.errors import UserError, ValidationFailed

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def _err(message: str) -> None:
    click.echo(message, err=True)


class _Command(click.Command):
    """Usage mistakes exit 1 like every other user error; 2 means "changes pending" to CI.

    ``reconcile devices ...`` (and every name in ``SUBCOMMANDS``) is dispatched to its own
    command: the main command's PATHS take every other first argument (a directory named
    ``devices`` is ``./devices``).
    """

    def main(self, args=None, prog_name=None, **extra):  # type: ignore[override]  # click's overloads
        argv = list(sys.argv[1:] if args is None else args)
        subcommand = SUBCOMMANDS.get(argv[0]) if argv else None
        if subcommand is not None:
            return subcommand.main(args=argv[1:], prog_name=f"{prog_name or 'reconcile'} {argv[0]}", **extra)
        return super().main(args=argv, prog_name=prog_name, **extra)

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            exc.exit_code = EXIT_ERROR  # type: ignore[misc]  # click declares it a ClassVar; an instance override is what we need
            raise


@click.command(cls=_Command, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--dry-run", is_flag=True, help="Plan only: no keys needed, never writes.")
@click.option("--check", is_flag=True, help="Validate the manifests only; no backend.")
@click.option("--format", "output_format", type=click.Choice(["text", "json", "markdown"]), default="text",
              show_default=True, help="Plan output.")
@click.option("--detailed-exitcode", is_flag=True, help="With --dry-run: exit 2 when ready operations exist.")
@click.option("--base", metavar="REV", help="Plan only the waves whose manifest or UUID files changed since REV.")
@click.option("--rev", metavar="REV", help="Read the manifests at a git revision instead of the work tree.")
@click.option("--allow-dirty", is_flag=True, help="Apply from a work tree with uncommitted changes.")
@click.option("--watch", is_flag=True, help="Re-plan whenever a manifest or UUID file changes.")
@click.option("--out", "out_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="With --dry-run: save the plan (JSON, with a fingerprint of the factory state) for --plan.")
@click.option("--plan", "plan_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Apply exactly a plan saved with --out; refused when a fresh plan would do anything else.")
@click.option("--factory", envvar="RECONCILE_FACTORY", help="Factory name [env RECONCILE_FACTORY].")
@click.option("--api-url", envvar="RECONCILE_API_URL", help="Foundries API URL [env RECONCILE_API_URL]; "
              "without it, the embedded local factory.")
@click.option("--local", envvar="RECONCILE_LOCAL", type=click.Path(),
              help="Where the embedded local factory lives [env RECONCILE_LOCAL; default: user state dir].")
@click.option("--keys", type=click.Path(dir_okay=False), help="Offline targets key archive (fioctl format); "
              "or RECONCILE_KEYS with the archive as base64.")
@click.option("--signer", "signer_uri", metavar="URI", help="A securesystemslib signer URI for the offline key.")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Apply without asking (a prompt appears only on a terminal).")
@click.option("--no-color", is_flag=True, help="No colour on a terminal (also: NO_COLOR set).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="reconciler")
def main(paths, dry_run, check, output_format, detailed_exitcode, base, rev, allow_dirty, watch, out_file, plan_file,
         factory, api_url, local, keys, signer_uri, assume_yes, no_color, debug):
    """Reconcile production OTA waves with the wave manifests under PATHS (default: the current directory).

    The API token is read from RECONCILE_API_TOKEN and sent as OSF-TOKEN. A UUID file from the
    fleet: `reconcile devices --tag TAG ... > uuids/canary.lst`.
    """
    options = {"dry_run": dry_run, "check": check, "output_format": output_format, "detailed_exitcode": detailed_exitcode,
                   "base": base, "rev": rev, "allow_dirty": allow_dirty, "factory": factory, "api_url": api_url, "local": local,
                   "keys": keys, "signer_uri": signer_uri, "out_file": out_file, "saved": None, "assume_yes": assume_yes}
    terminal.disable_color(no_color)
    try:
        _check_saved_plan_options(out_file, plan_file, dry_run=dry_run, check=check, watch=watch, base=base)
        if plan_file:
            from reconciler import savedplan

            options["saved"] = savedplan.load(plan_file)
            paths = paths or tuple(options["saved"]["saved"].get("paths") or ())
        paths = list(paths) or ["."]
        if keys and signer_uri:
            raise UserError("give the offline key once: --keys FILE or --signer URI, not both")
        if detailed_exitcode and not dry_run:
            raise UserError("--detailed-exitcode works with --dry-run")
        if watch:
            if rev:
                raise UserError("--watch reads the work tree; it cannot be combined with --rev")
            from reconciler.watch import watch as watch_paths

            # A watch previews: it never applies, whatever the other options say.
            watch_paths(paths, lambda: _captured_run(paths, {**options, "dry_run": True}))
            sys.exit(EXIT_OK)
        sys.exit(run(paths, **options))
    except UserError as exc:
        if debug:
            raise
        _report(exc)
        sys.exit(EXIT_ERROR)


_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command(cls=_Command, context_settings=_CONTEXT)
@click.option("--tag", required=True, help="The production devices of this tag.")
@click.option("--group", help="Only devices in this device group.")
@click.option("--below", type=click.IntRange(min=0), metavar="VERSION",
              help="Only devices on a build below VERSION (not yet updated).")
@click.option("--seen-within", metavar="DURATION", help="Only devices seen within DURATION (e.g. 24h).")
@click.option("--limit", type=click.IntRange(1, 10_000), help="The N most recently seen devices.")
@click.option("--sample", type=click.IntRange(1, 10_000), help="N devices at random (reproducible with --seed).")
@click.option("--seed", type=click.IntRange(min=0), help="The seed of --sample [default: a new one, printed].")
@click.option("--factory", envvar="RECONCILE_FACTORY", help="Factory name [env RECONCILE_FACTORY].")
@click.option("--api-url", envvar="RECONCILE_API_URL", help="Foundries API URL [env RECONCILE_API_URL]; "
              "without it, the embedded local factory.")
@click.option("--local", envvar="RECONCILE_LOCAL", type=click.Path(),
              help="Where the embedded local factory lives [env RECONCILE_LOCAL].")
@click.option("--no-color", is_flag=True, help="No colour on a terminal (also: NO_COLOR set).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def devices(tag, group, below, seen_within, limit, sample, seed, factory, api_url, local, no_color, debug):
    """Print the UUIDs of matching production devices, one a line: a UUID file for a phase's `uuids:`
    (fioctl's `--uuids @FILE` reads it too). How it was made goes to stderr, for the commit message.
    At most 10,000 devices: more is an error that says how to split."""
    terminal.disable_color(no_color)
    try:
        if limit is not None and sample is not None:
            raise UserError("--limit takes the most recently seen devices, --sample a random set: give one")
        if seed is not None and sample is None:
            raise UserError("--seed makes --sample reproducible; it needs --sample N")
        sys.exit(_devices(tag, group, below, seen_within, limit, sample, seed, factory, api_url, local))
    except UserError as exc:
        if debug:
            raise
        _report(exc)
        sys.exit(EXIT_ERROR)


def _devices(tag, group, below, seen_within, limit, sample, seed, factory, api_url, local) -> int:
    import secrets

    from reconciler import devices as fleet
    from reconciler.client import FactoryClient, select_backend
    from reconciler.manifest import parse_duration

    seconds = None
    if seen_within is not None:
        try:
            seconds = parse_duration(seen_within)
        except ValueError as exc:
            raise UserError(f"--seen-within {exc}") from None
    if sample is not None and seed is None:
        seed = secrets.randbelow(1_000_000)  # printed in "Made with", so the sample can be made again
    selection = fleet.Selection(tag, group, below, seen_within, seconds, limit, sample, seed)
    backend = select_backend(api_url=api_url, factory=factory, local=local)
    if backend.note:
        _err(backend.note)
    progress = terminal.Progress("Reading the device list")
    try:
        with FactoryClient(backend) as client:
            listing = fleet.list_devices(client, selection, progress)
    finally:
        progress.close()
    click.echo("\n".join(listing.uuids))
    for line in fleet.how_made(selection, listing, backend.factory, backend.label):
        _err(line)
    return EXIT_OK


SUBCOMMANDS: dict[str, click.Command] = {"devices": devices}


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


def _report(exc: UserError) -> None:
    if isinstance(exc, ValidationFailed):
        for problem in exc.problems:
            _err(str(problem))
    else:
        _err(terminal.error_line(str(exc)))


def run(paths, *, dry_run, check, output_format, detailed_exitcode, base, rev, allow_dirty, factory, api_url,
        local, keys, signer_uri, out_file=None, saved=None, assume_yes=True) -> int:
    from reconciler import manifest

    source = provenance = None
    if rev or not check:
        # Every plan carries provenance; apply refuses a dirty work tree unless --allow-dirty.
        source, provenance = manifest.git_context(paths, rev=rev, require_clean=not dry_run and not allow_dirty)
    try:
        loaded = manifest.load(paths, source=source)
    finally:
        if source is not None:
            source.close()  # GitSource keeps git cat-file processes open
    for warning in loaded.warnings:
        _err(str(warning))
    if check:
        click.echo(f"{terminal.plural(loaded.files, 'manifest')}, {terminal.plural(len(loaded.specs), 'wave')}: ok")
        return EXIT_OK
    only, diffs = None, None
    if base:
        changes = manifest.changed_waves(paths[0], base, rev)
        only, diffs = {spec.name for spec in changes.select(loaded.specs)}, changes.diffs
    return _plan_and_apply(loaded.specs, only=only, dry_run=dry_run, output_format=output_format, detailed_exitcode=detailed_exitcode,
                           factory=factory, api_url=api_url, local=local, keys=keys, signer_uri=signer_uri,
                           provenance=provenance, diffs=diffs, paths=paths, out_file=out_file, saved=saved,
                           assume_yes=assume_yes)


def _plan_and_apply(specs, *, only, dry_run, output_format, detailed_exitcode, factory, api_url, local, keys, signer_uri,
                    provenance, diffs, paths, out_file, saved, assume_yes) -> int:
    from reconciler import render
    from reconciler.client import FactoryClient, select_backend
    from reconciler.core.plan import build_plan
    from reconciler.observe import fill_device_counts, observe

    if saved is not None:
        from reconciler import savedplan

        specs = savedplan.pinned(saved, specs)  # the reviewed expiry of a relative `expires: 365d`
    backend = select_backend(api_url=api_url, factory=factory, local=local)
    if backend.note:
        _err(backend.note)
    with FactoryClient(backend) as client, _apply_lock(backend, dry_run):
        observed = observe(client, specs)
        plan = build_plan(specs, observed)
        if only is not None:
            plan = plan.restricted_to(only)  # --base: the changed waves, planned in the context of all
        if not plan.errors:
            plan = fill_device_counts(client, plan)
        if output_format == "json":
            click.echo(render.to_json(plan, provenance, diffs))
        elif output_format == "markdown":
            click.echo(render.to_markdown(plan, provenance, diffs))
        else:
            click.echo(terminal.styled_plan(render.to_text(plan, diffs)))
        if plan.errors:
            return EXIT_ERROR
        if out_file or saved is not None:
            from reconciler import savedplan

            if out_file:
                savedplan.write(out_file, {**render.to_dict(plan, provenance, diffs),
                                           "saved": savedplan.saved_section(plan, observed, paths)})
                _err(f"Saved the plan to {out_file}: apply exactly these steps with `reconcile --plan {out_file}`.")
            else:
                stale = savedplan.stale_reasons(saved, plan, observed)
                for reason in stale:
                    _err(terminal.error_line(f"stale plan: {reason}"))
                if stale:
                    _err("Make a new plan with `reconcile --dry-run --out FILE` and review it.")
                    return EXIT_ERROR
        if dry_run or not plan.changes:
            return EXIT_CHANGES if detailed_exitcode and plan.changes else EXIT_OK
        from reconciler.apply import apply_plan

        # A person at a terminal confirms what they just read; CI (no TTY) and a reviewed saved plan do not.
        if not assume_yes and saved is None and terminal.interactive() and not terminal.confirm_apply(len(plan.ready)):
            _err(terminal.error_line("apply canceled: nothing was applied"))
            return EXIT_ERROR
        make_signer = _signer_factory(keys, signer_uri, backend)
        _err("Applying:")
        result = apply_plan(client, specs, plan, make_signer, terminal.counted(_err, len(plan.ready)))
        _err(f"Apply complete: {len(result.done)} done, {len(result.skipped)} already done.")
    return EXIT_OK


@contextlib.contextmanager
def _apply_lock(backend, dry_run: bool):
    """One apply at a time on a local factory: two would both see a step ready and run it twice.

    Against the Foundries API the workflow serialises applies (a concurrency group, README).
    """
    if dry_run or backend.lock_path is None:
        yield
        return
    import fcntl

    with open(backend.lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _err(f"Waiting for another apply on {backend.label} to finish ...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


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
