"""Wave manifests (docs/architecture.md, "Manifests") -> WaveSpec objects, with every problem of the run at once.

A run either yields specs for all manifests or fails with all of its errors, each at
``file:line:col``: an operator fixing a release repository should see the whole list
in one go, and nothing is applied while any manifest is wrong. The steps, in order:
list the files (_source.py, _git.py), read YAML with positions (_yaml.py), check the
schema (_schema.py), turn values into numbers (_values.py), UUID lists (_uuids.py) and
schedules (windows and freezes, with the repository's reconcile.yaml files: _windows.py),
then the rules that span documents and files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import TypeVar

from msgspec import Struct
from msgspec.structs import replace

from reconciler.core import (
    MAX_ROLLOUT_UUIDS,
    CompleteSpec,
    FailureBound,
    Gate,
    Location,
    OnFailure,
    PhaseSpec,
    WaveSpec,
    format_duration,
)
from reconciler.errors import Problem, Problems, Severity, ValidationFailed
from reconciler.manifest._schema import WaveSchema, describe, kind_of
from reconciler.manifest._source import FileSource, ManifestSource, SourceError, decode_utf8
from reconciler.manifest._uuids import UuidLines, parse_file, parse_inline
from reconciler.manifest._values import (
    parse_date_time,
    parse_duration,
    parse_failure_bound,
    parse_limit,
    parse_percent,
)
from reconciler.manifest._windows import POLICY_FILE, POLICY_KIND, Policies, is_policy_file, read_schedule
from reconciler.manifest._yaml import Document, YamlPath, position, read_documents

DEFAULT_EXPIRES = 365 * 86400
# Keys whose values the planner may find wrong against the factory (a target below production, ...).
POSITIONED_KEYS = ("target", "tag", "sourceTag", "prune", "expires", "expiresAt", "phases", "cancel", "onFailure")
PHASE_POSITIONED_KEYS = ("group", "limit", "uuids")

_T = TypeVar("_T")
_R = TypeVar("_R")


class LoadResult(Struct):
    specs: list[WaveSpec]  # in file order
    warnings: list[Problem]  # sorted, the first errors.MAX_SHOWN
    files: int  # manifest files read
    warnings_omitted: int = 0  # warnings beyond those


def load(paths: Sequence[str], source: ManifestSource | None = None) -> LoadResult:
    """Every wave of the manifests under ``paths``; raises ValidationFailed with all errors."""
    run = _Run(source if source is not None else FileSource())
    keys: list[str] = []
    for path in paths:
        try:
            found = run.source.manifests(path)
        except SourceError as error:
            run.errors.append(Problem("", 0, 0, f"{path}: {error}"))
            continue
        if not found:
            run.errors.append(Problem("", 0, 0, f"{path}: no *.yaml or *.yml manifests found"))
        keys.extend(found)
    if not paths:
        run.errors.append(Problem("", 0, 0, "no manifest paths given"))
    keys = list(dict.fromkeys(keys))  # overlapping paths name a file once
    for key in keys:
        run.load_file(key)
    run.check_across_waves()
    if run.errors:
        raise ValidationFailed(run.errors)
    manifests = sum(1 for key in keys if not is_policy_file(key))  # reconcile.yaml is settings, not a manifest
    return LoadResult(run.specs, run.warnings.shown, manifests, run.warnings.omitted)


@cache
def _schema() -> WaveSchema:
    return WaveSchema()


class _Run:
    """The state of one load: specs so far, problems so far, UUID files already parsed."""

    def __init__(self, source: ManifestSource):
        self.source = source
        self.specs: list[WaveSpec] = []
        # Bounded: a flood (100,000 unknown keys, 20,000 bad phases) keeps the first few and a count.
        self.errors = Problems()
        self.warnings = Problems()
        self._uuid_files: dict[str, tuple[tuple[str, ...], str | None]] = {}
        self._uuid_locations: dict[str, Sequence[Location]] = {}
        self.policies = Policies(source, self.report)  # the reconcile.yaml files, each read once

    def report(self, problems: Sequence[Problem] | Problems) -> None:
        for problem in problems:
            (self.errors if problem.severity is Severity.ERROR else self.warnings).append(problem)
        if isinstance(problems, Problems):  # collectors of errors only: count the rest as errors
            self.errors.skip(problems.omitted)
            self.errors.incomplete |= problems.incomplete

    def load_file(self, key: str) -> None:
        if is_policy_file(key):
            self.policies.read(key)  # checked once, whether listed here or found above a manifest
            return
        file = self.source.display(key)
        try:
            text = decode_utf8(self.source.read(key), file)
        except SourceError as error:
            self.errors.append(Problem(file, 1, 1, f"cannot read the file: {error}"))
            return
        if isinstance(text, Problem):
            self.errors.append(text)
            return
        documents, problems = read_documents(text, file)
        self.report(problems)
        if not documents and not problems:
            self.warnings.append(Problem(file, 1, 1, "no documents in this file", Severity.WARNING))
        for document in documents:
            self.load_document(document, key)

    def load_document(self, document: Document, key: str) -> None:
        data = document.data
        if not isinstance(data, dict):
            # The kind of value only, never the value: a file from elsewhere (a symlink, a mistaken
            # path) must not have its first line quoted into a pull request's annotations.
            message = f"a manifest must be a mapping with kind: Wave, got {kind_of(data)}"
            self.report([document.problem(document.node, message)])
            return
        if "kind" not in data and "apiVersion" not in data:
            message = "not a wave manifest: apiVersion: reconciler/v1 and kind: Wave are missing"
            self.report([document.problem(document.node, message)])
            return
        kind = data.get("kind", "Wave")
        if kind == POLICY_KIND:
            message = (
                f"kind {POLICY_KIND} belongs in a file named {POLICY_FILE} (it applies to the waves in its "
                f"directory and below); move this document there"
            )
            self.report([document.problem(document.node_at(("kind",)), message)])
            return
        if kind != "Wave":
            message = (
                f"kind {describe(kind)} is not supported; supported kinds: Wave"
                if isinstance(kind, str)
                else f"kind must be Wave, got {describe(kind)}"
            )
            self.report([document.problem(document.node_at(("kind",)), message)])
            return
        problems, flagged = _schema().check(document)
        self.report(problems)
        wave = _WaveReader(self, document, key, flagged).read()
        if wave is not None:
            self.specs.append(wave)

    def uuid_file(self, key: str) -> tuple[tuple[str, ...], str | None]:
        """The UUIDs of a list file and the reason it could not be read, parsed once per run."""
        if key not in self._uuid_files:
            try:
                data = self.source.read(key)
                uuids, problems = parse_file(data, self.source.display(key))
                self.report(problems)
                self._uuid_files[key] = uuids, None
                self._uuid_locations[key] = UuidLines(data, self.source.display(key), uuids)
            except SourceError as error:
                self._uuid_files[key] = (), str(error)
        return self._uuid_files[key]

    def uuid_locations(self, key: str) -> Sequence[Location] | None:
        """Where each UUID of a parsed list file is written (parallel to its UUIDs)."""
        return self._uuid_locations.get(key)

    def check_across_waves(self) -> None:
        """Wave names are unique, and a tag has at most one wave its manifest leaves active.

        A wave bound to one factory does not clash with a wave bound to another; a wave
        without ``factory`` applies to every factory, so it clashes with any.
        """
        ordered = sorted(self.specs, key=lambda spec: (spec.location.file, spec.location.line, spec.location.col))
        by_name: dict[str, list[WaveSpec]] = {}
        open_by_tag: dict[str, list[WaveSpec]] = {}
        for wave in ordered:
            here = wave.location
            earlier = next((other for other in by_name.get(wave.name, ()) if _same_factory(wave, other)), None)
            if earlier is not None:
                message = f"wave name '{wave.name}' is already used at {earlier.location}"
                self.errors.append(Problem(here.file, here.line, here.col, message))
            by_name.setdefault(wave.name, []).append(wave)
            if not wave.open_ended:
                continue
            active = next((other for other in open_by_tag.get(wave.tag, ()) if _same_factory(wave, other)), None)
            if active is not None:
                self.errors.append(
                    Problem(
                        here.file,
                        here.line,
                        here.col,
                        f"waves '{active.name}' ({active.location}) and '{wave.name}' would both stay active on "
                        f"tag '{wave.tag}': give one of them complete or cancel: true",
                    )
                )
            open_by_tag.setdefault(wave.tag, []).append(wave)


def _same_factory(one: WaveSpec, other: WaveSpec) -> bool:
    return one.factory is None or other.factory is None or one.factory == other.factory


class _WaveReader:
    """Reads one wave document into a WaveSpec, checking what the schema cannot.

    It also reads documents the schema rejected, so that one run reports everything: it
    then checks only the values of the right type that the schema did not flag, and
    yields no spec.
    """

    def __init__(self, run: _Run, document: Document, key: str, flagged: set[YamlPath]):
        self.run = run
        self.document = document
        self.key = key
        self.flagged = flagged
        self.failed = bool(flagged) or not document.clean

    def error(self, path: YamlPath, message: str) -> None:
        self.run.errors.append(self.document.problem(self.document.node_at(path), message))
        self.failed = True

    def location(self, path: YamlPath) -> Location:
        return Location(self.document.file, *position(self.document.node_at(path)))

    def locations(self, raw: dict[str, object], keys: Sequence[str]) -> dict[str, Location]:
        """Where the values of those of ``keys`` that ``raw`` (a mapping of the document) has are written."""
        file = self.document.file
        _, values = self.document.nodes_of(raw)
        return {key: Location(file, *position(values[key])) for key in keys if key in raw}

    def get(self, raw: dict[str, object], path: YamlPath, key: str, kind: type[_T] | tuple[type[_T], ...]) -> _T | None:
        """``raw[key]`` (``raw`` is the mapping at ``path``) if present, of type ``kind`` and not
        flagged by the schema; else None."""
        value = raw.get(key)
        if value is None or (self.flagged and (*path, key) in self.flagged):
            return None
        if value.__class__ is bool and kind is not bool:
            return None
        return value if isinstance(value, kind) else None

    def parsed(
        self,
        raw: dict[str, object],
        path: YamlPath,
        key: str,
        kind: type[_T] | tuple[type[_T], ...],
        parse: Callable[[_T], _R],
    ) -> _R | None:
        """``parse(raw[key])``; None if the value is absent or wrong, after reporting a ValueError."""
        value = self.get(raw, path, key, kind)
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as error:
            self.error((*path, key), f"{key} {error}")
            return None

    def read(self) -> WaveSpec | None:
        data = self.document.data
        if not isinstance(data, dict):  # the schema reported it; a wave is a mapping
            return None
        expires_in = self.parsed(data, (), "expires", str, parse_duration) if "expires" in data else DEFAULT_EXPIRES
        expires_at = self.parsed(data, (), "expiresAt", str, parse_date_time)
        target = self.get(data, (), "target", int)
        prune = self.get(data, (), "prune", list) or []
        if target is not None and target in prune:
            self.error(("prune", prune.index(target)), f"prune lists the wave's own target {target}")
        phases = self.phases(self.get(data, (), "phases", list) or [])
        complete = data.get("complete", False)
        ignored_complete = None
        if data.get("cancel") is True and complete is not False:
            # The planner warns while the cancel is to do: once canceled, the block no longer matters.
            ignored_complete = Location(self.document.file, *position(self.document.key_node((), "complete")))
            complete = False
        complete_gate = self.gate(complete, ("complete",)) if isinstance(complete, dict) else Gate()
        if expires_in and "expiresAt" not in data and data.get("cancel") is not True:
            waits = sum(phase.gate.wait_seconds or 0 for phase in phases)
            if complete is not False:
                waits += complete_gate.wait_seconds or 0
            self.expiry_before_waits(data, expires_in, waits)
        schedule = self.run.policies.schedule(self.key, read_schedule(self.document, self.flagged, self.error))
        if self.failed or target is None:  # a missing or wrong target is an error already
            return None
        return WaveSpec(
            name=data["name"],
            target=target,
            tag=data["tag"],
            location=Location(self.document.file, *position(self.document.key_node((), "name"))),
            factory=data.get("factory"),
            source_tag=data.get("sourceTag"),
            expires_in_seconds=expires_in,
            expires_at=expires_at,
            prune=tuple(prune),
            phases=phases,
            complete=None
            if complete is False
            else CompleteSpec(
                complete_gate, Location(self.document.file, *position(self.document.key_node((), "complete")))
            ),
            cancel=data.get("cancel", False),
            ignored_complete=ignored_complete,
            on_failure=OnFailure(data.get("onFailure", OnFailure.HALT)),
            positions=self.locations(data, POSITIONED_KEYS),
            schedule=schedule,
        )

    def expiry_before_waits(self, data: dict[str, object], expires_in: int, waits: int) -> None:
        """A relative expiry (or the default) that ends before the waits do: the plan against the factory
        refuses it before init (core/plan/checks.py, in these words), and no factory is needed to see it. The
        waits count from the wave's creation, like ``expires``, so it holds for a wave that exists too.
        An ``expiresAt`` is left to the plan: whether it is too early depends on when the wave was made."""
        name = data.get("name")
        if not waits or expires_in > waits or not isinstance(name, str):
            return
        message = (
            f"wave '{name}' would expire ({format_duration(expires_in)} from now) before its waits are over "
            f"({format_duration(waits)} in all): an expired wave cannot be rolled out or completed; set expires "
            f"well beyond the waits (e.g. expires: 365d)"
        )
        if "expires" in data:
            self.error(("expires",), message)
        else:  # the default, 365d: at the wave, as the plan shows it
            self.run.errors.append(self.document.problem(self.document.key_node((), "name"), message))
            self.failed = True

    def phases(self, raw: list[object]) -> tuple[PhaseSpec, ...]:
        phases = []
        first: dict[str, int] = {}
        for index, phase in enumerate(raw):
            if not isinstance(phase, dict):
                continue
            path = ("phases", index)
            location = Location(self.document.file, *position(self.document.nodes_of(phase)[0]))
            name = self.get(phase, path, "name", str) if "name" in phase else f"phase-{index + 1}"
            if name in first:
                where = (*path, "name") if "name" in phase else path
                self.error(where, f"phase name '{name}' is used twice in this wave (first at line {first[name]})")
            elif name is not None:
                first[name] = location.line
            uuids, uuids_file, uuid_locations = self.uuids(phase, path)
            limit = self.parsed(phase, path, "limit", (int, str), parse_limit)
            if limit is not None and not limit.percent and uuids is not None and len(uuids) > MAX_ROLLOUT_UUIDS:
                self.error(
                    (*path, "limit"),
                    f"limit {limit.value} cannot go with {len(uuids)} UUIDs: a phase of more "
                    f"than {MAX_ROLLOUT_UUIDS} UUIDs is rolled out in parts of {MAX_ROLLOUT_UUIDS} and a limit "
                    f"counts per rollout, so each part would take {limit.value}; list the devices to reach, "
                    f"or use a percentage",
                )
            gate = self.gate(phase, path)
            if name is None:  # a wrong name is an error already: this wave yields no spec
                continue
            phases.append(
                PhaseSpec(
                    name=name,
                    group=phase.get("group"),
                    limit=limit,
                    uuids=uuids,
                    uuids_file=uuids_file,
                    gate=gate,
                    location=location,
                    positions=self.locations(phase, PHASE_POSITIONED_KEYS),
                    uuid_locations=uuid_locations,
                )
            )
        return tuple(phases)

    def gate(self, raw: dict[str, object], path: YamlPath) -> Gate:
        require = self.get(raw, path, "require", dict)
        if require is not None and "onlineWithin" in require and "updated" not in require:
            self.error(
                (*path, "require", "onlineWithin"),
                "onlineWithin only narrows require.updated; add updated (e.g. updated: 90%) or remove onlineWithin",
            )
        return Gate(
            wait_seconds=self.parsed(raw, path, "wait", str, parse_duration),
            updated_percent=None
            if require is None
            else self.parsed(require, (*path, "require"), "updated", str, parse_percent),
            online_within_seconds=None
            if require is None
            else self.parsed(require, (*path, "require"), "onlineWithin", str, parse_duration),
            failed=None if require is None else self.failure_bound(require, (*path, "require")),
        )

    def failure_bound(self, require: dict[str, object], path: YamlPath) -> FailureBound | None:
        """``require.failed`` with where it is written (a halt or cancel points there)."""
        bound = self.parsed(require, path, "failed", str, parse_failure_bound)
        return None if bound is None else replace(bound, location=self.location((*path, "failed")))

    def uuids(
        self, phase: dict[str, object], path: YamlPath
    ) -> tuple[tuple[str, ...] | None, str | None, Sequence[Location] | None]:
        """The phase's UUIDs, the file they came from (as written) and each one's position, reporting problems."""
        raw = self.get(phase, path, "uuids", (list, str))
        path += ("uuids",)
        if isinstance(raw, list):
            if not all(isinstance(item, str) for item in raw):
                return None, None, None  # the schema reported the others
            file = self.document.file
            nodes = self.document.nodes_at(path, range(len(raw)))
            tokens = [(item, file, *position(node)) for item, node in zip(raw, nodes, strict=True)]
            uuids, problems = parse_inline(tokens)
            # The schema explained (or counted) each UUID it refused, with this same message.
            explained = {tokens[index][2:] for index in range(len(tokens)) if (*path, index) in self.flagged}
            self.run.report(
                [p for p in problems if p.severity is not Severity.ERROR or (p.line, p.col) not in explained]
            )
            self.failed |= any(problem.severity is Severity.ERROR for problem in problems)
            first: dict[str, Location] = {}
            for text, _, line, col in tokens:
                first.setdefault(text, Location(file, line, col))
            return uuids, None, tuple(first[u] for u in uuids)
        if not isinstance(raw, str) or not raw:  # absent or flagged (a list was handled above)
            return None, None, None
        if raw.startswith("/"):
            self.error(path, f"uuids file '{raw}' must be a path relative to the manifest")
            return None, raw, None
        try:
            key = self.run.source.resolve(self.key, raw)
        except SourceError as error:
            self.error(path, f"uuids file '{raw}': {error}")
            return None, raw, None
        uuids, unreadable = self.run.uuid_file(key)
        if unreadable is not None:
            self.error(path, f"uuids file '{raw}' ({self.run.source.display(key)}): {unreadable}")
        elif not uuids:
            self.failed = True  # its own problems are reported at the file's lines
        return uuids, raw, self.run.uuid_locations(key)
