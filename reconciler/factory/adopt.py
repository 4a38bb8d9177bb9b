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
once): one round trip after the wave list.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime

from reconciler.core import ObservedWave, TargetsKeys
from reconciler.factory.client import FactoryClient, Json
from reconciler.factory.wire import parse_targets_keys, parse_wave, targets_expiry, wave_signers


def read_waves(client: FactoryClient) -> list[ObservedWave]:
    """Every wave of the factory (``GET waves/``, every page)."""
    return [parse_wave(item) for item in client.list_waves()]


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
