"""The reads of ``reconcile import``: the waves to adopt, their targets' expiry and who signed them.

Read-only, every request a ``GET`` of reference/foundries-api.md, so an import can run with a token
that may only read (``targets:read``):

- ``GET /ota/factories/{f}/waves/`` (paged, 100 a page): the waves with their ``rollout-history`` and
  ``change-meta`` (§1.2), read first: the command chooses from them. Its first page; then, when there
  are more, every page with ``--all``, else only the active waves and those named (``--wave``, the
  manifests under DIR), as a plan reads a long history (factory/history.py: the ``status=active`` list
  and ``GET waves/{wave}/`` for each named wave not on the first page, at most 32, else every page);
- ``GET /ota/factories/{f}/waves/{wave}/?show-targets=1``, one per chosen wave (§1.2, as ``fioctl waves
  sign`` reads it): the wave's signed targets, whose ``signed.expires`` becomes ``expiresAt`` and whose
  signatures say which keys signed it. Unlike ``wave-targets`` (active waves only, §1.3) it answers for
  finished waves too;
- ``GET /ota/repo/{f}/api/v1/user_repo/root.json?production=1`` once (§1.5): the production root the
  signatures are verified against, and its targets threshold;
- ``GET /ota/factories/{f}/ci-targets.pub`` once (§1.5): the online key, to tell the offline signers apart.

The per-wave reads, the root and the key go out together (one ``FactoryClient.batch``, at most 64 at
once): one round trip after the wave list. Their connections open as the list's first page shows how many
waves the import takes (``wave_list_head``), so their handshakes pass while the rest of the list is read; the
first few open as the command line is read (cli/preconnect.py), and the first page is read while the
manifests already under DIR load (cli/importcmd.py).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime

from reconciler.connections import import_connections
from reconciler.core import ObservedWave, TargetsKeys
from reconciler.factory import history
from reconciler.factory.client import FactoryClient, Json
from reconciler.factory.history import WaveListHead
from reconciler.factory.wire import parse_targets_keys, parse_wave, targets_expiry, wave_signers


def wave_list_head(client: FactoryClient, *, named: int = 0, every: bool = False) -> WaveListHead:
    """The wave list's first page, which needs no manifest. It shows about how many waves the import will
    read the facts of (``read_wave_facts``): the ``named`` ones (``--wave``), all of the list's total with
    ``every`` (``--all``), else the active ones it holds; their connections open then, while the rest of the
    list is read, instead of after it."""
    items, data = history.first_page(client)
    total = data.get("total")
    if named:
        taken = named
    elif every:
        taken = total if isinstance(total, int) else len(items)
    else:
        taken = history.active_on(items)
    client.preconnect(import_connections(taken))
    return items, data


def read_waves(client: FactoryClient, names: Iterable[str] | None, first: WaveListHead) -> list[ObservedWave]:
    """The waves an import chooses from, after the list's ``first`` page: with ``names`` None (``--all``)
    every wave, every page; else the active waves and those ``names`` names (``--wave``, the manifests under
    DIR), read as a plan reads them from a long history (factory/history.py ``read_waves``), so that 10,000
    finished waves cost a few requests instead of 100 pages. Those are the waves a dry run right after the
    import observes."""
    if names is None:
        return [parse_wave(item) for item in client.list_waves(first=first)]
    return list(history.read_waves(client, names, first).values())


def read_wave_facts(
    client: FactoryClient, waves: Sequence[ObservedWave]
) -> tuple[dict[str, tuple[datetime | None, frozenset[str] | None]], TargetsKeys]:
    """For each wave, its targets' expiry (None when unreadable) and the key ids that signed them (None
    when the envelope has no readable signatures); and the production root's targets role."""
    batch = client.batch()
    root_reply = batch.add(client.prod_root)
    online_reply = batch.add(client.online_targets_key)
    replies = {wave.name: batch.add(functools.partial(client.get_wave, wave.name, show_targets=True)) for wave in waves}
    batch.run()
    root: Json = root_reply.result()
    facts: dict[str, tuple[datetime | None, frozenset[str] | None]] = {}
    for name, reply in replies.items():
        envelope = (reply.result() or {}).get("targets")
        facts[name] = (targets_expiry(envelope), wave_signers(root, envelope))
    return facts, parse_targets_keys(root, online_reply.result())
