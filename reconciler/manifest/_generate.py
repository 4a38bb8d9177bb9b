"""A wave in the factory -> the manifest that adopts it (``reconcile import``): pure, no I/O.

The manifest reproduces the factory's ledger (``docs/architecture.md``, "The ledger") so that a plan
right after the import finds no drift and no step for the wave: each entry of its ``rollout-history``
becomes one phase, in order, whose scope is the entry's the way ``core/drift.py`` compares them
(group, full group, factory-wide). A history entry records how many devices a rollout reached, never
the limit, percentage or UUIDs it was made with, so a partial rollout becomes a ``limit`` of the
devices it reached: the most a phase may have reached and still match (a UUID list cannot be
recovered, and a list's phase of more than 10,000 UUIDs, rolled out in parts, becomes one phase per
part). A rollout that reached more than 10,000 devices was a percentage; ``limit: 100%`` matches it
(the ledger compares no count with a percentage), and its comment says so. Nothing else is guessed:
``sourceTag``, ``prune`` and the gates are not in the factory's answers, and their absence is said in
a comment rather than filled in.

Values are written by pyyaml, each string quoted unless the manifest loader's YAML 1.2 reading gives
it back as the same string; the factory's names are checked against ``reconciler/names.py`` first
(they also become file names), and comments carry the factory's free text (who rolled out) escaped
(``safetext.printable``), so no answer of the factory can add a line or a key. The command
(``cli/importcmd.py``) loads what this writes with the manifest loader and plans it before writing.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

import yaml
from msgspec import Struct

from reconciler import names
from reconciler.core import MAX_ROLLOUT_UUIDS, ObservedWave, RolloutRecord, TargetsKeys, WaveStatus, short_keyid
from reconciler.safetext import printable

MAX_TARGET = 2_147_483_647  # schemas/wave.schema.json: a target is a 32-bit build number
_PHASE_N = re.compile(r"phase-[0-9]+")
# A string the loader (manifest/_yaml.py, YAML 1.2 core schema) and pyyaml both read as this string when
# it is written plain: a letter first (no number, sign or indicator), then name characters only.
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_.+/-]*")
_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}


class Selection(StrEnum):
    """Which waves ``reconcile import`` adopts when none is named."""

    ACTIVE = "active"  # the active waves (the default)
    ALL = "all"  # every wave, finished ones with complete: true or cancel: true


class WaveFacts(Struct, frozen=True):
    """What the factory says of one wave beyond the wave list, read for the import (``factory/adopt.py``)."""

    expires_at: datetime | None  # ``signed.expires`` of the wave's targets; None: not readable
    signers: frozenset[str] | None  # key ids whose signature over its targets verifies; None: unknown


class Generated(Struct, frozen=True):
    """One manifest to write: its file name (a plain name, no directory) and its text."""

    wave: ObservedWave
    file_name: str
    text: str
    phases: int


def choose_waves(
    waves: Iterable[ObservedWave],
    *,
    named: Sequence[str],
    selection: Selection,
    since: datetime | None,
) -> tuple[list[ObservedWave], list[str]]:
    """The waves to import (by name), and the problems: a named wave the factory does not have."""
    by_name = {wave.name: wave for wave in waves}
    if named:
        missing = [name for name in dict.fromkeys(named) if name not in by_name]
        problems = [f"wave '{printable(name)}' does not exist in the factory" for name in missing]
        chosen = [by_name[name] for name in dict.fromkeys(named) if name in by_name]
    else:
        problems = []
        chosen = sorted(
            (w for w in by_name.values() if selection is Selection.ALL or w.status is WaveStatus.ACTIVE),
            key=lambda w: (w.created_at, w.name),
        )
    if since is not None:
        chosen = [w for w in chosen if w.created_at >= since]
    return chosen, problems


def file_name(wave: str) -> str:
    """The manifest's file name: the wave's name (checked by ``generate``) and ``.yaml``; a name starting
    with '.' gets a '_' first, since the loader skips hidden files."""
    return f"{'_' if wave.startswith('.') else ''}{wave}.yaml"


def problems_of(wave: ObservedWave, factory: str) -> list[str]:
    """Why the wave cannot be written as a manifest that matches its history; empty when it can."""
    label = f"wave '{printable(wave.name)}'"
    found = []
    if (why := names.problem(names.NameKind.WAVE, wave.name)) is not None:
        found.append(f"{label}: its name {why}; a manifest cannot name it (nor a file be named after it)")
    if (why := names.problem(names.NameKind.TAG, wave.tag)) is not None:
        found.append(f"{label}: its tag '{printable(wave.tag)}' {why}")
    if not 1 <= wave.version <= MAX_TARGET:
        found.append(f"{label}: its version {wave.version} is not a build number a manifest can name (1..{MAX_TARGET})")
    for index, record in enumerate(wave.history, 1):
        if not record.factory_wide and not record.group:
            found.append(
                f"{label}: rollout {index} went to a device group that has been deleted (the history no longer "
                f"names it), and a phase can only name an existing group or none; adopt the wave by hand, or "
                f"cancel it"
            )
        elif record.group and (why := names.problem(names.NameKind.GROUP, record.group)) is not None:
            found.append(f"{label}: rollout {index} names device group '{printable(record.group)}', which {why}")
    return found


def generate(
    wave: ObservedWave, facts: WaveFacts, keys: TargetsKeys | None, *, factory: str, now: datetime
) -> Generated:
    """The manifest of ``wave`` (``problems_of`` must be empty): comments say where each value came from
    and what to edit next, in the style of examples/releases/."""
    out = _Lines()
    out.comment(
        f"Imported by `reconcile import` from factory '{factory}' at {_stamp(now)}: wave '{wave.name}' as the "
        f"factory has it, so that `reconcile --dry-run` finds no drift and nothing to do for it."
    )
    out.comment(f"Created {_by(wave.created_by, wave.created_at)} (fioctl waves init or another tool).")
    if facts.signers is not None:
        out.comment(_signed(facts.signers, keys))
    out.comment(
        "Not in the factory's answers, so left out: sourceTag (the CI tag the targets came from), prune (the "
        "versions init removed) and the gates (wait, require) the rollouts waited for. A wave's rolled-out "
        "phases, target and tag cannot change."
    )
    out.comment(_next(wave))
    out.values({"apiVersion": "reconciler/v1", "kind": "Wave", "name": wave.name})
    if names.problem(names.NameKind.FACTORY, factory) is None:
        out.comment("factory: runs against another factory skip this wave (it exists in this one only).")
        out.values({"factory": factory})
    out.values({"target": wave.version, "tag": wave.tag})
    if facts.expires_at is not None:
        out.comment("expiresAt: when the wave's signed targets expire (signed.expires of its targets).")
        out.values({"expiresAt": _stamp(facts.expires_at)})
    if not wave.history:
        out.comment("No rollout yet: append phases here.")
        out.values({"phases": []})
    else:
        out.values({"phases": None}, bare=True)
        for index, (name, record) in enumerate(zip(_phase_names(wave.history), wave.history, strict=True), 1):
            for line in _phase_comment(index, record):
                out.comment(line, indent=2)
            out.phase(_phase(name, record))
        if wave.status is WaveStatus.ACTIVE:
            out.comment("Next: append a phase here, e.g. `- name: next`, `group: <group>`, `wait: 24h`.", indent=2)
    if wave.status is WaveStatus.COMPLETE:
        out.comment(f"Completed {_by(wave.finished_by, wave.finished_at)} in the factory.")
        out.values({"complete": True})
    elif wave.status is WaveStatus.CANCELED:
        out.comment(f"Canceled {_by(wave.finished_by, wave.finished_at)} in the factory.")
        out.values({"cancel": True})
    return Generated(wave=wave, file_name=file_name(wave.name), text=out.text(), phases=len(wave.history))


def _phase_names(history: tuple[RolloutRecord, ...]) -> list[str]:
    """``phase-<n>`` (n: the rollout's place in the history), or the group's name when the history rolled
    out to that group only once (a group never takes a ``phase-<n>`` name, so names stay unique)."""
    once = Counter(r.group for r in history if not r.factory_wide)
    return [
        r.group if not r.factory_wide and once[r.group] == 1 and not _PHASE_N.fullmatch(r.group) else f"phase-{index}"
        for index, r in enumerate(history, 1)
    ]


def _phase(name: str, record: RolloutRecord) -> dict[str, Any]:
    phase: dict[str, Any] = {"name": name}
    if not record.factory_wide:
        phase["group"] = record.group
    if not record.full_group:
        phase["limit"] = "100%" if record.devices > MAX_ROLLOUT_UUIDS else max(record.devices, 1)
    return phase


def _phase_comment(index: int, record: RolloutRecord) -> list[str]:
    when = _by(record.by, record.at)
    devices = f"it reached {record.devices} device{'' if record.devices == 1 else 's'}"
    if record.full_group:
        return [f"Rollout {index}, {when}: the whole group {record.group}, and devices that join it later; {devices}."]
    scope = "factory-wide" if record.factory_wide else f"part of group {record.group}"
    if record.devices > MAX_ROLLOUT_UUIDS:
        how = "more than one call's 10,000: a percentage, which the history does not keep; 100% matches it."
    else:
        how = f"the history keeps that count, not the limit, percentage or UUIDs used: limit {max(record.devices, 1)} matches it."
    return [f"Rollout {index}, {when}: {scope}; {devices}; {how}"]


def _signed(signers: frozenset[str], keys: TargetsKeys | None) -> str:
    needs = f" (it needs {keys.threshold})" if keys is not None else ""
    offline = sorted(k for k in signers if keys is not None and k in keys.offline)
    if not offline:
        return f"Signed by {len(signers)} of the production root's targets keys{needs}: {_keyids(sorted(signers))}."
    online = " and the online key" if len(signers) > len(offline) else ""
    return f"Signed by {len(signers)} of the production root's targets keys{needs}: offline {_keyids(offline)}{online}."


def _keyids(keyids: list[str]) -> str:
    return ", ".join(short_keyid(k) for k in keyids) or "none"


def _next(wave: ObservedWave) -> str:
    if wave.status is WaveStatus.ACTIVE:
        return (
            f"Next: append a phase to roll out further, set complete: true (or a gate) to give build {wave.version} "
            f"to every device on tag '{wave.tag}', or cancel: true."
        )
    return "Finished in the factory: this file stays as the record; a new build goes in a new wave."


def _by(who: str, at: datetime | None) -> str:
    return (f"by {who} " if who else "") + (f"at {_stamp(at)}" if at is not None else "(time unknown)")


def _stamp(at: datetime) -> str:
    return f"{at:%Y-%m-%dT%H:%M:%SZ}"


class _Dumper(yaml.SafeDumper):
    """pyyaml's safe dumper with every string quoted unless it is plain by ``_PLAIN``: pyyaml quotes by
    YAML 1.1, where ``0o17`` is a string; the loader reads YAML 1.2, where it is a number."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    plain = _PLAIN.fullmatch(value) is not None and value.lower() not in _WORDS
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=None if plain else "'")


_Dumper.add_representer(str, _represent_str)


class _Lines:
    """The manifest's text: comment lines (escaped, wrapped) and values dumped by pyyaml."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def comment(self, text: str, indent: int = 0) -> None:
        words, line = printable(text).split(" "), ""
        for word in words:
            if line and len(line) + 1 + len(word) > 100 - indent - 2:
                self.lines.append(f"{' ' * indent}# {line}")
                line = word
            else:
                line = f"{line} {word}" if line else word
        self.lines.append(f"{' ' * indent}# {line}".rstrip())

    def values(self, mapping: dict[str, Any], *, bare: bool = False) -> None:
        if bare:  # a key whose block follows (phases:)
            self.lines += [f"{key}:" for key in mapping]
            return
        self.lines += _dump(mapping).splitlines()

    def phase(self, phase: dict[str, Any]) -> None:
        self.lines += [f"  {line}" for line in _dump([phase]).splitlines()]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _dump(value: object) -> str:
    return yaml.dump(value, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=False, width=1000)
