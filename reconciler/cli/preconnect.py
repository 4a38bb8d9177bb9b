"""Connections to the API begun before the command line's own modules load (``program``).

Over TLS a new connection waits two round trips (TCP, then the TLS 1.3 handshake) before its first
request, and the command line's modules (click, the options, msgspec) take about 80 ms of CPU to
import. ``connect_early`` (options.py) starts the connections once click has read the options; this
starts them before click is imported, from the arguments and the environment as click will read them.
It is a hint and nothing more: click still reads the command line, and ``connect_early`` then asks for
the same connections, which ``connections.start`` does not open twice. A guess that click does not
confirm (an ``--api-url`` that was another option's value) costs connections nobody claims, which the
run closes when it ends (``options.discard_early``). Only connections that need no permission are
started here: ``https``, or plain ``http`` to this machine (``connections.start`` refuses the rest
without ``--allow-insecure-http``, which is left to click to read).

It imports nothing but the standard library's ``os``, and ``reconciler.connections`` once it has a URL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

API_URL_OPTION = "--api-url"
API_URL_ENV = "RECONCILE_API_URL"
# The subcommands `reconcile NAME` dispatches to (cli/reconcile.py SUBCOMMANDS; a test checks they agree),
# and those of them that connect as soon as their options are read, as the main command does.
SUBCOMMANDS = frozenset({"status", "devices", "init-repo", "keys", "import"})
CONNECTING_SUBCOMMANDS = frozenset({"status", "import"})
# Options after which a run of the main command talks to no API (cli/reconcile.py ``main``), and help.
NO_API_FLAGS = frozenset({"--check", "--watch", "--unlock", "--help", "-h"})
COMPLETION_ENV = "_RECONCILE_COMPLETE"  # click's shell completion runs the program with this set


def api_url(argv: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """The API URL a run with these arguments (``sys.argv[1:]``) will connect to as soon as click has read
    them, as far as the arguments show without click: the last ``--api-url``, else ``RECONCILE_API_URL``;
    None for a run that connects to none so early (``--check``, a subcommand other than ``status`` and
    ``import``, help, shell completion)."""
    if COMPLETION_ENV in environ:
        return None
    words = list(argv)
    if words[:1] and words[0] in SUBCOMMANDS:
        if words[0] not in CONNECTING_SUBCOMMANDS:
            return None
        words = words[1:]
    found = environ.get(API_URL_ENV) or None
    for index, word in enumerate(words):
        if word == "--":  # PATHS follow
            break
        if word in NO_API_FLAGS:
            return None
        if word == API_URL_OPTION and index + 1 < len(words):
            found = words[index + 1] or None
        elif word.startswith(API_URL_OPTION + "="):
            found = word.partition("=")[2] or None
    return found


def start(argv: Sequence[str], environ: Mapping[str, str]) -> None:
    """Begin opening the connections a run with these arguments will want first (``connections.start``)."""
    url = api_url(argv, environ)
    if url is None:
        return
    from reconciler import connections

    connections.start(url, allow_insecure_http=False)
