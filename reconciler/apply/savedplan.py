"""Saved plans, like ``terraform plan -out``: review a plan, then apply exactly that plan.

``reconcile --dry-run --out plan.json`` writes the plan JSON (schemas/plan.schema.json) with a
``saved`` section: the manifest paths, and a fingerprint of the observed state the plan was made
from, a SHA-256 of a canonical form of the parts of ``ObservedState`` that decide which steps run
(waves: version, tag, status, creation, rollout history; each tag's production targets; which CI
builds exist; the device groups). Device counts and the clock are left out: they move all the
time, and what they decide (a gate passing) shows up as a different set of ready steps instead.

``reconcile --plan plan.json`` re-plans and applies only when the fresh plan would run exactly
the saved ready steps against the same factory state; otherwise it refuses with one line per
difference (Terraform's "Saved plan is stale"). A step's identity is what it does to the factory
(op, wave, tag, phase and its scope, target, prune, expiry); its device count and manifest line
are not. A relative expiry (``365d``) is pinned to the saved instant, so the reviewed expiry is signed.
A plan holds no secrets: the plan JSON never has any, and the fingerprint covers public state.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from reconciler.core import ObservedState, Operation, Plan, RolloutOp, WaveSpec
from reconciler.errors import UserError
from reconciler.render import operation_dict

SAVED_FORMAT = 1
_IGNORED = frozenset({"devices", "manifest", "line", "status", "reason"})  # not what a step does


def observed_parts(observed: ObservedState) -> dict[str, str]:
    """Each relevant part of the observed state, as a short canonical text (compared part by part)."""
    parts: dict[str, str] = {}
    for name, wave in sorted(observed.waves.items()):
        history = ", ".join(
            f"{r.group or '*'}{'' if r.full_group else ' (limited)'} at {_iso(r.at)}" for r in wave.history
        )
        parts[f"wave {name}"] = (
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
        parts["device groups"] = ", ".join(sorted(observed.groups))
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
    """Write atomically: a reviewer never sees half a plan."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        temporary.write_text(json.dumps(plan_dict, indent=2) + "\n")
        temporary.replace(target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise UserError(f"cannot write the plan to {path}: {exc.strerror}") from exc


def load(path: str) -> dict[str, Any]:
    """A saved plan, checked enough that comparing it cannot fail halfway."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"cannot read the saved plan {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise UserError(f"{path}: not a saved plan: {exc}") from exc
    saved = data.get("saved") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or not isinstance(saved, dict)
        or saved.get("format") != SAVED_FORMAT
        or not isinstance(saved.get("observed"), dict)
        or not isinstance(data.get("operations"), list)
    ):
        raise UserError(f"{path}: not a saved plan: make one with `reconcile --dry-run --out {path}`")
    return data


def stale_reasons(saved: dict[str, Any], plan: Plan, observed: ObservedState) -> list[str]:
    """One line per way a fresh plan would differ from the saved one; empty when it may be applied."""
    if (saved["factory"], saved["backend"]) != (plan.factory, plan.backend):
        return [
            f"the plan was made for factory {saved['factory']} at {saved['backend']}, "
            f"not {plan.factory} at {plan.backend}"
        ]
    before, now = saved["saved"]["observed"], observed_parts(observed)
    reasons = [
        f"{part} changed since the plan: was {before.get(part, 'absent')}, now {now.get(part, 'absent')}"
        for part in sorted(set(before) | set(now))
        if before.get(part) != now.get(part)
    ]
    saved_uuids = saved["saved"].get("uuids") or {}
    saved_steps = {
        _step_name(op): {**op, "uuids_sha256": saved_uuids.get(_step_name(op))}
        for op in saved["operations"]
        if op.get("status") == "ready"
    }
    fresh_steps = {_step_name(op): op for op in map(_operation_dict, plan.operations)}
    for name, op in saved_steps.items():
        fresh = fresh_steps.get(name)
        if fresh is None:
            reasons.append(f"{name} is no longer in the plan")
        elif fresh["status"] != "ready":
            reasons.append(f"{name} is no longer ready: {fresh.get('reason')}")
        elif _identity(fresh) != _identity(op):
            changed = ", ".join(
                _change(key, op.get(key), fresh.get(key))
                for key in sorted(set(_identity(op)) | set(_identity(fresh)))
                if op.get(key) != fresh.get(key)
            )
            reasons.append(f"{name} differs: {changed}")
    for name, op in fresh_steps.items():
        if op["status"] == "ready" and name not in saved_steps:
            reasons.append(f"a fresh plan would also run {name}")
    return reasons


def pinned(saved: dict[str, Any], specs: list[WaveSpec]) -> list[WaveSpec]:
    """The specs with each saved init's relative expiry (``expires: 365d``) fixed at the saved instant.

    A relative expiry counts from the plan's clock, so a fresh plan an hour later would sign an
    expiry an hour later than the one reviewed. Pinned only while the manifest still says the same
    duration; an edited expiry then shows as a difference of the step.
    """
    made = _parse_time(saved["now"])
    expiries = {
        op["wave"]: _parse_time(op["expires"])
        for op in saved["operations"]
        if op.get("op") == "init" and op.get("status") == "ready" and op.get("expires")
    }
    out = []
    for spec in specs:
        expires = expiries.get(spec.name)
        if (
            expires is not None
            and spec.expires_at is None
            and spec.expires_in_seconds is not None
            and expires - made == timedelta(seconds=spec.expires_in_seconds)
        ):
            spec = replace(spec, expires_at=expires)
        out.append(spec)
    return out


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
    return {key: value for key, value in op.items() if key not in _IGNORED and value is not None}


def _change(key: str, before: object, after: object) -> str:
    if key == "uuids_sha256":
        return "the UUID list changed"
    return f"{key} {before} -> {after}"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
