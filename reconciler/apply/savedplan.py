"""Saved plans, like ``terraform plan -out``: review a plan, then apply exactly that plan.

``reconcile --dry-run --out plan.json`` writes the plan JSON (schemas/plan.schema.json) with a
``saved`` section: the manifest paths, and a fingerprint of the observed state the plan was made
from, a SHA-256 of a canonical form of the parts of ``ObservedState`` that decide which steps run
(waves: version, tag, status, creation, rollout history; each tag's production targets; which CI
builds exist; the device groups). The clock is left out: what it decides (a gate passing) shows up
as a different set of ready steps instead.

``reconcile --plan plan.json`` re-plans from the manifests and the factory, and applies the fresh plan
only when it would run exactly the saved ready steps against the same factory state; otherwise it
refuses with one line per difference (Terraform's "Saved plan is stale"). A step's identity is what it
does to the factory (op, wave, tag, phase and its scope, target, prune, UUID list) and, for a rollout,
the number of devices the dry run said it reaches: a reviewer approved that number.

A saved plan is untrusted input (anyone who can write the file): ``load`` reads only a regular file of
at most ``MAX_BYTES``, checks it against schemas/savedplan.schema.json and reports anything else as one
line. Nothing signed or sent comes from it: an init's expiry is the fresh plan's, from the manifest
and the factory's clock; the saved one only decides staleness (a relative ``365d`` moves with the
clock, so the two may differ by the plan's age, no more). The plan's own time is bounded by the
factory's clock: not ahead of it by more than ``CLOCK_SKEW``, not older than the maximum age
(``--plan-max-age``, default ``DEFAULT_MAX_AGE``). A plan holds no secrets: the plan JSON never has
any, and the fingerprint covers public state.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from datetime import datetime, timedelta
from typing import Any

from msgspec import Struct

from reconciler.core import ObservedState, Operation, Plan, RolloutOp, format_duration
from reconciler.errors import UserError
from reconciler.files import kind, write_atomically
from reconciler.render import operation_dict
from reconciler.resources import load_schema

SAVED_FORMAT = 1
MAX_BYTES = 16 * 1024 * 1024  # a plan of thousands of waves is a few MiB; more is not a plan we wrote
DEFAULT_MAX_AGE = timedelta(hours=24)  # a plan reviewed yesterday is applied today, not next month
CLOCK_SKEW = timedelta(minutes=5)  # how far ahead of the factory's clock a plan may have been made
STDOUT = "-"  # ``--out -``
_IGNORED = frozenset({"manifest", "line", "status", "reason"})  # not what a step does
_COMPARED_APART = frozenset({"devices", "expires"})  # each compared with its own rule and message
_WAVE_PART = "wave "  # parts of the wave list, read whole by every observation
_GROUPS_PART = "device groups"


class SavedPlan(Struct, frozen=True):
    """A saved plan as ``--plan`` read it: checked, and with nothing in it used for a write.

    ``operations`` are the steps as the plan JSON shows them; ``expiries`` the reviewed expiry of each
    ready init, by wave."""

    path: str
    factory: str
    backend: str
    made_at: datetime
    paths: tuple[str, ...]
    observed: dict[str, str]
    operations: tuple[dict[str, Any], ...]
    uuids: dict[str, str]
    expiries: dict[str, datetime]


def observed_parts(observed: ObservedState) -> dict[str, str]:
    """Each relevant part of the observed state, as a short canonical text (compared part by part)."""
    parts: dict[str, str] = {}
    for name, wave in sorted(observed.waves.items()):
        history = ", ".join(
            f"{r.group or '*'}{'' if r.full_group else ' (limited)'} at {_iso(r.at)}" for r in wave.history
        )
        parts[f"{_WAVE_PART}{name}"] = (
            f"{wave.status} version {wave.version} tag {wave.tag} created {_iso(wave.created_at)}"
            f", {len(wave.history)} rollout{'' if len(wave.history) == 1 else 's'}"
            + (f" ({history})" if history else "")
        )
    for tag, targets in sorted(observed.prod_targets.items()):
        parts[f"production targets of tag {tag}"] = (
            "none"
            if targets is None
            else f"version {targets.version} expires {_iso(targets.expires)} builds {sorted(targets.versions)}"
        )
    for version, exists in sorted(observed.ci_versions.items()):
        parts[f"CI build {version}"] = "published" if exists else "absent"
    if observed.groups is not None:
        parts[_GROUPS_PART] = ", ".join(sorted(observed.groups))
    return parts


def fingerprint(parts: dict[str, str]) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def saved_section(plan: Plan, observed: ObservedState, paths: list[str]) -> dict[str, Any]:
    """What ``--out`` adds to the plan JSON; ``uuids`` has a digest of each ready rollout's UUID list."""
    parts = observed_parts(observed)
    uuids = {_step_name(op): op["uuids_sha256"] for op in map(_operation_dict, plan.ready) if "uuids_sha256" in op}
    return {
        "format": SAVED_FORMAT,
        "paths": paths,
        "fingerprint": fingerprint(parts),
        "observed": parts,
        "uuids": uuids,
    }


def write(path: str, plan_dict: dict[str, Any]) -> None:
    """Write atomically, so a reviewer never sees half a plan, and only to a regular file
    (``files.write_atomically``); ``-`` writes to stdout."""
    text = json.dumps(plan_dict, indent=2) + "\n"
    if path == STDOUT:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_atomically(path, text, "the plan")


def load(path: str) -> SavedPlan:
    """A saved plan, checked so that comparing it cannot fail halfway; anything else is one line."""
    data = _parsed(path, _read(path))
    if isinstance(data, dict) and "saved" not in data:
        raise UserError(f"{path}: not a saved plan: make one with `reconcile --dry-run --out {path}`")
    _check_schema(path, data)
    saved = data["saved"]
    if saved["fingerprint"] != fingerprint(saved["observed"]):
        raise UserError(f"{path}: not a valid saved plan: its fingerprint does not match its observed state")
    operations = tuple(data["operations"])
    try:
        made_at = _parse_time(data["now"])
        expiries = {
            op["wave"]: _parse_time(op["expires"])
            for op in operations
            if op["op"] == "init" and op["status"] == "ready"
        }
    except ValueError as exc:
        raise UserError(f"{path}: not a valid saved plan: {exc}") from None
    return SavedPlan(
        path=path,
        factory=data["factory"],
        backend=data["backend"],
        made_at=made_at,
        paths=tuple(saved["paths"]),
        observed=saved["observed"],
        operations=operations,
        uuids=saved["uuids"],
        expiries=expiries,
    )


def stale_reasons(saved: SavedPlan, plan: Plan, observed: ObservedState, max_age: timedelta) -> list[str]:
    """One line per way a fresh plan would differ from the saved one, each true of the factory now;
    empty when it may be applied. ``plan.now`` is the factory's clock."""
    if (saved.factory, saved.backend) != (plan.factory, plan.backend):
        return [
            f"the plan was made for factory {saved.factory} at {saved.backend}, not {plan.factory} at {plan.backend}"
        ]
    age = plan.now - saved.made_at
    reasons = []
    if -age > CLOCK_SKEW:
        reasons.append(
            f"the plan was made at {_iso(saved.made_at)}, {format_duration(-age)} ahead of the factory's clock "
            f"({_iso(plan.now)})"
        )
    elif age > max_age:
        reasons.append(
            f"the plan was made at {_iso(saved.made_at)}, {format_duration(age)} ago by the factory's clock: "
            f"older than --plan-max-age {format_duration(max_age)}"
        )
    reasons += _observed_changes(saved.observed, observed_parts(observed))
    saved_steps = {
        _step_name(op): {**op, "uuids_sha256": saved.uuids.get(_step_name(op))}
        for op in saved.operations
        if op["status"] == "ready"
    }
    fresh_steps = {_step_name(op): op for op in map(_operation_dict, plan.operations)}
    for name, op in saved_steps.items():
        fresh = fresh_steps.get(name)
        if fresh is None:
            reasons.append(f"{name} is no longer in the plan")
        elif fresh["status"] != "ready":
            reasons.append(f"{name} is no longer ready: {fresh.get('reason')}")
        else:
            reasons += _step_changes(name, op, fresh, saved.expiries.get(op["wave"]), age)
    for name, op in fresh_steps.items():
        if op["status"] == "ready" and name not in saved_steps:
            reasons.append(f"a fresh plan would also run {name}")
    return reasons


def _observed_changes(before: dict[str, str], now: dict[str, str]) -> list[str]:
    """The parts that changed, comparing like with like: the wave list is read whole every time, so a
    wave missing from one side is absent there; the other parts are read only when a plan needs them
    (CI builds while a wave is to be created, device groups while a phase names one still to roll out),
    so a part missing from one side was not read, which says nothing about the factory."""
    reasons = []
    for part in sorted(set(before) | set(now)):
        was, is_now = before.get(part), now.get(part)
        if was == is_now or ((was is None or is_now is None) and not part.startswith(_WAVE_PART)):
            continue
        if part == _GROUPS_PART and was is not None and is_now is not None:
            old, new = set(was.split(", ")) - {""}, set(is_now.split(", ")) - {""}
            changes = [f"added {', '.join(sorted(new - old))}"] if new - old else []
            changes += [f"removed {', '.join(sorted(old - new))}"] if old - new else []
            reasons.append(f"{part} changed since the plan: {'; '.join(changes)}")
        else:
            reasons.append(f"{part} changed since the plan: was {was or 'absent'}, now {is_now or 'absent'}")
    return reasons


def _step_changes(
    name: str, op: dict[str, Any], fresh: dict[str, Any], reviewed_expiry: datetime | None, age: timedelta
) -> list[str]:
    """How a step still ready differs from the reviewed one: what it does, the devices it reaches, and an
    expiry moved by more than the plan's age (a relative ``365d`` moves with the clock, an edit more)."""
    reasons = []
    if _identity(fresh) != _identity(op):
        changed = ", ".join(
            _change(key, op.get(key), fresh.get(key))
            for key in sorted(set(_identity(op)) | set(_identity(fresh)))
            if op.get(key) != fresh.get(key)
        )
        reasons.append(f"{name} differs: {changed}")
    if op.get("op") == "rollout" and op.get("devices") != fresh.get("devices"):
        reasons.append(f"{name} would reach {_devices(fresh)}; the plan reviewed {_devices(op)}")
    if reviewed_expiry is not None and "expires" in fresh:
        expires = _parse_time(fresh["expires"])
        if abs(expires - reviewed_expiry) > max(age, timedelta(0)) + timedelta(seconds=1):  # times are whole seconds
            reasons.append(
                f"{name} would sign an expiry of {fresh['expires']}, the plan reviewed {_iso(reviewed_expiry)}: "
                f"{format_duration(abs(expires - reviewed_expiry))} apart, more than the plan's age "
                f"({format_duration(age)})"
            )
    return reasons


def _devices(op: dict[str, Any]) -> str:
    count = op.get("devices")
    return "an uncounted number of devices" if count is None else f"{count} device{'' if count == 1 else 's'}"


def _read(path: str) -> bytes:
    """The file's bytes, from a regular file only: opened without blocking (a FIFO has no writer to
    wait for), then checked, and read no further than ``MAX_BYTES`` (``/dev/zero`` never ends)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UserError(f"cannot read the saved plan {path}: {exc.strerror}") from exc
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"cannot read the saved plan {path}: it is {kind(info.st_mode)}, not a regular file")
        if info.st_size > MAX_BYTES:
            raise UserError(f"{path}: not a saved plan: larger than {MAX_BYTES // (1024 * 1024)} MiB")
        try:
            content = file.read(MAX_BYTES + 1)
        except OSError as exc:
            raise UserError(f"cannot read the saved plan {path}: {exc.strerror}") from exc
    if len(content) > MAX_BYTES:
        raise UserError(f"{path}: not a saved plan: larger than {MAX_BYTES // (1024 * 1024)} MiB")
    return content


def _parsed(path: str, content: bytes) -> Any:
    try:
        return json.loads(content.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a saved plan: not UTF-8 text") from None
    except RecursionError:
        raise UserError(f"{path}: not a saved plan: JSON nested too deeply") from None
    except ValueError as exc:
        raise UserError(f"{path}: not a saved plan: {_shortened(str(exc))}") from None


def _check_schema(path: str, data: Any) -> None:
    """schemas/savedplan.schema.json, which refers to the plan schema; the first problem, as one line."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match
    from referencing import Registry, Resource

    plan_schema = load_schema("plan.schema.json")
    registry: Registry[Any] = Registry().with_resource(plan_schema["$id"], Resource.from_contents(plan_schema))
    validator = Draft202012Validator(load_schema("savedplan.schema.json"), registry=registry)
    problem = best_match(validator.iter_errors(data))
    if problem is not None:
        where = "/".join(str(step) for step in problem.absolute_path) or "the top level"
        raise UserError(f"{path}: not a valid saved plan: at {where}: {_shortened(problem.message)}")


def _shortened(text: str, limit: int = 200) -> str:
    """A message quoting a value of the file (up to 16 MiB of it) keeps its first ``limit`` characters."""
    return text if len(text) <= limit else text[:limit] + "..."


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _operation_dict(op: Operation) -> dict[str, Any]:
    """A step as the plan JSON shows it, plus a digest of its UUID list (the JSON has only the count)."""
    data = operation_dict(op)
    if isinstance(op, RolloutOp) and op.uuids is not None:
        data["uuids_sha256"] = hashlib.sha256("\n".join(sorted(op.uuids)).encode()).hexdigest()
    return data


def _step_name(op: dict[str, Any]) -> str:
    phase = f" phase '{op['phase']}'" if op.get("phase") is not None else ""
    if op.get("parts"):
        phase += f" part {op['part']} of {op['parts']}"
    return f"{op['op']} {op['wave']}{phase}"


def _identity(op: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in op.items()
        if key not in _IGNORED and key not in _COMPARED_APART and value is not None
    }


def _change(key: str, before: object, after: object) -> str:
    if key == "uuids_sha256":
        return "the UUID list changed"
    return f"{key} {before} -> {after}"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
