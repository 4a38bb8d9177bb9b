"""How far an active wave is from the production root's targets threshold (``fioctl waves sign``).

A factory whose production root needs more than the online key and one offline key (reference
§2.3: ``waves sign`` "is only needed when your TUF root requires more than 1 signature for
production Targets. In this case, you cannot roll out or complete a wave before it has enough
signatures", fioctl subcommands/waves/sign.go L16-19) gets a wave from init with two signatures
(the online one and init's); each further offline key adds one through the wave sign API. Pure:
the key ids that signed come from the observation, which verified them against the root.
"""

from __future__ import annotations

from msgspec import Struct

from reconciler.core.state import TargetsKeys

SHOWN_KEYID = 12  # hex digits of a key id in a human line (JSON has them whole)


def short_keyid(keyid: str) -> str:
    return keyid[:SHOWN_KEYID]


def signatures_text(count: int) -> str:
    return f"{count} more signature{'' if count == 1 else 's'}"


class Shortfall(Struct, frozen=True):
    """A wave short of the threshold: its valid signatures now, the threshold, and the offline keys
    that have not signed it (any of them can sign next)."""

    signatures: int
    threshold: int
    keyids: tuple[str, ...]

    @property
    def needed(self) -> int:
        return self.threshold - self.signatures

    def text(self) -> str:
        """``needs 1 more signature (key id 3f2a9c0d11e4)``."""
        ids = ", ".join(map(short_keyid, self.keyids))
        which = f" (key id {ids})" if len(self.keyids) == 1 else f" (of key ids {ids})" if self.keyids else ""
        return f"needs {signatures_text(self.needed)}{which}"


def shortfall(keys: TargetsKeys | None, signers: frozenset[str] | None) -> Shortfall | None:
    """The wave's shortfall, or None when it meets the threshold or nothing is known about it (the
    factory still refuses a rollout of a wave short of it, and the dry run reports that)."""
    if keys is None or signers is None or len(signers) >= keys.threshold:
        return None
    return Shortfall(len(signers), keys.threshold, tuple(k for k in keys.offline if k not in signers))


def after_init(keys: TargetsKeys | None) -> Shortfall | None:
    """The shortfall of a wave init is about to create: the online signature and init's one offline
    signature (which offline key is not known before the key is read: the apply job reads it)."""
    if keys is None or keys.threshold <= 2:
        return None
    return Shortfall(2, keys.threshold, keys.offline)
