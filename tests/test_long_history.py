"""A long history costs no requests: plan and status read the same with 150 or 1,500 finished waves.

The finished waves are copies of a completed wave no manifest names (rows copied in the factory's
database, as bench/bench_history.py makes 10,000). Requests are counted at the local factory's WSGI app,
so the count is what the service answers, page by page (factory/history.py says which are read).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from reconciler.core import RolloutOp, build_plan
from reconciler.factory.client import PAGE_SIZE, FactoryClient, select_backend
from reconciler.factory.history import AHEAD_PAGES, WaveListHead, guessed_pages, list_ahead
from reconciler.factory.observe import fill_device_counts, observe
from reconciler.factory.status import read_status
from reconciler.manifest import load
from tests.helpers.e2e import CANARY_WAVE, advance, commit, git, init_demo_factory, reconcile

DONE = CANARY_WAVE.replace("rel-46", "rel-44").replace("target: 46", "target: 44") + "complete: true\n"
GATED = (
    CANARY_WAVE
    + """\
  - name: beta
    group: beta
    wait: 24h
    require:
      updated: 90%
"""
)


def copy_finished_wave(factory: Path, name: str, copies: int, *, older: bool = False) -> None:
    """``copies`` more copies of the finished wave ``name`` (its rows, its groups and its rollouts); ``older``:
    with ids below every other wave's, so that the list (newest first) shows them last."""
    with sqlite3.connect(factory / "factory.db") as conn:
        columns = "version, tag, signed, signatures, status, created_at, created_by, updated_at, updated_by"
        wave_id, *row = conn.execute(f"SELECT id, {columns} FROM waves WHERE name = ?", (name,)).fetchone()  # noqa: S608 - fixed columns
        if older:
            first = conn.execute("SELECT min(id) FROM waves").fetchone()[0] - copies
        else:
            first = conn.execute("SELECT max(id) FROM waves").fetchone()[0] + 1
        for i in range(first, first + copies):
            insert = f"INSERT INTO waves(id, name, {columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608 - fixed columns
            conn.execute(insert, (i, f"{name}-copy-{i}", *row))
            conn.execute(
                "INSERT INTO wave_groups SELECT ?, group_id, group_name, created_at, created_by, full_group, seq "
                "FROM wave_groups WHERE wave_id = ?",
                (i, wave_id),
            )
            conn.execute(
                "INSERT INTO rollouts(wave_id, group_id, group_name, rollout_by, rollout_at, is_full_group, "
                "is_factory_wide, num_devices) SELECT ?, group_id, group_name, rollout_by, rollout_at, is_full_group, "
                "is_factory_wide, num_devices FROM rollouts WHERE wave_id = ?",
                (i, wave_id),
            )


def counting(app: Callable[..., Iterable[bytes]], seen: Counter[str]) -> Callable[..., Iterable[bytes]]:
    """The WSGI app, counting each request by kind: wave-list pages (by their query), the rest by path."""

    def counted(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path, query = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
        seen[f"{path}?{query}" if path.endswith("/waves/") else "other"] += 1
        return app(environ, start_response)

    return counted


def walk(base: Path) -> tuple[Path, Path]:
    """rel-44 complete and rel-46 active after its canaries, a day later (its beta rollout is ready)."""
    factory = init_demo_factory(base / "factory", 200)
    repo = base / "releases"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "ops@example.com")
    git(repo, "config", "user.name", "ops")
    commit(repo, {"rel-44.yaml": DONE, "rel-46.yaml": GATED}, "releases")
    code, _, err = reconcile(str(repo), "--local", str(factory))
    assert code == 0, err
    advance(factory, "25h")
    return repo, factory


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
    return walk(tmp_path_factory.mktemp("history"))


def requests_of(repo: Path, factory: Path) -> dict[str, Counter[str]]:
    specs = load([str(repo)]).specs
    backend = select_backend(api_url=None, factory=None, local=str(factory))
    assert isinstance(backend.transport, httpx.WSGITransport)
    counts: dict[str, Counter[str]] = {}
    for command in ("plan", "status"):
        seen: Counter[str] = Counter()
        transport = httpx.WSGITransport(app=counting(backend.transport.app, seen))
        with FactoryClient(replace(backend, transport=transport)) as client:
            if command == "plan":
                observed = observe(client, specs)
                plan = fill_device_counts(client, build_plan(specs, observed), observed)
                ready = [op for op in plan.operations if op.ready]
                assert [(op.wave, op.op.value) for op in ready] == [("rel-46", "rollout")]
                assert isinstance(ready[0], RolloutOp) and ready[0].devices, "counted by a dry run"
            else:
                report = read_status(client, specs)
                assert [(w.name, w.status) for w in report.waves] == [("rel-44", "complete"), ("rel-46", "active")]
                assert [w.name for w in report.waves if w.totals is not None] == ["rel-44", "rel-46"], (
                    "each tag's latest completed wave and the active one have their device numbers"
                )
        counts[command] = seen
    return counts


def test_plan_and_status_make_the_same_requests_with_150_or_1500_finished_waves(walked):
    repo, factory = walked
    copy_finished_wave(factory, "rel-44", 150)
    few = requests_of(repo, factory)
    copy_finished_wave(factory, "rel-44", 1350)
    many = requests_of(repo, factory)
    assert many == few
    for command, seen in many.items():
        pages = {kind: n for kind, n in seen.items() if kind != "other"}
        # the whole list's first page (it tells there are more), then the active waves; the named ones are
        # looked up by name (counted with the rest), never the other 1,500
        assert pages == {
            "/ota/factories/demo/waves/?limit=100&page=1": 1,
            "/ota/factories/demo/waves/?limit=100&page=1&status=active": 1,
        }, command


def test_a_dry_run_reads_a_short_list_whole_ahead_and_a_long_one_by_its_first_page(tmp_path):
    """``list_ahead`` (before the manifests are known) reads a list of up to ten pages whole, so the
    observation then reads no wave list at all; a longer one stays at its first page."""
    repo, factory = walk(tmp_path)
    specs = load([str(repo)]).specs
    backend = select_backend(api_url=None, factory=None, local=str(factory))
    assert isinstance(backend.transport, httpx.WSGITransport)

    def pages_read(copies: int) -> tuple[list[str], list[str]]:
        copy_finished_wave(factory, "rel-44", copies)
        seen: Counter[str] = Counter()
        with FactoryClient(
            replace(backend, transport=httpx.WSGITransport(app=counting(backend.transport.app, seen)))
        ) as client:
            head = list_ahead(client)
            ahead = Counter(seen)
            observed = observe(client, specs, lambda: head)
        assert set(observed.waves) == {"rel-44", "rel-46"}, "the same waves, whichever way they were read"
        return sorted(k for k in ahead if k != "other"), sorted(k for k in seen - ahead if k != "other")

    ahead, observing = pages_read(850)  # about 860 waves: nine pages
    assert len(ahead) == 9 and observing == []
    ahead, observing = pages_read(200)  # about 1,060 waves: eleven pages
    assert ahead == ["/ota/factories/demo/waves/?limit=100&page=1"]
    assert observing == ["/ota/factories/demo/waves/?limit=100&page=1&status=active"]


def test_an_applys_guess_of_a_long_history_changes_nothing_it_observes(tmp_path):
    """An apply's read-ahead is only a guess (factory/observe.py ``_on_guess``): a whole list of two pages is
    read again, both pages, with the reads it calls for; after it grew, or when only the first page of a
    history longer than the read-ahead reads was read, the observation is still the one without a guess."""
    repo, factory = walk(tmp_path)
    specs = load([str(repo)]).specs
    backend = select_backend(api_url=None, factory=None, local=str(factory))

    def head() -> WaveListHead:
        with FactoryClient(backend) as client:
            return list_ahead(client)

    def observed_as_without(guess: WaveListHead) -> None:
        for signing in (True, False):
            with FactoryClient(backend) as client:
                guessed = observe(client, specs, guess=guess, signing=signing)
            with FactoryClient(backend) as client:
                assert guessed == observe(client, specs, signing=signing), f"signing={signing}"

    copy_finished_wave(factory, "rel-44", 150)
    two_pages = head()
    assert len(two_pages[0]) > 100
    observed_as_without(two_pages)
    copy_finished_wave(factory, "rel-44", 1000)
    observed_as_without(two_pages)  # stale: the list grew
    first_page = head()
    assert len(first_page[0]) == 100
    observed_as_without(first_page)


def connections_after(factory: Path, read: Callable[[FactoryClient], Any]) -> tuple[Any, int]:
    """What ``read`` returns with a client of ``factory`` served over HTTP, and the connections open or opening
    to it once the ones it asked for in the background are done opening (in the pool and still spare)."""
    from reconciler.factory.transport import DeadlineTransport, RetryTransport
    from tests.helpers.serving import FactoryFront

    front = FactoryFront(factory)
    try:
        backend = select_backend(api_url=front.url, factory="demo", local=None)
        assert isinstance(backend.transport, RetryTransport) and isinstance(backend.transport.inner, DeadlineTransport)
        transport = backend.transport.inner
        with FactoryClient(backend) as client:
            result = read(client)
            spares, port = transport._backend.spares, int(front.url.rsplit(":", 1)[1])
            deadline = time.monotonic() + 10
            while spares.opening and time.monotonic() < deadline:
                time.sleep(0.01)
            return result, len(transport._pool.connections) + spares.waiting("127.0.0.1", port)
    finally:
        front.close()


def test_the_connections_opened_while_a_list_is_read_ahead_are_all_the_observations(tmp_path):
    """``list_ahead`` opens the connections the observation will want (``observation_connections`` of the
    active waves its first page shows) while it reads the list's other pages. Those pages are read over
    some of them and give them back: the observation finds all of them, not fewer by the pages."""
    from reconciler.connections import observation_connections

    _, factory = walk(tmp_path)
    copy_finished_wave(factory, "rel-44", 250, older=True)  # about 260 waves: three pages, rel-46 on the first
    (items, _), opened = connections_after(factory, list_ahead)
    assert len(items) > 200, "the list was read whole, three pages"
    assert [wave["name"] for wave in items[:100] if wave["status"] == "active"] == ["rel-46"]
    assert opened == observation_connections(1)


@pytest.mark.parametrize("every", [False, True], ids=["active", "all"])
def test_an_imports_connections_open_as_the_first_page_shows_how_many_waves_it_takes(tmp_path, every):
    """``reconcile import`` reads the facts of the waves it takes (their targets, the root, the online key)
    together once it has the whole list: their connections open as the first page shows how many that is
    (the active waves on it, or the list's total with ``--all``), while the other pages are read, not after
    the list (``bench/bench_import.py``, the plan bench's 20 active waves over TLS at 100 ms: 1.39 -> 0.85 s,
    with the connections opened as its command line is read and the list read ahead)."""
    from reconciler.connections import import_connections
    from reconciler.factory.adopt import read_waves, wave_list_head

    _, factory = walk(tmp_path)
    copy_finished_wave(factory, "rel-44", 250, older=True)  # about 260 waves: three pages, rel-46 on the first
    listed, opened = connections_after(
        factory, lambda client: read_waves(client, None, wave_list_head(client, every=every))
    )
    assert len(listed) > 200, "the list was read whole, three pages"
    assert opened == import_connections(len(listed) if every else 1) == (64 if every else 3)


@pytest.mark.parametrize("taken", ["active", "named", "all"])
def test_an_import_reads_a_long_history_as_a_plan_does(tmp_path, taken):
    """With about 260 waves (three pages) the import reads the first page, then the active waves and those it
    names (``--wave``, the manifests under DIR) as a plan does, not every page: 10,000 finished waves cost a
    few requests, not 100 pages. ``--all`` reads every page."""
    from tests.helpers.serving import FactoryFront

    repo, factory = walk(tmp_path)
    copy_finished_wave(factory, "rel-44", 250, older=True)  # rel-44 itself stays on the first page
    with sqlite3.connect(factory / "factory.db") as conn:
        (oldest,) = conn.execute("SELECT name FROM waves ORDER BY id LIMIT 1").fetchone()  # on the last page
        (total,) = conn.execute("SELECT count(*) FROM waves").fetchone()
    directory = tmp_path / "adopted"
    directory.mkdir()
    (directory / "rel-44.yaml").write_text((repo / "rel-44.yaml").read_text())  # DIR names rel-44: not read again

    class Counting(FactoryFront):
        def relay(self, command, path, body, headers):
            parts = urlsplit(path)
            seen[(parts.path, dict(parse_qsl(parts.query)).get("status"))] += 1
            return self.forward(command, path, body, headers)

    seen: Counter[tuple[str, str | None]] = Counter()
    args = {"active": [], "named": ["--wave", oldest], "all": ["--all"]}[taken]
    front = Counting(factory)
    try:
        code, _, err = reconcile("import", *args, "--api-url", front.url, "--factory", "demo", str(directory))
    finally:
        front.close()
    assert code == 0, err
    waves = "/ota/factories/demo/waves/"
    per_wave = sum(count for (path, _), count in seen.items() if path.startswith(waves) and path != waves)
    assert (seen[(waves, None)], seen[(waves, "active")], per_wave) == {
        "active": (1, 1, 1),  # the first page, the active list; rel-46's targets
        "named": (1, 1, 2),  # the same, and the named wave looked up, then its targets
        "all": (3, 0, total - 1),  # every page; the targets of every wave but rel-44
    }[taken], seen


class PagesFront:
    """The factory served over HTTP, counting the wave-list pages it is asked for; the first page's answer
    waits (at most 5 s) until pages 1 to ``awaited`` were all asked for, so a page asked for only after
    the first page's answer is seen (``pages_before_first_answer``). ``past_end``: the status it answers a page
    past the list's end with (a real service may refuse one), else the factory's own answer."""

    def __init__(self, factory: Path, awaited: int, past_end: int | None = None):
        from tests.helpers.serving import FactoryFront

        self.pages: Counter[int] = Counter()
        self.pages_before_first_answer: set[int] = set()
        arrived = threading.Condition()
        outer = self

        class Front(FactoryFront):
            def relay(self, command, path, body, headers):
                query = dict(parse_qsl(urlsplit(path).query))
                if not urlsplit(path).path.endswith("/waves/") or "status" in query:
                    return self.forward(command, path, body, headers)
                page = int(query["page"])
                with arrived:
                    outer.pages[page] += 1
                    arrived.notify_all()
                    if page == 1:
                        arrived.wait_for(lambda: set(range(1, awaited + 1)) <= set(outer.pages), timeout=5)
                        outer.pages_before_first_answer = set(outer.pages)
                answer = self.forward(command, path, body, headers)
                total = json.loads(answer[2])["total"]
                if past_end is not None and (page - 1) * PAGE_SIZE >= total:
                    return past_end, [("Content-Type", "application/json")], b'{"detail": "Invalid page."}'
                return answer

        self.front = Front(factory)

    def list_ahead(self, expected_waves: int) -> WaveListHead:
        backend = select_backend(api_url=self.front.url, factory="demo", local=None)
        try:
            with FactoryClient(backend) as client:
                return list_ahead(client, expected_waves)
        finally:
            self.front.close()


@pytest.mark.parametrize("past_end", [None, 404], ids=["empty-page", "refused"])
def test_the_pages_its_manifests_call_for_are_read_with_the_first(tmp_path, past_end):
    """A run with 250 manifest files reads the wave list's first four pages at once (``guessed_pages``):
    a list as long as its manifests say costs one round trip, not two. The fourth is past the end of a
    list of about 260 waves: its answer, empty or refused, is not looked at."""
    _, factory = walk(tmp_path)
    copy_finished_wave(factory, "rel-44", 250)
    assert guessed_pages(250) == 4
    front = PagesFront(factory, awaited=4, past_end=past_end)
    items, data = front.list_ahead(250)
    assert front.pages_before_first_answer == {1, 2, 3, 4}
    assert front.pages == {1: 1, 2: 1, 3: 1, 4: 1}, "no page read twice"
    assert len(items) == data["total"] == len({wave["name"] for wave in items}) > 200


def test_a_list_longer_than_its_manifests_say_reads_only_the_pages_not_read_yet(tmp_path):
    """With 150 manifest files a run reads three pages with the first; a list of five is read whole, its
    last two once the first gave the total, and no page twice."""
    _, factory = walk(tmp_path)
    copy_finished_wave(factory, "rel-44", 450)  # about 460 waves: five pages
    front = PagesFront(factory, awaited=3)
    items, data = front.list_ahead(150)
    assert front.pages_before_first_answer == {1, 2, 3}
    assert front.pages == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}
    assert len(items) == data["total"] > 400


def test_how_many_pages_a_run_reads_with_the_first():
    """One for up to a page of manifest files (the walkthrough's three), else the pages they fill and one
    more, at most ``AHEAD_PAGES``."""
    assert [guessed_pages(n) for n in (0, 3, 100, 101, 200, 201, 500, 899, 900, 5_000)] == [
        1,
        1,
        1,
        3,
        3,
        4,
        6,
        10,
        10,
        10,
    ]
    assert guessed_pages(10**6) == AHEAD_PAGES
