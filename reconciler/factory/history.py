"""Which waves a run reads from a long history: the active ones and those the manifests name, not all.

A factory that has released weekly for years, or per customer tag, holds thousands of finished waves;
a plan or a status needs few of them. A finished wave matters only when a manifest names it (it exists,
so it is not created again; status shows it), never otherwise: the planner's other waves are the active
ones (one per tag, each planned, reported when unmanaged, or held for a lost manifest). So a run reads:

1. the first page of the whole wave list (``GET waves/?limit=100&page=1``). It holds every wave of a
   factory of up to 100 waves, and says how many there are. A dry run or a status against an API sends it
   before the manifests are read (``FactoryClient.ahead``, ``list_ahead``) and, when the whole list is at
   most ``AHEAD_PAGES`` pages, reads the other pages too: those its manifest files call for with the first
   (``guessed_pages``), any others once the first gave the total. Those round trips then overlap with
   reading the files instead of following them, and step 2 is not needed. An apply against an API
   (except one of a saved plan) reads it ahead too, but cannot trust a list from before it held the
   apply lease: when it read the whole list, it reads the same pages again after the lease, in one batch
   with the reads that list calls for (``WavePages``, factory/observe.py); else, or when the fresh pages
   keep other waves, it reads as without a read-ahead, from a fresh first page;
2. only when there are more, in one round trip: the active waves (the list's ``status=active`` filter,
   reference §1.2: ceil(A / 100) pages for A active waves, usually one), and each wave the manifests
   name that the first page did not show (``GET waves/NAME/``, a 404 meaning "absent"), when they are at
   most ``MAX_WAVE_LOOKUPS``; with more, the rest of the whole list instead (ceil(W / 100) - 1 pages for
   W waves), as a release repository that keeps a manifest for each wave needs most of them anyway.

So 1 request up to 100 waves, else 1 + ceil(A / 100) + min(M', ...) with M' the named waves not on the
first page: 2 + M' <= 2 + ``MAX_WAVE_LOOKUPS`` whatever W, or ceil(W / 100) when the manifests name more.
Either way two round trips, as the whole list took. The waves kept are the same whichever way was read
(the active ones and the named ones), so a saved plan's observation does not depend on it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from reconciler.connections import READS_PER_PLAN, observation_connections
from reconciler.core import ObservedWave, WaveStatus
from reconciler.errors import ReconcilerError
from reconciler.factory.client import PAGE_SIZE, Batch, FactoryClient, Json
from reconciler.factory.wire import parse_wave

# Named waves looked up one by one, at most this many (one round of requests); more read the whole list.
# A lookup costs the factory one row where a page costs 100: the walkthrough's three manifests against
# 10,000 finished waves read 3 waves instead of 101 pages (bench/bench_history.py).
MAX_WAVE_LOOKUPS = 32
# A dry run, an apply or a status reads a wave list of at most this many pages whole while its manifests load
# (``list_ahead``; an apply reads them again after its lease): the plan bench's 501 waves cost no round trip
# after the files instead of one (six pages, at once with its 500 manifests).
AHEAD_PAGES = 10
AHEAD_WAVES = AHEAD_PAGES * PAGE_SIZE  # the longest list read ahead, so the most manifest files counted for it
WaveListHead = tuple[list[Json], Json]  # the wave list's first page (or more: list_ahead) and the first answer


def first_page(client: FactoryClient) -> WaveListHead:
    """The first page of the whole wave list: step 1 of the module docstring (needs no manifest)."""
    return client.waves_page(1)


def list_ahead(client: FactoryClient, expected_waves: int = 0) -> WaveListHead:
    """The wave list as far as a run can read it before its manifests are known: the first page, and the
    rest of a list of at most ``AHEAD_PAGES`` pages. Which waves of a longer history a run needs depends on
    the manifests (``read_waves``, step 2), so those wait for them. Meanwhile the connections the
    observation will want are opened (``READS_PER_PLAN``).

    ``expected_waves``: the manifest files the run found as it started (``manifestfiles.count``). A release
    repository keeps a manifest for most waves it made, so its factory's list is at least about that long:
    with more than a page of them, the pages that many waves fill and one more (``guessed_pages``) go out
    with the first page: the plan bench's 500 manifests and list of 501 waves cost one round trip instead
    of two (the first page, then the rest once it gave the total). A guess too long costs the pages past
    the list's end, whatever the factory answers for them (an empty page, or an error): only the pages the
    first page's total calls for are used. A guess too short reads the missing pages once the first gave
    the total, as without a guess."""
    guessed = guessed_pages(expected_waves)
    client.preconnect(max(READS_PER_PLAN, guessed))  # what any plan reads next, opened as the first page is
    pages = WavePages.read(client, guessed)
    items, data = pages.first()
    total = data.get("total")
    wanted = observation_connections(active_on(items))
    # All of them, pages or not: the other pages are read over some of these (they take what is open), and
    # give them back before the observation. Counting the pages' connections as more (``wanted`` less the
    # pages) left the plan bench's 64 reads 59 connections, and the last reads waited for a free one.
    client.preconnect(wanted)
    if _whole(items, data) or not items or not isinstance(total, int) or total > AHEAD_PAGES * len(items):
        return items, data
    pages.read_more(client, -(-total // len(items)))
    whole = pages.whole()
    return whole if whole is not None else (client.list_waves(first=(items, data)), data)


def active_on(page: list[Json]) -> int:
    """How many waves of a page of the wave list are active (newest first: the first page shows them)."""
    return sum(1 for wave in page if wave.get("status") == WaveStatus.ACTIVE.value)


def guessed_pages(expected_waves: int) -> int:
    """How many pages of the wave list ``list_ahead`` asks for at once, for a run that found
    ``expected_waves`` manifest files: one for up to a page of them, else the pages they fill and one more
    (a page too many costs a request; a page too few, a round trip), at most ``AHEAD_PAGES``."""
    if expected_waves <= PAGE_SIZE:
        return 1
    return min(AHEAD_PAGES, -(-expected_waves // PAGE_SIZE) + 1)


def read_waves(
    client: FactoryClient, names: Iterable[str], first: WaveListHead | None = None
) -> dict[str, ObservedWave]:
    """The active waves and the waves ``names`` names that exist, by name, in the requests of the module
    docstring; ``first``: the first page (or the whole list: ``list_ahead``), when read already."""
    items, data = first if first is not None else first_page(client)
    wanted = set(names)
    if _whole(items, data):
        return _kept(items, wanted)
    on_first = {wave.get("name") for wave in items}
    lookups = sorted(wanted - on_first)
    if len(lookups) > MAX_WAVE_LOOKUPS:
        return _kept(client.list_waves(first=(items, data)), wanted)
    batch = client.batch()
    active = batch.add(functools.partial(client.list_waves, WaveStatus.ACTIVE))
    found = [batch.add(functools.partial(client.get_wave, name)) for name in lookups]
    batch.run()
    named = [wave for wave in items if wave.get("name") in wanted]
    named += [wave for reply in found if (wave := reply.result()) is not None]
    waves = {wave.name: wave for wave in map(parse_wave, named)}
    waves.update((wave.name, wave) for wave in map(parse_wave, active.result()))  # the later answer wins
    return waves


def whole_pages(head: WaveListHead) -> int | None:
    """How many pages ``head`` holds when it is the whole wave list (its only page, or the pages
    ``list_ahead`` read), as ``read_waves`` tells; None when it is only the first page of a longer one."""
    items, data = head
    if not _whole(items, data):
        return None
    total, page = data.get("total"), data.get("waves")
    if not data.get("next") or not isinstance(total, int) or not isinstance(page, list) or not page:
        return 1
    return -(-total // len(page))


def kept(head: WaveListHead, names: Iterable[str]) -> dict[str, ObservedWave]:
    """The waves ``read_waves`` keeps of a whole list (``whole_pages``): the active ones and those ``names`` names."""
    return _kept(head[0], set(names))


class WavePages:
    """The wave list's first pages, read together: ahead (``list_ahead``), or again in a ``Batch`` with
    other reads (an apply's observation checks its guess with them: factory/observe.py). A page's error
    waits in its answer: only the first page's is raised (``first``), as ``read_waves`` would meet it;
    another page's makes the pages no whole list."""

    def __init__(self, batch: Batch, client: FactoryClient, pages: int):
        self._pages = [batch.add(functools.partial(_page, client, page)) for page in range(1, pages + 1)]

    @classmethod
    def read(cls, client: FactoryClient, pages: int) -> WavePages:
        """The first ``pages`` pages, read now (together)."""
        batch = client.batch()
        read = cls(batch, client, pages)
        batch.run()
        return read

    def read_more(self, client: FactoryClient, pages: int) -> None:
        """Read the pages up to ``pages`` that are not read yet (together)."""
        batch = client.batch()
        self._pages += [
            batch.add(functools.partial(_page, client, page)) for page in range(len(self._pages) + 1, pages + 1)
        ]
        batch.run()

    def first(self) -> WaveListHead:
        """The first page, what ``read_waves`` starts from; its read's error is raised."""
        answer = self._pages[0].result()
        if isinstance(answer, ReconcilerError):
            raise answer
        return answer

    def whole(self) -> WaveListHead | None:
        """The whole list (and the first answer) when these pages hold all of it and agree with each other:
        each page the first one's total calls for announces that total, and together they hold that many
        waves, each once. Else None. Pages past the end (``list_ahead``'s guess) are not looked at."""
        items, data = self.first()
        if _whole(items, data):
            return items, data
        total = data["total"]  # an int: _whole says so
        needed = -(-total // len(items)) if items else len(self._pages) + 1
        if needed > len(self._pages):
            return None
        items = list(items)
        for reply in self._pages[1:needed]:
            answer = reply.result()
            if isinstance(answer, ReconcilerError) or answer[1].get("total") != total:
                return None
            items += answer[0]
        names = {wave.get("name") for wave in items}
        return (items, data) if len(items) == total == len(names) else None


def _page(client: FactoryClient, page: int) -> WaveListHead | ReconcilerError:
    try:
        return client.waves_page(page)
    except ReconcilerError as exc:  # WavePages says which page's error counts
        return exc


def _whole(items: list[Json], data: Json) -> bool:
    """Whether ``items`` is the whole list of which ``data`` was the first answer: it has no next page,
    no total to page by, or ``items`` holds them all."""
    total = data.get("total")
    return not data.get("next") or not isinstance(total, int) or len(items) >= total


def _kept(items: list[Json], wanted: set[str]) -> dict[str, ObservedWave]:
    """The active waves and the wanted ones of a whole list."""
    return {
        wave.name: wave for wave in map(parse_wave, items) if wave.status is WaveStatus.ACTIVE or wave.name in wanted
    }
