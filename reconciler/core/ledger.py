"""Which rollout-history entries belong to which phase: the ledger's map (``docs/architecture.md``,
"The ledger").

The factory takes at most 10,000 UUIDs per rollout call (reference/foundries-api.md §2.2). A
phase that lists more is rolled out as consecutive rollouts, its *parts*: part *j* (1-based)
sends ``uuids[(j - 1) * 10000 : j * 10000]``, the UUIDs in file order. Every other phase is one
part. Each part is one entry of the wave's ``rollout-history``, so phase *k* covers the entries
``[start_k, start_k + parts_k)`` where ``start_k`` is the number of parts of the phases before it.

The map is a function of the manifest alone. It cannot come from the factory: a history entry
records the group, whether it was the full group or factory-wide, and how many devices it
reached, never the UUIDs it was given. So a run that starts after a crash, after any of the
parts, reads the length of the history and knows exactly which part comes next, and which
entries it must compare with which phase, without guessing.
"""

from __future__ import annotations

from collections.abc import Iterator

from msgspec import Struct

from reconciler.core.spec import PhaseSpec

MAX_ROLLOUT_UUIDS = 10_000  # the factory's cap per rollout call (fioctl refuses more on the client)
# What one phase may list: 40 rollouts. 400,000 UUIDs of 36 characters and a CR LF stay below the
# 16 MiB file cap (manifest/_source.py), so the count, not the byte cap, is what a long list meets.
MAX_PHASE_UUIDS = 400_000


class Slot(Struct, frozen=True):
    """One rollout the manifest's phases make: an entry of the rollout history, once it is done."""

    entry: int  # 0-based position in the wave's rollout history
    phase_index: int  # 0-based position of its phase in the manifest
    part: int  # 1-based part of the phase
    parts: int  # parts of the phase (1 for every phase of at most 10,000 UUIDs)

    @property
    def first(self) -> bool:
        """The phase's first part: its gate applies here; the other parts follow without one."""
        return self.part == 1

    def label(self) -> str:
        return part_label(self.part, self.parts)


def part_label(part: int, parts: int) -> str:
    """`` part 2 of 3`` for a part of a split phase, else nothing (to append to ``phase 'name'``)."""
    return f" part {part} of {parts}" if parts > 1 else ""


def parts(phase: PhaseSpec) -> int:
    """How many rollouts the phase takes: one per 10,000 UUIDs, one when it has no UUID list."""
    if not phase.uuids:
        return 1
    return -(-len(phase.uuids) // MAX_ROLLOUT_UUIDS)


def part_uuids(phase: PhaseSpec, part: int) -> tuple[str, ...] | None:
    """The UUIDs part ``part`` (1-based) sends: the phase's UUIDs cut in file order; None without a list."""
    if phase.uuids is None:
        return None
    return phase.uuids[(part - 1) * MAX_ROLLOUT_UUIDS : part * MAX_ROLLOUT_UUIDS]


def slots(phases: tuple[PhaseSpec, ...], start: int = 0) -> Iterator[Slot]:
    """Every rollout of the phases in history order, from history entry ``start`` on."""
    entry = 0
    for index, phase in enumerate(phases):
        count = parts(phase)
        if entry + count <= start:
            entry += count
            continue
        for part in range(1, count + 1):
            if entry >= start:
                yield Slot(entry=entry, phase_index=index, part=part, parts=count)
            entry += 1


def total(phases: tuple[PhaseSpec, ...]) -> int:
    """The number of rollouts all phases take: the length of the history once they are done."""
    return sum(parts(phase) for phase in phases)


def position(phases: tuple[PhaseSpec, ...], entries: int) -> tuple[int, int]:
    """Where a history of ``entries`` entries leaves the manifest: (the phase its next rollout belongs
    to, how many parts of that phase are done). ``(len(phases), 0)`` once every phase is rolled out
    (or the history is longer than the phases, which is drift)."""
    entry = 0
    for index, phase in enumerate(phases):
        count = parts(phase)
        if entries < entry + count:
            return index, entries - entry
        entry += count
    return len(phases), 0


def phases_done(phases: tuple[PhaseSpec, ...], entries: int) -> int:
    """Phases whose every part is in a history of ``entries`` entries."""
    return position(phases, entries)[0]
