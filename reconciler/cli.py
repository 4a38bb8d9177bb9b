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

from reconciler.errors import UserError, ValidationFailed

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def _err(message: str) -> None:
    click.echo(message, err=True)


def _status_command() -> click.Command:
    from reconciler.status import status_command

    return status_command


# `reconcile NAME ...` runs NAME's own command (imported only when used, so `--help` stays quick);
# every other first argument is one of the main command's PATHS.
SUBCOMMANDS = {"status": _status_command}


class _Command(click.Command):
    """Usage mistakes exit 1 like every other user error; 2 means "changes pending" to CI.

    A first argument naming one of ``SUBCOMMANDS`` is dispatched to that command (a directory of that
    name is ``./status``).
    """

    def main(self, args=None, prog_name=None, **extra):  # type: ignore[override]  # click's overloads
        argv = list(sys.argv[1:] if args is None else args)
        if argv[:1] and argv[0] in SUBCOMMANDS:
            command = SUBCOMMANDS[argv[0]]()
            return command.main(args=argv[1:], prog_name=f"{prog_name or 'reconcile'} {argv[0]}", **extra)
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
@click.option("--factory", envvar="RECONCILE_FACTORY", help="Factory name [env RECONCILE_FACTORY].")
@click.option("--api-url", envvar="RECONCILE_API_URL", help="Foundries API URL [env RECONCILE_API_URL]; "
              "without it, the embedded local factory.")
@click.option("--local", envvar="RECONCILE_LOCAL", type=click.Path(),
              help="Where the embedded local factory lives [env RECONCILE_LOCAL; default: user state dir].")
@click.option("--keys", type=click.Path(dir_okay=False), help="Offline targets key archive (fioctl format); "
              "or RECONCILE_KEYS with the archive as base64.")
@click.option("--signer", "signer_uri", metavar="URI", help="A securesystemslib signer URI for the offline key.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="reconciler")
def main(paths, dry_run, check, output_format, detailed_exitcode, base, rev, allow_dirty, watch, factory, api_url,
         local, keys, signer_uri, debug):
    """Reconcile production OTA waves with the wave manifests under PATHS (default: the current directory).

    The API token is read from RECONCILE_API_TOKEN and sent as OSF-TOKEN. `reconcile status [PATHS]`
    shows what the waves are doing to the fleet.
    """
    options = {"dry_run": dry_run, "check": check, "output_format": output_format, "detailed_exitcode": detailed_exitcode,
                   "base": base, "rev": rev, "allow_dirty": allow_dirty, "factory": factory, "api_url": api_url, "local": local,
                   "keys": keys, "signer_uri": signer_uri}
    paths = list(paths) or ["."]
    try:
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
        _err(f"error: {exc}")


def run(paths, *, dry_run, check, output_format, detailed_exitcode, base, rev, allow_dirty, factory, api_url,
        local, keys, signer_uri) -> int:
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
        click.echo(f"{loaded.files} manifests, {len(loaded.specs)} waves: ok")
        return EXIT_OK
    only, diffs = None, None
    if base:
        changes = manifest.changed_waves(paths[0], base, rev)
        only, diffs = {spec.name for spec in changes.select(loaded.specs)}, changes.diffs
    return _plan_and_apply(loaded.specs, only=only, dry_run=dry_run, output_format=output_format, detailed_exitcode=detailed_exitcode,
                           factory=factory, api_url=api_url, local=local, keys=keys, signer_uri=signer_uri,
                           provenance=provenance, diffs=diffs)


def _plan_and_apply(specs, *, only, dry_run, output_format, detailed_exitcode, factory, api_url, local, keys, signer_uri,
                    provenance, diffs) -> int:
    from reconciler import render
    from reconciler.client import FactoryClient, select_backend
    from reconciler.core.plan import build_plan
    from reconciler.observe import fill_device_counts, observe

    backend = select_backend(api_url=api_url, factory=factory, local=local)
    if backend.note:
        _err(backend.note)
    with FactoryClient(backend) as client, _apply_lock(backend, dry_run):
        plan = build_plan(specs, observe(client, specs))
        if only is not None:
            plan = plan.restricted_to(only)  # --base: the changed waves, planned in the context of all
        if not plan.errors:
            plan = fill_device_counts(client, plan)
        if output_format == "json":
            click.echo(render.to_json(plan, provenance, diffs))
        elif output_format == "markdown":
            click.echo(render.to_markdown(plan, provenance, diffs))
        else:
            click.echo(render.to_text(plan, diffs))
        if plan.errors:
            return EXIT_ERROR
        if dry_run or not plan.changes:
            return EXIT_CHANGES if detailed_exitcode and plan.changes else EXIT_OK
        from reconciler.apply import apply_plan

        make_signer = _signer_factory(keys, signer_uri, backend)
        _err("Applying:")
        result = apply_plan(client, specs, plan, make_signer, _err)
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
