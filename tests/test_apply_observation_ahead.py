"""An apply reads the wave list ahead, before its lease, and uses it only as a guess of which reads to send
with the wave list read again after the lease (factory/observe.py ``_on_guess``): the observation is the one
made without a guess, whatever changed in between, and a right guess saves a round trip.

Real parts throughout: the demo local factory (in process, over its WSGI app, or over loopback HTTP behind
``FactoryFront`` or ``HoldingFront``), the walkthrough's manifests in a git repository,
and the CLI for the applies that change the factory between a guess and the observation.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import msgspec

from reconciler.core import ObservedState
from reconciler.factory.client import FactoryClient, select_backend
from reconciler.factory.history import WaveListHead, list_ahead
from reconciler.factory.observe import observe
from reconciler.manifest import load
from tests.helpers.e2e import advance, commit, reconcile, wave
from tests.helpers.serving import Answer, FactoryFront, HoldingFront, Request

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "releases"
V42 = (EXAMPLES / "v42.yaml").read_text()
V46 = (EXAMPLES / "v46.yaml").read_text()


def walkthrough(repo: Path, *names: str, edits: dict[str, str] | None = None) -> None:
    """Commit the walkthrough's manifests ``names`` (v42, v44, v46, with ``edits`` instead of their text)."""
    shutil.copytree(EXAMPLES / "uuids", repo / "uuids", dirs_exist_ok=True)
    files = {f"{name}.yaml": (edits or {}).get(name, (EXAMPLES / f"{name}.yaml").read_text()) for name in names}
    commit(repo, files, "releases")


def counting(app: Callable[..., Iterable[bytes]], seen: Counter[str]) -> Callable[..., Iterable[bytes]]:
    """The WSGI app, counting the requests it answers by path."""

    def counted(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen[environ["PATH_INFO"]] += 1
        return app(environ, start_response)

    return counted


def local_client(factory: Path, seen: Counter[str] | None = None) -> FactoryClient:
    """A client of the embedded factory over its WSGI app (its clock stands still: no ``serve`` moves it),
    counting the requests in ``seen`` when given."""
    backend = select_backend(api_url=None, factory=None, local=str(factory))
    if seen is not None:
        assert isinstance(backend.transport, httpx.WSGITransport)
        backend = replace(backend, transport=httpx.WSGITransport(app=counting(backend.transport.app, seen)))
    return FactoryClient(backend)


def head_of(factory: Path) -> WaveListHead:
    """The wave list as an apply's read-ahead reads it (``read_ahead`` -> ``list_ahead``)."""
    with local_client(factory) as client:
        return list_ahead(client)


def observed_both_ways(repo: Path, factory: Path, guess: WaveListHead) -> tuple[int, int]:
    """Observe with and without the guess, signing or not: the same state each time. The requests each
    way (signing), as (with, without)."""
    specs = load([str(repo)]).specs
    counts = []
    for signing in (True, False):
        states: list[ObservedState] = []
        for with_guess in (True, False):
            seen: Counter[str] = Counter()
            with local_client(factory, seen) as client:
                states.append(observe(client, specs, guess=guess if with_guess else None, signing=signing))
            if signing:
                counts.append(seen.total())
        assert states[0] == states[1], f"signing={signing}"
    return counts[0], counts[1]


def apply(repo: Path, factory: Path) -> str:
    code, _, err = reconcile(str(repo), "--local", str(factory))
    assert code == 0, err
    return err


def test_a_guess_never_changes_the_observation_however_stale(release_repo, factory_dir):
    """Fresh guesses cost not one request more than no guess; a guess taken before a wave was created,
    completed, rolled out or canceled gives the state of now all the same."""
    empty = head_of(factory_dir)
    walkthrough(release_repo, "v42", edits={"v42": V42.replace("complete: true\n", "")})
    with_guess, without = observed_both_ways(release_repo, factory_dir, empty)  # no waves
    assert with_guess == without
    apply(release_repo, factory_dir)  # v42 created and rolled out to the canaries
    assert observed_both_ways(release_repo, factory_dir, empty)[0] > without, "created since: read again"
    before_complete = head_of(factory_dir)
    with_guess, without = observed_both_ways(release_repo, factory_dir, before_complete)  # an active wave
    assert with_guess == without
    walkthrough(release_repo, "v42", "v44", "v46")
    apply(release_repo, factory_dir)  # v42 complete, v44 created and complete, v46 created and at its canaries
    observed_both_ways(release_repo, factory_dir, before_complete)
    before_rollout = head_of(factory_dir)
    advance(factory_dir, "25h")
    assert "Apply complete: 1 done" in apply(release_repo, factory_dir)  # v46's beta rolls out
    observed_both_ways(release_repo, factory_dir, before_rollout)
    before_cancel = head_of(factory_dir)
    walkthrough(release_repo, "v46", edits={"v46": V46 + "cancel: true\n"})
    apply(release_repo, factory_dir)
    assert wave(factory_dir, "v46")["status"] == "canceled"
    observed_both_ways(release_repo, factory_dir, before_cancel)
    with_guess, without = observed_both_ways(release_repo, factory_dir, head_of(factory_dir))
    assert with_guess == without


def test_a_right_guess_sends_the_list_and_the_reads_together_and_a_wrong_one_reads_them_again(
    release_repo, factory_dir
):
    """Over HTTP, the wave list read again and the reads a right guess chose go out together: with the list's
    answer held, they all come (``came_first``), where without a guess none does until it is answered. A wrong
    guess (from before any wave) sends them again once the list is in, and its list is the first page the
    observation starts from: read once either way. (A long history's guess: tests/test_long_history.py.)

    Judged by what came while the answer was held, not by timestamps through a latency proxy: a read that
    opened a new connection started late there and failed the test once in a fresh clone."""
    walkthrough(release_repo, "v42", "v44", "v46")
    apply(release_repo, factory_dir)
    specs = load([str(release_repo)]).specs

    def listing(request: Request) -> bool:
        return request[0].endswith("/waves/")

    def first_round(request: Request) -> bool:
        return request[0].endswith("/prod-targets/") or request[1].get("production") == "1"

    def both_came(requests: list[Request]) -> bool:
        return sum(map(first_round, requests)) >= 2

    with FactoryClient(select_backend(api_url=None, factory=None, local=str(factory_dir))) as client:
        right = list_ahead(client)
    states, came_first, reads, lists = {}, {}, {}, {}
    for name, guess in (("none", None), ("right", right), ("wrong", first_page_without_waves(right))):
        # Without a guess the reads never come while the list is held: a second is enough to know. A front
        # each, so the states differ in their backend's address only, which is left out.
        front = HoldingFront(factory_dir, held=listing, ready=both_came, patience=1.0 if guess is None else 5.0)
        try:
            with FactoryClient(select_backend(api_url=front.url, factory="demo", local=None)) as client:
                states[name] = msgspec.structs.replace(observe(client, specs, guess=guess, signing=True), backend="")
        finally:
            front.close()
        came_first[name] = front.came_first
        reads[name] = sum(map(first_round, front.requests))
        lists[name] = sum(map(listing, front.requests))
    assert states["right"] == states["none"] == states["wrong"]
    assert came_first == {"none": False, "right": True, "wrong": True}
    assert reads == {"none": 2, "right": 2, "wrong": 4}
    assert lists == {"none": 1, "right": 1, "wrong": 1}


def first_page_without_waves(head: WaveListHead) -> WaveListHead:
    """A guess from before any wave existed, of the same factory."""
    return [], {**head[1], "waves": [], "total": 0, "next": None}


class BehindTheBack(FactoryFront):
    """Cancels ``v46`` right after the first wave-list answer (an apply's read-ahead) left the factory."""

    def __init__(self, factory_dir: Path):
        super().__init__(factory_dir)
        self.lists = 0

    def relay(self, command: str, path: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        answer = self.forward(command, path, body, headers)
        if command == "GET" and "/waves/?" in path:
            self.lists += 1
            if self.lists == 1:
                assert self.app.post("/ota/factories/demo/waves/v46/cancel/").status_code == 200
        return answer


def test_an_apply_over_the_api_applies_the_walkthrough_and_plans_from_the_factory_as_it_is_after_its_lease(
    release_repo, factory_dir
):
    walkthrough(release_repo, "v42", "v44", "v46")
    keys = ["--keys", str(factory_dir / "targets.only.key.tgz")]
    front = FactoryFront(factory_dir)
    try:
        code, _, err = reconcile(str(release_repo), "--api-url", front.url, "--factory", "demo", *keys)
        assert code == 0, err
        assert "Apply complete: 8 done, 0 already done." in err
        code, _, err = reconcile(str(release_repo), "--api-url", front.url, "--factory", "demo", *keys)
        assert code == 0, err
        assert "Applying:" not in err, "nothing left to do"
    finally:
        front.close()
    assert [wave(factory_dir, name)["status"] for name in ("v42", "v44", "v46")] == ["complete", "complete", "active"]
    advance(factory_dir, "25h")
    # The manifests cancel v46; someone cancels it by hand while the apply reads ahead: the apply must see it
    # canceled (nothing to do), not cancel it again on the word of its guess.
    walkthrough(release_repo, "v46", edits={"v46": V46 + "cancel: true\n"})
    front = BehindTheBack(factory_dir)
    try:
        code, _, err = reconcile(str(release_repo), "--api-url", front.url, "--factory", "demo", *keys)
    finally:
        front.close()
    assert code == 0, err
    assert front.lists >= 2, "read ahead, then again after the lease"
    assert "Applying:" not in err, "the cancel is done already"
    assert wave(factory_dir, "v46")["status"] == "canceled"
