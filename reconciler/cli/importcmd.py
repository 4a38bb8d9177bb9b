"""``reconcile import``: write the manifests that adopt waves the factory already has.

Everything is checked before the first write, and a run that cannot adopt every chosen wave writes
nothing and prints one ``error:`` line per reason (exit 1): a wave that a manifest under DIR already
manages, a file that exists (``--overwrite`` replaces it), a wave the manifest language cannot
represent (``manifest.problems_of``), and whatever the manifest loader or the planner finds wrong
with the new manifests among the existing ones. For that check the new files are loaded, with the
manifests already under DIR, by the same loader a run uses, and planned against the waves just read
by the same planner: an imported wave must come out with no drift, no error, no warning and no step.

The reads are read-only (``factory/adopt.py`` lists them). Each file is written whole, atomically (a
temporary file in DIR, then a hard link or a rename onto its name), directly in DIR under a name
checked by ``manifest.problems_of``: a symbolic link already at that name is never followed (it is an
existing file; ``--overwrite`` replaces the link itself).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import click
from msgspec import Struct, field

from reconciler import terminal
from reconciler.cli import options as cliopts
from reconciler.core import ObservedState, ObservedWave, WaveSpec, build_plan
from reconciler.errors import ReconcilerError, UserError, ValidationFailed
from reconciler.safetext import printable

if TYPE_CHECKING:
    from reconciler.factory import WaveListHead
    from reconciler.manifest import FileSource, Generated

FORMAT_VERSION = 1


class _Outcome(Struct):
    """What a run decided: files to write, waves skipped (already managed), and problems (then nothing is written)."""

    written: list[tuple[str, ObservedWave, int]] = field(default_factory=list)  # (path, wave, phases)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (wave, why)
    errors: list[str] = field(default_factory=list)


@click.command(
    "import",
    cls=terminal.OneLineUsage,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.argument("directory", type=click.Path())
@click.option("--wave", "waves", metavar="NAME", multiple=True, help="Import this wave (repeatable).")
@click.option("--active", is_flag=True, help="Import every active wave no manifest under DIR manages (the default).")
@click.option(
    "--all",
    "all_waves",
    is_flag=True,
    help="Also the finished waves, as complete: true or cancel: true manifests (the record of the past).",
)
@click.option(
    "--since", metavar="DATE", help="Only waves created at or after DATE (2026-11-01 or 2026-11-01T08:00:00Z)."
)
@click.option("--overwrite", is_flag=True, help="Replace a file of the same name in DIR (never by default).")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="What was written: lines, or JSON.",
)
@cliopts.factory_options
@click.option("--no-color", is_flag=True, help="No colour on a terminal (also: NO_COLOR set).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def import_command(
    directory: str,
    waves: tuple[str, ...],
    active: bool,
    all_waves: bool,
    since: str | None,
    overwrite: bool,
    output_format: str,
    factory: str | None,
    api_url: str | None,
    local: str | None,
    allow_insecure_http: bool,
    no_color: bool,
    debug: bool,
) -> None:
    """Write a manifest under DIRECTORY for each wave the factory already has (default: the active ones no
    manifest there manages), such that `reconcile --dry-run` right after finds no drift and nothing to do:
    one phase per rollout of its history, its target, tag and expiry, complete or cancel for a finished
    wave, and comments that say where each value came from. Reads the factory only; never overwrites a
    file unless --overwrite; writes nothing when any chosen wave cannot be adopted."""
    terminal.disable_color(no_color)
    if api_url:  # the wave list's first page then goes over a connection already open (cli/preconnect.py)
        from reconciler import connections

        cliopts.connect_early(api_url, allow_insecure_http, connections.READS_PER_PLAN)
    try:
        if waves and (active or all_waves):
            raise UserError("--wave names the waves to import: it cannot be combined with --active or --all")
        if active and all_waves:
            raise UserError("--all includes the active waves: give one of --active and --all")
        outcome, context = _run(
            directory, waves, all_waves, _since(since), overwrite, factory, api_url, local, allow_insecure_http
        )
    except ReconcilerError as exc:
        if debug:
            raise
        if isinstance(exc, ValidationFailed):
            for problem in exc.problems:
                _err(str(problem), error=not problem.file)
            if exc.more:
                _err(exc.more)
        else:
            _err(str(exc), error=True)
        sys.exit(1)
    finally:
        cliopts.discard_early()  # what no client claimed: the run stopped before it made one
    if output_format == "json":
        click.echo(json.dumps(_json(outcome, context, directory), indent=2))
    for name, why in outcome.skipped:
        _err(f"skipped wave '{name}': {why}")
    if outcome.errors:
        for error in outcome.errors:
            _err(error, error=True)
        _err("nothing was written")
        sys.exit(1)
    if output_format != "json":
        for path, wave, phases in outcome.written:
            click.echo(printable(f"wrote {path}: {_describe(wave, phases)}"))
    if not outcome.written:
        _err(
            "nothing to import: every chosen wave has a manifest already"
            if outcome.skipped
            else "nothing to import: no wave of the factory matches (finished waves need --all or --wave)"
        )
    else:
        _err(
            f"next: review and commit the files; `reconcile --dry-run {directory}` shows no drift and no step for "
            f"them; append a phase or set complete: true to go on"
        )


def _err(message: str, *, error: bool = False) -> None:
    """One line on stderr, escaped (a factory's names cannot add a line); ``error:`` in red on a terminal."""
    text = printable(message)
    click.echo(terminal.error_line(text) if error else text, err=True)


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    from reconciler.manifest import parse_date_time

    try:
        return parse_date_time(text if "t" in text.lower() else f"{text}T00:00:00Z")
    except ValueError as exc:
        raise UserError(f"--since {exc}") from exc


class _Context(Struct, frozen=True):
    factory: str
    backend: str


def _run(
    directory: str,
    named: tuple[str, ...],
    all_waves: bool,
    since: datetime | None,
    overwrite: bool,
    factory: str | None,
    api_url: str | None,
    local: str | None,
    allow_insecure_http: bool,
) -> tuple[_Outcome, _Context]:
    from reconciler import manifest
    from reconciler.factory import FactoryClient, read_wave_facts, read_waves, select_backend, wave_list_head

    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise UserError(f"{directory}: not a directory")
    # Against an API the wave list is read while the manifests under DIR load; the embedded factory is
    # opened after them (opening it may create it: no write before the manifests are valid).
    existing = None if api_url else _existing_specs(directory)
    try:
        backend = select_backend(api_url=api_url, factory=factory, local=local, allow_insecure_http=allow_insecure_http)
    except ReconcilerError:
        if existing is None:
            _existing_specs(directory)  # a manifest's mistakes are reported before the options'
        raise
    for note in (backend.note or "").splitlines():
        _err(note)
    outcome = _Outcome()
    with FactoryClient(backend) as client:
        context = _Context(client.factory, backend.label)
        first: Callable[[], WaveListHead] = functools.partial(wave_list_head, client, named=len(named), every=all_waves)
        if existing is None:  # against an API: the list's first page is read while DIR's manifests load
            first = client.ahead(first)
            existing = _existing_specs(directory)
        wanted = None if all_waves else {*named, *(spec.name for spec in existing)}
        observed = read_waves(client, wanted, first())
        selection = manifest.Selection.ALL if all_waves else manifest.Selection.ACTIVE
        chosen, outcome.errors = manifest.choose_waves(observed, named=named, selection=selection, since=since)
        chosen = _unmanaged(
            chosen, existing, client.factory, directory, overwrite=overwrite, named=bool(named), out=outcome
        )
        for wave in chosen:
            outcome.errors += manifest.problems_of(wave, client.factory)
        if outcome.errors or not chosen:
            return outcome, context
        facts, keys = read_wave_facts(client, chosen)
        now = client.server_now()
    generated = [
        manifest.generate(wave, manifest.WaveFacts(*facts[wave.name]), keys, factory=context.factory, now=now)
        for wave in chosen
    ]
    files = {_path(directory, g.file_name): g for g in generated}
    outcome.errors += _file_problems(directory, [g.file_name for g in generated], overwrite)
    if not outcome.errors:
        outcome.errors += _verify(directory, files, observed, context, now)
    if outcome.errors:
        return outcome, context
    _write_all(directory, files, overwrite)
    outcome.written = [(path, g.wave, g.phases) for path, g in files.items()]
    return outcome, context


def _path(directory: str, name: str) -> str:
    return os.path.normpath(os.path.join(directory, name))


def _existing_specs(directory: str) -> list[WaveSpec]:
    """The waves of the manifests already under DIR (none when it has none or does not exist yet); an
    invalid manifest there stops the import, as it stops every run."""
    from reconciler import manifest

    if not os.path.isdir(directory) or not manifest.FileSource().manifests(directory):
        return []
    loaded = manifest.load([directory])
    for warning in loaded.warnings:
        _err(str(warning))
    return loaded.specs


def _unmanaged(
    chosen: list[ObservedWave],
    existing: list[WaveSpec],
    factory: str,
    directory: str,
    *,
    overwrite: bool,
    named: bool,
    out: _Outcome,
) -> list[ObservedWave]:
    """The chosen waves no manifest under DIR manages. A named wave that one manages is an error; one the
    selection found is skipped. With ``--overwrite`` the manifest to be replaced does not count."""
    from reconciler import manifest

    managers = {s.name: s for s in existing if s.factory in (None, factory)}
    kept = []
    for wave in chosen:
        spec = managers.get(wave.name)
        replaced = (
            overwrite
            and spec is not None
            and os.path.abspath(spec.manifest) == os.path.abspath(_path(directory, manifest.file_name(wave.name)))
        )
        if spec is None or replaced:
            kept.append(wave)
        elif named:
            out.errors.append(
                f"wave '{wave.name}' is already managed by {spec.location}; edit that manifest (a wave has one)"
            )
        else:
            out.skipped.append((wave.name, f"already managed by {spec.location}"))
    return kept


def _file_problems(directory: str, names: list[str], overwrite: bool) -> list[str]:
    problems = []
    seen: dict[str, str] = {}
    for name in names:
        earlier = seen.setdefault(name.lower(), name)  # one file on a case-insensitive file system
        if earlier != name:
            problems.append(f"waves would share one file on a case-insensitive file system: {earlier}, {name}")
        path = _path(directory, name)
        if os.path.lexists(path) and not overwrite:
            problems.append(f"{path} exists: not overwritten (import into another directory, or give --overwrite)")
        elif os.path.isdir(path) or (os.path.lexists(path) and not os.path.islink(path) and not os.path.isfile(path)):
            problems.append(f"{path} exists and is not a file: not replaced")
    return problems


def _verify(
    directory: str, files: dict[str, Generated], observed: list[ObservedWave], context: _Context, now: datetime
) -> list[str]:
    """The new manifests with those under DIR, through the loader and the planner: each imported wave must
    load, and plan with no drift, error, warning or step. A problem here is the import's bug or a clash with
    an existing manifest (two waves left active on one tag): reported, and nothing written."""
    from reconciler import manifest

    texts = {path: g.text.encode() for path, g in files.items()}
    source = _WithNewFiles(manifest.FileSource(), directory, texts)
    try:
        specs = manifest.load([directory], source=source).specs
    except ValidationFailed as exc:
        return [str(p) for p in exc.problems] + ([exc.more] if exc.more else [])
    imported = {g.wave.name for g in files.values()}
    state = ObservedState(
        factory=context.factory, backend=context.backend, now=now, waves={w.name: w for w in observed}
    )
    plan = build_plan(specs, state)
    new_files = {source.display(path) for path in texts}
    problems = [str(p) for p in (*plan.errors, *plan.warnings) if p.file in new_files]
    problems += [
        f"wave '{op.wave}': the plan after the import would still {op.kind} it (a bug of reconcile import)"
        for op in plan.operations
        if op.wave in imported
    ]
    problems += [
        f"wave '{w.name}': the imported manifest drifts from the factory: {'; '.join(w.drift)} (a bug of reconcile import)"
        for w in plan.waves
        if w.name in imported and w.drift
    ]
    return problems


class _WithNewFiles:
    """The manifests under DIR as they will be: a ``manifest.FileSource`` with the new files added (or
    replacing those of the same name), read from memory, so they are checked before anything is written."""

    def __init__(self, files: FileSource, directory: str, texts: dict[str, bytes]):
        self.files = files
        self.directory = os.path.normpath(directory)
        self.texts = {self.files.display(path): text for path, text in texts.items()}

    def manifests(self, path: str) -> list[str]:
        from reconciler import manifest

        try:
            keys = self.files.manifests(path)
        except manifest.SourceError:
            if os.path.normpath(path) != self.directory:
                raise
            keys = []
        return sorted({*keys, *self.texts})

    def read(self, key: str) -> bytes:
        return self.texts[key] if key in self.texts else self.files.read(key)

    def resolve(self, manifest: str, relative: str) -> str:
        return self.files.resolve(manifest, relative)

    def display(self, key: str) -> str:
        return self.files.display(key)

    def exists(self, key: str) -> bool:
        return key in self.texts or self.files.exists(key)

    def repository(self, manifest: str) -> str:
        return self.files.repository(manifest)


def _write_all(directory: str, files: dict[str, Generated], overwrite: bool) -> None:
    """Each file whole or not at all (temporary file, then link or rename); a failure removes the files
    this run created before it, so a run writes all of them or none."""
    os.makedirs(directory, exist_ok=True)
    created: list[str] = []
    try:
        for path, generated in files.items():
            existed = os.path.lexists(path)
            _write_atomically(directory, path, generated.text.encode(), overwrite)
            if not existed:
                created.append(path)
    except OSError as exc:
        for path in created:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise UserError(
            f"cannot write in {directory}: {(exc.strerror or str(exc)).lower()}; nothing was written"
        ) from exc


def _write_atomically(directory: str, path: str, data: bytes, overwrite: bool) -> None:
    descriptor, temporary = tempfile.mkstemp(prefix=".import-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        if overwrite:
            os.replace(temporary, path)  # a symbolic link at ``path`` is replaced, never followed
            return
        try:
            os.link(temporary, path)  # fails if anything appeared at ``path`` meanwhile: never overwrites
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: checked, then renamed (a narrow race)
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, "file exists", path) from None
            os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _describe(wave: ObservedWave, phases: int) -> str:
    return f"wave '{wave.name}' (version {wave.version}, tag {wave.tag}, {wave.status}, {terminal.plural(phases, 'phase')})"


def _json(outcome: _Outcome, context: _Context, directory: str) -> dict[str, object]:
    return {
        "format_version": FORMAT_VERSION,
        "factory": context.factory,
        "backend": context.backend,
        "directory": directory,
        "written": [
            {
                "file": path,
                "wave": wave.name,
                "version": wave.version,
                "tag": wave.tag,
                "status": str(wave.status),
                "phases": phases,
            }
            for path, wave, phases in outcome.written
        ],
        "skipped": [{"wave": wave, "reason": why} for wave, why in outcome.skipped],
        "errors": outcome.errors,
    }
