"""The GitHub REST client the Action's steps share: its headers and timeouts, pagination that keeps
the token at home, and who the token is, so that only our own comments and issues are taken as ours.

**Whose marker it is.** The plan comment and the stuck-wave issues are found again by a hidden
marker on their first line, but anybody who can comment can write that marker too. A marked comment
or issue is ours only when its author (``user``, a ``simple-user``: ``login``, ``type``, ``id``, on
every issue and comment) is the account the token acts as; any other is left alone and reported.
How GitHub's REST API tells who a token is (GitHub's published REST description, the
``@octokit/openapi`` package's ``generated/api.github.com.json``; the pages cited are its
``externalDocs``):

- A personal token (classic or fine-grained), or a GitHub App's user token: ``GET /user``
  ("Get the authenticated user", https://docs.github.com/rest/users/users#get-the-authenticated-user)
  answers 200 with the user's ``login`` and ``type`` ``User``; what the token writes is that user's.
- ``GITHUB_TOKEN`` is "a GitHub App installation access token" of the GitHub Actions app
  (https://docs.github.com/actions/concepts/security/github_token). An installation token is
  refused ``GET /user`` (403 "Resource not accessible by integration"), and what it writes belongs to
  the app's bot account, login ``github-actions[bot]``, type ``Bot``.
- Another GitHub App's installation token (e.g. from ``actions/create-github-app-token``) is refused
  ``GET /user`` the same way and writes as ``<app-slug>[bot]``, type ``Bot``. Nothing an installation
  token may call names its app: ``GET /app`` needs the app's JWT ("You must use a JWT to access
  this endpoint", https://docs.github.com/rest/apps/apps#get-the-authenticated-app), and
  ``GET /installation/repositories``
  (https://docs.github.com/rest/apps/installations#list-repositories-accessible-to-the-app-installation)
  lists repositories only. An issue's or comment's ``performed_via_github_app`` (a nullable
  ``integration`` with the app's ``slug``) names the app only on what it has already written.

The rule, in order: ``RECONCILE_GITHUB_IDENTITY`` (a login, e.g. ``release-helper[bot]``) when the
workflow sets it; else the login ``GET /user`` returns; else, when ``GET /user`` is refused with
403, ``github-actions[bot]`` (the action's default token). A token of another App is then not
recognised: every run would see its own marked comment as someone else's and write a new one, never
another person's. So when GitHub answers a create with an author other than the one expected, the
step warns and names the ``RECONCILE_GITHUB_IDENTITY`` value that fixes it. Logins are compared
ignoring case (GitHub's are case-insensitive), and a ``[bot]`` login must have type ``Bot``; user
logins cannot hold brackets, so no person can take a bot's name.

**Pagination** follows ``Link: rel="next"`` only to the API URL's own origin (scheme, host, port):
the client sends the token with every request, and a link elsewhere (a proxy's rewrite, a
compromised or misconfigured server) would hand it to that host.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from msgspec import Struct

from reconciler.github._workflow import Json, command

if TYPE_CHECKING:
    import httpx

API_VERSION = "2022-11-28"
IDENTITY_VARIABLE = "RECONCILE_GITHUB_IDENTITY"
ACTIONS_BOT = "github-actions[bot]"
BOT_SUFFIX = "[bot]"
# GitHub refuses issue and comment bodies over 65,536 characters (422 "Body is too long").
BODY_LIMIT = 65536


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


class UnusableAnswer(Exception):
    """An answer the step will not act on: a next page on another origin, a ``GET /user`` without a login."""


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default


def pages(client: httpx.Client, url: str) -> Iterator[list[Json]]:
    """Each page of a list, following ``Link: rel="next"`` within the API's origin only.

    Raises ``UnusableAnswer`` (before any request there) when a next page is elsewhere: a list known
    only in part would make the caller open duplicates or miss what it should close.
    """
    next_url: str | None = url
    while next_url:
        response = client.get(next_url)
        response.raise_for_status()
        items = response.json()
        yield [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []
        link = response.links.get("next", {}).get("url")
        if not link:
            return
        target = response.url.join(link)
        if _origin(target) != _origin(client.base_url):
            where = f"{target.scheme}://{target.host}" + (f":{target.port}" if target.port else "")
            raise UnusableAnswer(
                f"GitHub's next page is at another origin ({where}), not the API's: not followed, "
                "the token is not sent there"
            )
        next_url = str(target)


class Identity(Struct, frozen=True):
    """The account the token writes as, and how that was found out (for the messages)."""

    login: str
    source: str

    @property
    def is_bot(self) -> bool:
        return self.login.endswith(BOT_SUFFIX)

    def wrote(self, item: Json) -> bool:
        """Whether an issue or comment was written by this account."""
        user = item.get("user")
        if not isinstance(user, dict) or not isinstance(login := user.get("login"), str):
            return False  # a deleted account (``user`` is null) is nobody's
        return login.casefold() == self.login.casefold() and (user.get("type") == "Bot") == self.is_bot


def token_identity(client: httpx.Client, env: dict[str, str]) -> Identity:
    """Who the token is, by the rule in the module docstring; an answer other than 200 or 403 raises."""
    configured = env.get(IDENTITY_VARIABLE, "").strip()
    if configured:
        return Identity(configured, IDENTITY_VARIABLE)
    response = client.get("/user")
    if response.status_code == 403:  # an installation token: the action's GITHUB_TOKEN by default
        return Identity(ACTIONS_BOT, "an installation token (GET /user refused): GitHub Actions' GITHUB_TOKEN")
    response.raise_for_status()
    user = response.json()
    login = user.get("login") if isinstance(user, dict) else None
    if not isinstance(login, str) or not login:
        raise UnusableAnswer("GET /user answered without a login")
    return Identity(login, "GET /user")


def author(item: Json) -> str:
    """``login (type)`` of an issue's or comment's author, for messages."""
    user = item.get("user")
    if not isinstance(user, dict):
        return "a deleted account"
    return f"{user.get('login')} ({user.get('type')})"


def where(item: Json) -> str:
    """An issue's or comment's address on GitHub, for messages."""
    url = item.get("html_url") or item.get("url")
    return str(url) if url else f"#{item.get('number') or item.get('id')}"


def not_ours(item: Json, what: str, identity: Identity) -> str:
    """The warning for a marked issue or comment someone else wrote: it is left alone."""
    return command(
        "warning",
        f"{where(item)} by {author(item)} carries the {what} marker but was not written by {identity.login} "
        f"(the token's account, from {identity.source}): ignored",
    )


def check_created(created: Json, identity: Identity) -> list[str]:
    """A warning when GitHub says we wrote as someone other than the identity we look for."""
    if identity.wrote(created):
        return []
    user = created.get("user")
    login = user.get("login") if isinstance(user, dict) else None
    return [
        command(
            "warning",
            f"GitHub wrote {where(created)} as {author(created)}, not as {identity.login} ({identity.source}): "
            f"later runs will not find it; give the action github-identity: {login} (or set {IDENTITY_VARIABLE}={login} in the job's env)",
        )
    ]
