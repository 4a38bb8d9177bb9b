"""``reconcile status --format html``: the status report as one self-contained page, for a person on a
phone, a printer or a CI artifact.

The page is built from the status JSON (``render/status.py``'s ``to_dict``, schemas/status.schema.json),
the very dict ``--format json`` prints, and shows its numbers as they are: one truth, whatever the format.
Each wave shows its facts, a bar per phase, the next step's gate with its numbers, the history (creation,
each rollout, the finish) and, when the status carries one, the forecast as a timeline.

A phase's bar is its scope's devices now (the JSON's ``counts``): *updated* then *pending* (on an older
version) side by side, their sum being the scope's devices; *failed* devices, online and still on an
older version, are part of *pending* and drawn as its last stretch; *offline* devices may be updated or
pending (the API does not say which), so they are a thin strip under the bar rather than a slice of it.

Names, users and messages come from pull requests and from the factory, so the page is inert whatever
they hold: every value goes through ``printable`` (controls and bidirectional overrides become visible
``\\u`` escapes) and ``html.escape`` (no tag, entity or attribute can open), in text and attributes
alike; no value ever reaches CSS, a class, an id or a URL (classes come from the fixed vocabularies
below). The page has no script and requests nothing: its Content-Security-Policy allows no source at
all but the one inline style sheet, by hash, so even a mistake here could not load or run anything.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from html import escape
from typing import Any

from reconciler.core import EXPIRY_WARNING, format_duration
from reconciler.safetext import printable

Json = Mapping[str, Any]

DASH = "–"
BAR_WIDTH = 1000  # the SVG user units a bar spans; the bar is stretched to the page's width
LANE = 14  # the height of one hold in a forecast step's track, in pixels
PHASE_STATES = frozenset({"done", "next", "pending", "skipped"})  # schemas/status.schema.json, phase.state
WAVE_STATUSES = frozenset({"absent", "active", "complete", "canceled"})
HOLD_KINDS = frozenset({"wait", "window", "freeze", "gate"})  # a forecast step's heldBy kinds

STYLE = """
:root{--updated:#2e7d32;--pending:#f2a900;--failed:#c62828;--offline:#757575;--track:#e6e6e6;--ink:#1b1b1b;
--muted:#5f6368;--line:#d0d0d0;--window:#1565c0;--freeze:#c62828;--wait:#8e6c00;--gate:#6a1b9a}
*{box-sizing:border-box;print-color-adjust:exact;-webkit-print-color-adjust:exact}
body{margin:0;padding:1rem;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);
background:#fff;overflow-wrap:anywhere}
main,header{max-width:60rem;margin:0 auto}
h1{font-size:1.35rem;margin:0 0 .25rem}h2{font-size:1.2rem;margin:0}h3{font-size:1rem;margin:1rem 0 .4rem}
code{font:.92em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f3f3f3;padding:0 .2em;border-radius:3px}
.muted{color:var(--muted)}
.wave{border:1px solid var(--line);border-radius:8px;padding:.8rem 1rem;margin:1rem 0;break-inside:avoid-page}
.badge{display:inline-block;font-size:.8rem;padding:0 .45em;border-radius:1em;border:1px solid currentColor;
vertical-align:middle;margin-left:.3em}
.status-active,.state-next{color:#1565c0}.status-complete,.state-done{color:var(--updated)}
.status-canceled,.blocked{color:var(--failed)}.status-absent,.state-pending,.state-skipped{color:var(--muted)}
.ready{color:var(--updated)}.waiting{color:#8e6c00}
ul.facts,ol.history{margin:.3rem 0;padding-left:1.2rem}
ol.phases,ol.steps{list-style:none;margin:0;padding:0}
ol.phases>li,ol.steps>li{padding:.45rem 0;border-top:1px solid #eee}
.head{display:flex;flex-wrap:wrap;gap:.2rem .6rem;align-items:baseline}
svg.bar{display:block;width:100%;height:2.2rem;margin:.3rem 0}
svg.track{display:block;width:100%;margin:.2rem 0}
svg.swatch{width:.9em;height:.9em;vertical-align:-.1em;margin-right:.25em}
rect.track{fill:var(--track)}rect.updated{fill:var(--updated)}rect.pending{fill:var(--pending)}
rect.failed{fill:var(--failed)}rect.offline{fill:var(--offline)}rect.required{fill:var(--ink)}
rect.window{fill:var(--window);opacity:.35}rect.freeze{fill:var(--freeze);opacity:.45}
rect.wait{fill:var(--wait);opacity:.35}rect.gate{fill:var(--gate);opacity:.35}rect.earliest{fill:var(--ink)}
rect.done-by{fill:var(--updated)}
dl.numbers{display:flex;flex-wrap:wrap;gap:.1rem 1.1rem;margin:.2rem 0}
dl.numbers div{display:flex;gap:.3rem}dl.numbers dt{color:var(--muted)}dl.numbers dd{margin:0;font-weight:600}
dl.gate{display:grid;grid-template-columns:max-content 1fr;gap:.15rem .8rem;margin:.3rem 0}
dl.gate dt{color:var(--muted)}dl.gate dd{margin:0}
.legend{display:flex;flex-wrap:wrap;gap:.2rem 1rem;font-size:.9rem}
.axis{display:flex;justify-content:space-between;font-size:.85rem;color:var(--muted)}
@media (max-width:30rem){body{padding:.5rem;font-size:14px}.wave{padding:.6rem}dl.gate{grid-template-columns:1fr}
dl.gate dd{margin-bottom:.3rem}}
@media print{body{padding:0;font-size:10pt}.wave{border-color:#999}a{color:inherit}}
"""

# The policy allows the style sheet above by its hash and nothing else: no script, no request of any kind
# (fonts, images, frames, forms), no <base>. ``frame-ancestors`` is left out: a meta policy ignores it.
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(STYLE.encode("utf-8")).digest()).decode("ascii")
CONTENT_SECURITY_POLICY = f"default-src 'none'; style-src '{STYLE_HASH}'; base-uri 'none'; form-action 'none'"


def text(value: object) -> str:
    """Untrusted text as inert HTML, in an element or a double-quoted attribute: control and bidirectional
    characters shown as ``\\u`` escapes, then ``& < > " '`` as entities."""
    return escape(printable(str(value)), quote=True)


def code(value: object) -> str:
    return f"<code>{text(value)}</code>"


def number(value: object) -> str:
    """A count as the JSON has it; ``–`` for a number that was not read."""
    return DASH if value is None else text(value)


def page(status: Json) -> str:
    """The whole page for a status JSON overview (``render.status.to_dict``)."""
    factory = status.get("factory", "")
    waves = status.get("waves") or []
    now = status.get("now")
    body = "\n".join(wave_section(wave, index, now) for index, wave in enumerate(waves, 1)) or (
        "<p>No waves: no manifests under the given paths and no active wave in the factory.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Wave status: factory {text(factory)}</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>Wave status of factory {code(factory)}</h1>
<p class="muted">Backend {code(status.get("backend", ""))}, factory time {text(now or DASH)}.
Status JSON format {text(status.get("format_version", ""))}.</p>
{legend()}
</header>
<main>
{body}
</main>
</body>
</html>
"""


def legend() -> str:
    items = [
        ("updated", "updated (on the wave version or newer)"),
        ("pending", "pending (on an older version)"),
        ("failed", "failed (pending, online, newest update to the wave version failed)"),
        ("offline", "offline (not seen for 4 hours; updated or pending)"),
    ]
    swatches = "".join(
        f'<span><svg class="swatch" viewBox="0 0 10 10" aria-hidden="true"><rect class="{kind}" width="10" '
        f'height="10"/></svg>{label}</span>'
        for kind, label in items
    )
    return f'<div class="legend">{swatches}</div>'


# -- a wave -------------------------------------------------------------------------------------------


def wave_section(wave: Json, index: int, now: str | None) -> str:
    status = wave.get("status")
    status_class = f"status-{status}" if status in WAVE_STATUSES else "status-absent"
    where = f"manifest {code(wave['manifest'])}" if wave.get("manifest") else "unmanaged: no manifest"
    parts = [
        f'<section class="wave" id="wave-{index}">',
        f'<h2>{code(wave.get("name", ""))}<span class="badge {status_class}">{text(status)}</span></h2>',
        f'<p class="muted">version {text(wave.get("version"))}, tag {code(wave.get("tag", ""))}, {where}</p>',
        facts(wave, now),
        phases(wave.get("phases") or []),
        gate(wave.get("next_step")),
        history(wave),
        forecast_section(wave, now),
        "</section>",
    ]
    return "\n".join(part for part in parts if part)


def facts(wave: Json, now: str | None) -> str:
    items = []
    totals = wave.get("devices")
    if totals is not None:
        items.append(
            f"devices on tag {code(wave.get('tag', ''))}: {numbers(_scope(totals))}{bar(totals, None, 'the tag')}"
        )
    if wave.get("left_on_canceled") is not None:
        items.append(f"left on the canceled version: <strong>{number(wave['left_on_canceled'])}</strong>")
    if wave.get("targets_expire"):
        items.append(f"wave targets expire {expiry(wave['targets_expire'], now)}")
    if wave.get("production_expire"):
        items.append(
            f"production targets of {code(wave.get('tag', ''))} expire {expiry(wave['production_expire'], now)}"
        )
    return '<ul class="facts">' + "".join(f"<li>{item}</li>" for item in items) + "</ul>" if items else ""


def expiry(when: str, now: str | None) -> str:
    """An expiry time, flagged as the text report flags it: expired, or within the plan's 30-day warning."""
    moment, current = _moment(when), _moment(now)
    if moment is None or current is None:
        return text(when)
    if moment <= current:
        return f'{text(when)} <strong class="blocked">(EXPIRED)</strong>'
    if moment - current < EXPIRY_WARNING:
        return f'{text(when)} <strong class="waiting">(in {format_duration(moment - current)})</strong>'
    return text(when)


def numbers(pairs: Sequence[tuple[str, object]]) -> str:
    """Named counts as ``dt``/``dd`` pairs: what a bar draws, written out."""
    cells = "".join(f"<div><dt>{name}</dt><dd>{number(value)}</dd></div>" for name, value in pairs)
    return f'<dl class="numbers">{cells}</dl>'


def _scope(counts: Json) -> list[tuple[str, object]]:
    return [(name, counts.get(name)) for name in ("devices", "updated", "pending", "offline")]


def _count(value: object) -> int:
    """A count for drawing only: what is not a whole number ≥ 0 draws as nothing (the text shows it as it is)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _units(part: int, whole: int) -> str:
    return f"{BAR_WIDTH * part / whole:.2f}".rstrip("0").rstrip(".") if whole else "0"


def bar(counts: Json, failed: object, label: str) -> str:
    """The stacked bar of one scope (see the module docstring); ``failed`` is drawn within ``pending``."""
    devices, updated, pending = (
        _count(counts.get("devices")),
        _count(counts.get("updated")),
        _count(counts.get("pending")),
    )
    offline, failures = _count(counts.get("offline")), min(_count(failed), pending)
    whole = max(devices, updated + pending, offline, 1)
    segments = [
        ("updated", 0, updated, 0, 28, f"updated: {updated}"),
        ("pending", updated, pending - failures, 0, 28, f"pending: {pending}, {pending - failures} not failed"),
        ("failed", updated + pending - failures, failures, 0, 28, f"failed: {failures}"),
        ("offline", 0, offline, 32, 8, f"offline: {offline}"),
    ]
    rects = [f'<rect class="track" x="0" y="0" width="{BAR_WIDTH}" height="28"/>']
    for kind, start, size, y, height, title in segments:
        if size:
            rects.append(
                f'<rect class="{kind}" x="{_units(start, whole)}" y="{y}" width="{_units(size, whole)}" '
                f'height="{height}"><title>{title}</title></rect>'
            )
    summary = f"{label}: {updated} updated, {pending} pending ({failures} failed), {offline} offline, of {devices}"
    return (
        f'<svg class="bar" viewBox="0 0 {BAR_WIDTH} 40" preserveAspectRatio="none" role="img" '
        f'aria-label="{text(summary)}">{"".join(rects)}</svg>'
    )


def phases(items: Sequence[Json]) -> str:
    if not items:
        return ""
    rows = []
    for phase in items:
        state = phase.get("state")
        state_class = f"state-{state}" if state in PHASE_STATES else "state-pending"
        counts = phase.get("counts")
        when = ""
        if phase.get("rollout_at"):
            by = f" by {text(phase['rollout_by'])}" if phase.get("rollout_by") else ""
            when = f'<div class="muted">rolled out {text(phase["rollout_at"])}{by}</div>'
        reached, failed = phase.get("reached"), phase.get("failed")
        if counts is not None:
            drawn = bar(counts, failed, f"phase {phase.get('name', '')}")
            pairs = [("reached", reached), *_scope(counts), ("failed", failed)]
        else:  # a completed wave older than its tag's latest, or a scope the wave status does not list yet
            why = "not read for this wave" if state == "done" else "none yet"
            drawn = f'<div class="muted">device numbers: {why}</div>'
            pairs = [(name, value) for name, value in (("reached", reached), ("failed", failed)) if value is not None]
        rows.append(
            f'<li class="phase"><div class="head"><strong>{text(phase.get("name", ""))}</strong>'
            f'<span class="muted">{text(phase.get("scope", ""))}</span>'
            f'<span class="badge {state_class}">{text(state)}</span></div>{when}{drawn}'
            f"{numbers(pairs) if pairs else ''}</li>"
        )
    return '<h3>Phases</h3>\n<ol class="phases">' + "".join(rows) + "</ol>"


# -- the gate ---------------------------------------------------------------------------------------


def gate(step: Json | None) -> str:
    """The next step and its gate, each condition with its numbers as the JSON has them."""
    if not step:
        return ""
    verdict = '<span class="ready">ready</span>' if step.get("passed") else '<span class="waiting">waiting</span>'
    rows: list[tuple[str, str]] = []
    if step.get("blocked_by"):
        rows.append(("blocked by", f'<span class="blocked">{text(step["blocked_by"])}</span>'))
    if step.get("because"):
        rows.append(("because", text(step["because"])))
    if step.get("wait_seconds"):
        wait = step["wait_seconds"]
        shown = format_duration(timedelta(seconds=wait)) if isinstance(wait, int) else text(wait)
        rows.append(("wait", f"{shown} ({text(wait)} s), passes {text(step.get('wait_passes_at') or DASH)}"))
    if "updated_required" in step:
        rows.append(("updated required", f"{text(step['updated_required'])}%"))
        rows.append(("updated", number(step.get("updated"))))
    if "failed_bound" in step:
        rows.append(("failed bound", text(step["failed_bound"])))
        rows.append(("failed", number(step.get("failed"))))
    if "reached" in step:
        rows.append(("reached", number(step.get("reached"))))
    cells = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    return (
        f"<h3>Next: {code(step.get('step', ''))} {verdict}</h3>"
        + (f'<dl class="gate">{cells}</dl>' if cells else "")
        + updated_gauge(step)
    )


def updated_gauge(step: Json) -> str:
    """The share updated against the gate's ``require.updated``: a bar with a mark at the requirement."""
    updated, reached, required = step.get("updated"), step.get("reached"), step.get("updated_required")
    if not (isinstance(required, int | float) and _count(reached)):
        return ""
    share = min(_count(updated), _count(reached))
    mark = min(max(float(required), 0.0), 100.0) * BAR_WIDTH / 100
    return (
        f'<svg class="bar" viewBox="0 0 {BAR_WIDTH} 40" preserveAspectRatio="none" role="img" '
        f'aria-label="updated {share} of {_count(reached)} reached; the gate requires {text(required)}%">'
        f'<rect class="track" x="0" y="6" width="{BAR_WIDTH}" height="28"/>'
        f'<rect class="updated" x="0" y="6" width="{_units(share, _count(reached))}" height="28"/>'
        f'<rect class="required" x="{max(mark - 3, 0):.1f}" y="0" width="6" height="40">'
        f"<title>required: {text(required)}%</title></rect></svg>"
        f'<p class="muted">Devices updated of those reached; the mark is the {text(required)}% the gate requires.</p>'
    )


# -- the history ------------------------------------------------------------------------------------


def history(wave: Json) -> str:
    """What happened, in order: the creation, each rollout, the finish."""
    events = []
    if wave.get("created_at"):
        by = f" by {text(wave['created_by'])}" if wave.get("created_by") else ""
        events.append(f"{text(wave['created_at'])}: created{by}")
    for phase in wave.get("phases") or []:
        if phase.get("rollout_at"):
            by = f" by {text(phase['rollout_by'])}" if phase.get("rollout_by") else ""
            reached = f", {number(phase.get('reached'))} devices reached" if phase.get("reached") is not None else ""
            events.append(f"{text(phase['rollout_at'])}: rolled out {code(phase.get('name', ''))}{by}{reached}")
    if wave.get("finished_at"):
        verb = "completed" if wave.get("status") == "complete" else "canceled"
        by = f" by {text(wave['finished_by'])}" if wave.get("finished_by") else ""
        events.append(f"{text(wave['finished_at'])}: {verb}{by}")
    if not events:
        return ""
    return '<h3>History</h3>\n<ol class="history">' + "".join(f"<li>{event}</li>" for event in events) + "</ol>"


# -- the forecast -----------------------------------------------------------------------------------


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None  # a time without a zone cannot be placed


def forecast_section(wave: Json, now: str | None = None) -> str:
    """The wave's ``forecast``, when its status carries one, as a timeline from ``now``; nothing without.

    The shape read: ``{"steps": [{"name": str, "earliest": ISO-8601 | null, "heldBy": [{"kind": "wait" |
    "window" | "freeze" | "gate", "name": str, "until": ISO-8601 | null}]}], "doneNoEarlierThan": ISO-8601
    | null, "assumptions": [str]}``. Each step is a track from now to the last time the forecast names: its
    holds drawn as bands up to their ``until`` (to the end when open), its earliest time as a mark.
    """
    forecast = wave.get("forecast")
    if not isinstance(forecast, Mapping):
        return ""
    steps = [step for step in forecast.get("steps") or [] if isinstance(step, Mapping)]
    done = forecast.get("doneNoEarlierThan")
    times = [
        moment
        for moment in (
            _moment(done),
            *(_moment(step.get("earliest")) for step in steps),
            *(_moment(hold.get("until")) for step in steps for hold in _holds(step)),
        )
        if moment is not None
    ]
    start = _moment(now) or (min(times) if times else None)
    end = max([*times, *([start] if start else [])], default=None)
    if start is not None and end is not None and end <= start:
        end = start + timedelta(hours=1)

    def x(value: object) -> str | None:
        moment = _moment(value)
        if moment is None or start is None or end is None:
            return None
        seconds = (end - start).total_seconds()
        return f"{min(max((moment - start).total_seconds() / seconds, 0.0), 1.0) * BAR_WIDTH:.1f}"

    rows = []
    for step in steps:
        holds = _holds(step)
        height = LANE * max(len(holds), 1)  # a lane per hold, so that overlapping holds stay apart
        rects, notes = [f'<rect class="track" x="0" y="{height / 2 - 2:g}" width="{BAR_WIDTH}" height="4"/>'], []
        for lane, hold in enumerate(holds):
            kind = hold.get("kind") if hold.get("kind") in HOLD_KINDS else "gate"
            until = hold.get("until")
            to = x(until) if until is not None else f"{BAR_WIDTH}"
            if to is not None and float(to) > 0:
                rects.append(
                    f'<rect class="{kind}" x="0" y="{lane * LANE + 1}" width="{to}" height="{LANE - 2}">'
                    f"<title>{text(kind)} {text(hold.get('name', ''))}</title></rect>"
                )
            notes.append(
                f"<li>{text(hold.get('kind', ''))} {code(hold.get('name', ''))}: "
                f"{'until ' + text(until) if until else 'no end known'}</li>"
            )
        earliest = step.get("earliest")
        mark = x(earliest)
        if mark is not None:
            rects.append(
                f'<rect class="earliest" x="{max(float(mark) - 4, 0):.1f}" y="0" width="8" height="{height}"/>'
            )
        when = f"earliest {text(earliest)}" if earliest else "no earliest time: held until something changes"
        rows.append(
            f'<li><div class="head"><strong>{text(step.get("name", ""))}</strong><span class="muted">{when}</span></div>'
            f'<svg class="track" viewBox="0 0 {BAR_WIDTH} {height}" height="{height}" preserveAspectRatio="none" '
            f'aria-hidden="true">{"".join(rects)}</svg>'
            + (f'<ul class="facts">{"".join(notes)}</ul>' if notes else "")
            + "</li>"
        )
    axis = (
        f'<div class="axis"><span>{_utc(start)}</span><span>{_utc(end)}</span></div>'
        if start is not None and end is not None
        else ""
    )
    done_line = f"<p>Done no earlier than <strong>{text(done)}</strong>.</p>" if done else ""
    assumptions = [item for item in forecast.get("assumptions") or [] if isinstance(item, str)]
    assumed = (
        '<p class="muted">Assuming:</p><ul class="facts">'
        + "".join(f"<li>{text(a)}</li>" for a in assumptions)
        + "</ul>"
        if assumptions
        else ""
    )
    return (
        f'<h3>Forecast</h3>\n{axis}<ol class="steps">{"".join(rows)}</ol>{done_line}{assumed}'
        if rows or done_line or assumed
        else ""
    )


def _utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _holds(step: Json) -> list[Json]:
    return [hold for hold in step.get("heldBy") or [] if isinstance(hold, Mapping)]
