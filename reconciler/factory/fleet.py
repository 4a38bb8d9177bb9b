"""``reconcile devices``: a UUID file from the fleet, like fioctl's ``--print-uuids``.

The output is what ``reconciler/manifest/_uuids.py`` reads and fioctl's ``--uuids @file`` reads
too: canonical UUIDs, one a line, sorted (so a regenerated file diffs cleanly), nothing else.
How the list was made goes to stderr, ready for the commit message that adds the file.

The device list is paged (reference §1.6, ``GET /ota/devices/``) with the filters the server
knows (``match_tag``, ``group``, ``prod=1``: waves reach production devices only); the rest
is filtered here from documented fields: ``last-seen`` for ``--seen-within``, for
``--below`` the build number that ends an LmP target name (``<machine>-lmp-<build>``, the
``version`` fioctl shows), because the device list has no version field of its own, and
``is-wave`` (fioctl's "Production: true (in wave)"): a device the tag's active wave has staged
already is left out unless ``--include-staged``, since a new phase of that wave would reach none
of them (the factory's dry run counts 0 devices for such a phase) and a phase of the next wave
should not start where this one is still installing.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

from msgspec import Struct, field

from reconciler.core import MAX_PHASE_UUIDS
from reconciler.errors import UserError
from reconciler.factory.client import FactoryClient, Json

MAX_UUIDS = MAX_PHASE_UUIDS  # what a phase's UUID file may hold (rolled out in parts of 10,000)
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_BUILD = re.compile(r"-([0-9]+)$")


class DeviceSelection(Struct, frozen=True):
    """Which devices to list; ``seen_within`` in seconds; at most one of ``limit`` and ``sample``."""

    tag: str
    group: str | None = None
    below: int | None = None
    seen_within: str | None = None  # as the user wrote it, e.g. "24h"
    seen_within_seconds: int | None = None
    limit: int | None = None
    sample: int | None = None
    seed: int | None = None
    include_staged: bool = False  # keep devices the tag's active wave has staged (``is-wave``)

    def command(self) -> str:
        """The command line that makes this list again (for the commit message)."""
        words = ["reconcile devices", f"--tag {self.tag}"]
        for flag, value in (
            ("--group", self.group),
            ("--below", self.below),
            ("--seen-within", self.seen_within),
            ("--limit", self.limit),
            ("--sample", self.sample),
            ("--seed", self.seed),
        ):
            if value is not None:
                words.append(f"{flag} {value}")
        if self.include_staged:
            words.append("--include-staged")
        return " ".join(words)

    def criteria(self) -> str:
        """``production devices with tag production in group canary, on a build below 46, seen within 24h``."""
        text = f"production devices with tag {self.tag}"
        if self.group:
            text += f" in group {self.group}"
        if self.below is not None:
            text += f", on a build below {self.below}"
        if self.seen_within:
            text += f", seen within {self.seen_within}"
        if self.include_staged:
            text += ", staged by the tag's active wave or not"
        return text


class Listing(Struct):
    """The chosen UUIDs (sorted) and what the choice was made from."""

    uuids: list[str]
    matching: int
    now: datetime
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> devices left out that matched the tag
    staged: int = 0  # devices that matched but the tag's active wave has staged already (left out)


def list_devices(
    client: FactoryClient, selection: DeviceSelection, progress: Callable[[int, int], None] | None = None
) -> Listing:
    """Page through the device list, filter, and choose; refuses more than a UUID file holds."""
    if selection.group is not None and selection.group not in client.device_groups():
        raise UserError(
            f"no device group '{selection.group}' in factory {client.factory}; "
            f"`reconcile-factory status` or fioctl's `config device-group list` shows the groups"
        )
    filters = {"match_tag": selection.tag, "group": selection.group or "", "prod": "1"}
    matching: list[tuple[str, str, datetime | None]] = []  # uuid, group, last seen
    skipped: Counter[str] = Counter()
    staged = 0
    fetched = 0
    for batch, total in client.device_pages(filters):
        fetched += len(batch)
        if progress:
            progress(fetched, total)
        for device in batch:
            reason = _excluded(device, selection, client.server_now())
            if reason is None and device.get("is-wave") and not selection.include_staged:
                staged += 1
            elif reason is None:
                matching.append((device["uuid"], str(device.get("device-group") or ""), _seen(device)))
            elif reason:
                skipped[reason] += 1
    now = client.server_now()
    if not matching:
        also = f" other than {_staged(staged)}" if staged else ""
        raise UserError(f"no {selection.criteria()} in factory {client.factory}{also}; nothing written")
    chosen = _choose(matching, selection)
    if len(chosen) > MAX_UUIDS:
        raise UserError(_split_advice(matching, selection))
    return Listing(sorted(chosen), len(matching), now, skipped, staged)


def _staged(count: int) -> str:
    """The devices ``is-wave`` left out, and the option that keeps them."""
    return (
        f"{count:,} device{'' if count == 1 else 's'} the tag's active wave has staged already "
        f"(is-wave; --include-staged keeps them)"
    )


def _excluded(device: Json, selection: DeviceSelection, now: datetime) -> str | None:
    """Why a device of the tag is left out: "" for a filter it fails, a reason worth telling for the rest."""
    if not _CANONICAL.fullmatch(str(device.get("uuid") or "")):
        return "a UUID that is not canonical (lower-case 8-4-4-4-12), which a UUID file cannot hold"
    if selection.seen_within_seconds is not None:
        seen = _seen(device)
        if seen is None or now - seen > timedelta(seconds=selection.seen_within_seconds):
            return ""
    if selection.below is not None:
        match = _BUILD.search(str(device.get("target-name") or ""))
        if match is None:
            return "a target name without a build number (<machine>-lmp-<build>)"
        if int(match.group(1)) >= selection.below:
            return ""
    return None


def _seen(device: Json) -> datetime | None:
    text = device.get("last-seen")
    if not isinstance(text, str) or not text:
        return None  # never seen
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _choose(matching: list[tuple[str, str, datetime | None]], selection: DeviceSelection) -> list[str]:
    """``--limit``: the most recently seen first (like the factory's own selection); ``--sample``: seeded."""
    if selection.limit is not None:
        recent = sorted(matching, key=lambda m: (-(m[2].timestamp() if m[2] else float("-inf")), m[0]))
        return [uuid for uuid, _, _ in recent[: selection.limit]]
    uuids = sorted(uuid for uuid, _, _ in matching)
    if selection.sample is not None:
        return random.Random(selection.seed).sample(uuids, min(selection.sample, len(uuids)))
    return uuids


def _split_advice(matching: list[tuple[str, str, datetime | None]], selection: DeviceSelection) -> str:
    """The error for too many devices, with the groups to split by (largest first) when there are any."""
    head = (
        f"{len(matching):,} {selection.criteria()}: a UUID file holds at most {MAX_UUIDS:,} (one phase); split the list"
    )
    groups = Counter(group for _, group, _ in matching)
    if selection.group is None and any(groups):
        named = [f"--group {name} ({count:,})" for name, count in groups.most_common() if name]
        loose = f", {groups['']:,} in no group" if groups[""] else ""
        return f"{head} by group: {', '.join(named)}{loose}; or take --limit N or --sample N"
    return f"{head} with --below or --seen-within, or take --limit N or --sample N"


def how_made(selection: DeviceSelection, listing: Listing, factory: str, backend: str) -> list[str]:
    """Lines for stderr: what the file holds and how to make it again, for the commit message."""
    count = len(listing.uuids)
    if selection.limit is not None and count < listing.matching:
        picked = f"the most recently seen of {listing.matching:,} matching"
    elif selection.sample is not None and count < listing.matching:
        picked = f"a random sample (seed {selection.seed}) of {listing.matching:,} matching"
    else:
        picked = "every matching device"
    lines = [
        f"{count:,} device UUID{'' if count == 1 else 's'}: {picked}",
        f"Matching: {selection.criteria()}",
        f"Made with: {selection.command()}",
        f"From: factory {factory} ({backend}) at {listing.now.strftime('%Y-%m-%dT%H:%M:%SZ')}",
    ]
    if listing.staged:
        lines.append(f"Left out: {_staged(listing.staged)}")
    for reason, skipped in sorted(listing.skipped.items()):
        lines.append(f"warning: {skipped:,} device{'' if skipped == 1 else 's'} left out: {reason}")
    return lines
