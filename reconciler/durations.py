"""The duration grammar shared by manifests (``wait: 1d12h``) and the command line (``--timeout 10m``).

A leaf module of its own, so that reading a command-line option does not import the manifest
package (YAML, JSON schema, git): a plan against an API starts its first request before those load.
"""

from __future__ import annotations

import re
from functools import lru_cache

_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?=[0-9])(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
MAX_DURATION = 3650 * 86400  # ten years: longer waits or expiries are typos


@lru_cache(maxsize=4096)  # a repository repeats a few durations thousands of times
def parse_duration(text: str) -> int:
    """``1d12h`` -> 129600 seconds. Units w, d, h, m, s, largest first, each at most once."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(
            f"must be a duration such as 90s, 30m, 24h, 1d12h or 2w (units w, d, h, m, s, largest first), got '{text}'"
        )
    amounts = [(amount, unit) for amount, unit in zip(match.groups(), _UNITS, strict=True) if amount]
    # Twelve digits exceed the cap in any unit; longer numbers are not even converted (Python refuses huge ones).
    if any(len(amount.lstrip("0")) > 12 for amount, _ in amounts):
        raise ValueError(f"must be at most 3650d (ten years), got '{text}'")
    seconds = sum(int(amount) * _UNITS[unit] for amount, unit in amounts)
    if seconds > MAX_DURATION:
        raise ValueError(f"must be at most 3650d (ten years), got '{text}'")
    return seconds
