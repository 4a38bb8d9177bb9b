"""The GitHub REST client the Action's steps share: one place for its headers, API version and timeouts."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

API_VERSION = "2022-11-28"


def github_client(env: dict[str, str], token: str) -> httpx.Client:
    """A client for ``GITHUB_API_URL`` (GitHub Enterprise too; api.github.com by default) with the job's token."""
    import httpx  # only the steps that call GitHub pay for it

    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": API_VERSION,
        "User-Agent": "reconciler-action",
    }
    api = env.get("GITHUB_API_URL") or "https://api.github.com"
    return httpx.Client(base_url=api, headers=headers, timeout=httpx.Timeout(15.0, connect=5.0))
