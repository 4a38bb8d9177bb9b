"""A lease as another run would have left it: notes and lease bodies as JSON, and the ref written with git."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tests.helpers.e2e import git

REF = "refs/reconcile/locks/demo"


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now() -> datetime:
    return datetime.now(timezone.utc)


def note(**changes: Any) -> dict[str, Any]:
    """A rollout of phase p1 of rel-46 noted as a run writes it just before sending it (history: 1 entry)."""
    sent = now()
    body = {
        "wave": "rel-46",
        "kind": "rollout",
        "step": "rollout rel-46 phase 'p1' (factory-wide, 1 device)",
        "history": 1,
        "sent": stamp(sent),
        "settle_by": stamp(sent + timedelta(seconds=60)),
        "phase": "p1",
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


def lease_body(pending: list[Any], *, released: bool = True, **holder: Any) -> dict[str, Any]:
    """A lease as the apply writes it; by default released by a run that gave up with ``pending`` unsettled."""
    return {
        "factory": "demo",
        "holder": {"user": "ci", "host": "runner-7", "pid": 4242, **holder},
        "started": "2026-01-01T00:00:00Z",
        "expires": "2026-01-01T00:10:00Z",
        "released": released,
        "pending": pending,
        "nonce": "0" * 32,
    }


def write_lease(repo: Path, body: dict[str, Any] | str) -> str:
    """Point the lease ref at a parentless commit carrying ``body`` (JSON, or a message as given)."""
    message = body if isinstance(body, str) else f"reconcile lease for factory demo\n\n{json.dumps(body)}\n"
    tree = empty_tree(repo)
    made = subprocess.run(
        ["git", "-C", str(repo), "commit-tree", tree, "-m", message], check=True, capture_output=True, text=True
    )
    git(repo, "update-ref", REF, made.stdout.strip())
    return made.stdout.strip()


def empty_tree(repo: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "mktree"], input="", check=True, capture_output=True, text=True
    ).stdout.strip()
