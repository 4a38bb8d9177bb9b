"""The reads of ``reconcile import``: the waves to adopt, their targets' expiry and who signed them.

Read-only, every request a ``GET`` of reference/foundries-api.md, so an import can run with a token
that may only read (``targets:read``):

- ``GET /ota/factories/{f}/waves/`` (paged, 100 a page): every wave with its ``rollout-history`` and
  ``change-meta`` (§1.2), read first: the command chooses from it;
- ``GET /ota/factories/{f}/waves/{wave}/?show-targets=1``, one per chosen wave (§1.2, as ``fioctl waves
  sign`` reads it): the wave's signed targets, whose ``signed.expires`` becomes ``expiresAt`` and whose
  signatures say which keys signed it. Unlike ``wave-targets`` (active waves only, §1.3) it answers for
  finished waves too;
- ``GET /ota/repo/{f}/api/v1/user_repo/root.json?production=1`` once (§1.5): the production root the
  signatures are verified against, and its targets threshold;
- ``GET /ota/factories/{f}/ci-targets.pub`` once (§1.5): the online key, to tell the offline signers apart.

The per-wave reads, the root and the key go out together (one ``FactoryClient.batch``, at most 64 at
once): one round trip after the wave list. Their connections open as the list's first page shows how many
waves the import takes (``read_waves``), so their handshakes pass while the other pages are read; the
first few open as the command line is read (cli/preconnect.py), and the list is read while the
manifests already under DIR load (cli/importcmd.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime

from reconciler.connections import import_connections
from reconciler.core import ObservedWave, TargetsKeys
from reconciler.factory.client import FactoryClient, Json
from reconciler.factory.wire import parse_targets_keys, parse_wave, targets_expiry, wave_signers


def read_waves(client: FactoryClient, adopting: Callable[[list[Json], int], int] | None = None) -> list[ObservedWave]:
    """Every wave of the factory (``GET waves/``, every page). ``adopting`` says, from the first page's waves
    and the list's total, about how many waves the import will read the facts of (``read_wave_facts``):
    their connections open then, while the other pages are read, instead of after the list."""
    items, data = client.waves_page(1)
    if adopting is not None:
        total = data.get("total")
        client.preconnect(import_connections(adopting(items, total if isinstance(total, int) else len(items))))
    return [parse_wave(item) for item in client.list_waves(first=(items, data))]


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
