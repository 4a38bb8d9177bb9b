"""``reconcile status``: the command; what it reads and its request budget are in ``factory/status.py``."""

from __future__ import annotations

import sys

import click

from reconciler import terminal
from reconciler.cli import options as cliopts
from reconciler.core import WaveSpec
from reconciler.errors import ReconcilerError, UserError, ValidationFailed, more_line
from reconciler.factory import FactoryClient, read_devices, read_status
from reconciler.files import write_atomically
from reconciler.safetext import printable


@click.command(
    "status",
    cls=terminal.OneLineUsage,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--format",
    "output_format",
    type=click.Choice([f.value for f in cliopts.StatusFormat]),
    default="text",
    show_default=True,
    help="Output; html: one self-contained page (no script, no request).",
)
@click.option(
    "-o",
    "--output",
    "output_file",
    metavar="FILE",
    help="Write the output to FILE (atomically: whole or not at all) instead of stdout.",
)
@click.option(
    "--devices",
    "devices_of",
    metavar="WAVE",
    help="List the devices WAVE reached that are not on its "
    "version (failed, offline, pending); after a cancel, the devices left on its version.",
)
@click.option("--failed", "only", flag_value="failed", help="With --devices: only devices whose update failed.")
@click.option("--offline", "only", flag_value="offline", help="With --devices: only offline devices.")
@click.option("--pending", "only", flag_value="pending", help="With --devices: only devices still to update.")
@click.option(
    "--with-failed",
    is_flag=True,
    help="Count each active wave's failed devices per phase (reads every "
    "online device's update history that is below the wave version: two requests each).",
)
@cliopts.factory_options
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def status_command(
    paths: tuple[str, ...],
    output_format: str,
    output_file: str | None,
    devices_of: str | None,
    only: str | None,
    with_failed: bool,
    factory: str | None,
    api_url: str | None,
    local: str | None,
    allow_insecure_http: bool,
    debug: bool,
) -> None:
    """Show every wave the manifests under PATHS manage (default: the current directory) and every
    unmanaged active wave: phases, devices reached/updated/pending/offline, the next gate, expiry.
    Reads the factory only; never writes to it."""
    if api_url:
        # A status's reads go out together once it has the wave list: their connections open now, sized
        # from the manifest files (not read yet), while it imports and reads them.
        from reconciler import connections, manifestfiles

        files = manifestfiles.count(paths or ["."], limit=connections.MAX_CONCURRENT) if not devices_of else 0
        cliopts.connect_early(api_url, allow_insecure_http, connections.status_connections(files))
    from reconciler.factory import select_backend
    from reconciler.render import report as render_report
    from reconciler.render import status as render_status

    try:
        if devices_of and output_format == cliopts.StatusFormat.HTML:
            raise UserError("--format html shows the waves; with --devices WAVE use text, json or markdown")
        if only and not devices_of:
            raise UserError(f"--{only} works with --devices WAVE")
        if with_failed and devices_of:
            raise UserError("--with-failed counts failures in the overview; with --devices WAVE use --failed")
        # Against an API the wave list is read while the manifests load, as a dry run reads it.
        ahead = (
            cliopts.read_ahead(api_url, factory, allow_insecure_http, paths=list(paths) or ["."])
            if not devices_of
            else None
        )
        try:
            specs = [] if devices_of else _load_specs(list(paths) or ["."])
        except BaseException:
            if ahead is not None:
                ahead[0].close()
            raise
        backend = (
            ahead[0].backend
            if ahead is not None
            else select_backend(api_url=api_url, factory=factory, local=local, allow_insecure_http=allow_insecure_http)
        )
        for note in (backend.note or "").splitlines():
            _say(note)
        with ahead[0] if ahead is not None else FactoryClient(backend) as client:
            if devices_of:
                wave, rows = read_devices(client, devices_of, only, _say)
                _emit(render_status.devices(wave, rows, client.server_now(), output_format), output_file)
            else:
                report = read_status(
                    client, specs, with_failed=with_failed, warn=_say, first=ahead[1] if ahead else None
                )
                if output_format == cliopts.StatusFormat.HTML:
                    _emit(render_report.page(render_status.to_dict(report)), output_file)
                else:
                    _emit(render_status.render(report, output_format), output_file)
    except ReconcilerError as exc:
        if debug:
            raise
        if isinstance(exc, ValidationFailed):
            for line in [*map(str, exc.problems), *([exc.more] if exc.more else [])]:
                _say(line)
        else:
            _say(f"error: {exc}")
        sys.exit(1)
    finally:
        cliopts.discard_early()


def _emit(text: str, path: str | None) -> None:
    """The output on stdout, or in ``path`` whole or not at all (``files.write_atomically``), so a reader (a
    CI artifact upload, a browser) never sees half a page."""
    if path is None or path == "-":
        click.echo(text)
        return
    write_atomically(path, text + "\n", "the status")


def _say(line: str) -> None:
    """One line on stderr, escaped: a factory's message cannot add a line or colour the terminal."""
    click.echo(printable(line), err=True)


def _load_specs(paths: list[str]) -> list[WaveSpec]:
    from reconciler import manifest

    loaded = manifest.load(paths)
    for warning in loaded.warnings:
        _say(str(warning))
    if loaded.warnings_omitted:
        _say(more_line(loaded.warnings_omitted, "warnings"))
    return loaded.specs
