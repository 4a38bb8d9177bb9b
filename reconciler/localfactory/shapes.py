"""The shapes the local factory's modules pass each other: JSON values and objects, and a devices row.

JSON comes from a client (requestbody.py) or from the database (``json.loads``), and every module
checks the fields it uses where it uses them: a value not yet checked is a ``JsonValue`` (``object``,
so it must be narrowed before use), an object whose fields the code reads is a ``JsonObject``. A
devices row is read by several modules (devices, fleet, rollout, the CLI): ``DeviceRow`` names its
columns and types once, for all of them.
"""

from __future__ import annotations

from typing import Any, TypeAlias, TypedDict

JsonValue: TypeAlias = object  # decoded JSON not yet checked: a handler narrows it (isinstance) first
JsonObject: TypeAlias = dict[str, Any]  # a JSON object; its members are checked where they are read


class DeviceRow(TypedDict):
    """One row of ``devices`` (store.SCHEMA) with the columns devices._DEV_COLS selects."""

    id: int
    uuid: str
    name: str
    group_id: int | None
    tag: str
    is_prod: int
    hwid: str
    version: int
    online: int
    last_seen: int | None
    rnd: int
    wave_id: int | None
    created_at: int
    owner: str
