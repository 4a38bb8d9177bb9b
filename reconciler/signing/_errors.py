"""The one error type of signing: a refusal whose message never holds key material."""

from __future__ import annotations

from reconciler.errors import UserError


class TufError(UserError):
    """Signing, verification or key handling refused; the message never holds key material."""
