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
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone, tzinfo
from html import escape
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from reconciler.core import EXPIRY_WARNING, FORECAST_TITLE, Bound, Forecast, StepForecast, format_duration
from reconciler.safetext import printable

Json = Mapping[str, Any]

DASH = "–"
BAR_WIDTH = 1000  # the SVG user units a bar spans; the bar is stretched to the page's width
TRACK = 18  # the height of a forecast step's track, in pixels
PHASE_STATES = frozenset({"done", "next", "pending", "skipped"})  # schemas/status.schema.json, phase.state
WAVE_STATUSES = frozenset({"absent", "active", "complete", "canceled"})

STYLE = """
:root{--updated:#2e7d32;--pending:#f2a900;--failed:#c62828;--offline:#757575;--track:#e6e6e6;--ink:#1b1b1b;
--muted:#5f6368;--line:#d0d0d0;--window:#1565c0;--freeze:#c62828;--wait:#8e6c00}
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
ul.facts,ul.assumptions,ol.history{margin:.3rem 0;padding-left:1.2rem}
ol.phases,ol.steps{list-style:none;margin:0;padding:0}
ol.phases>li,ol.steps>li{padding:.45rem 0;border-top:1px solid #eee}
.head{display:flex;flex-wrap:wrap;gap:.2rem .6rem;align-items:baseline}
svg.bar{display:block;width:100%;height:2.2rem;margin:.3rem 0}
svg.track{display:block;width:100%;margin:.2rem 0}
svg.swatch{width:.9em;height:.9em;vertical-align:-.1em;margin-right:.25em}
rect.track{fill:var(--track)}rect.updated{fill:var(--updated)}rect.pending{fill:var(--pending)}
rect.failed{fill:var(--failed)}rect.offline{fill:var(--offline)}rect.required{fill:var(--ink)}
rect.window{fill:var(--window);opacity:.35}rect.freeze{fill:var(--freeze);opacity:.45}
rect.wait{fill:var(--wait);opacity:.35}rect.earliest{fill:var(--ink)}rect.now{fill:var(--muted)}
dl.numbers{display:flex;flex-wrap:wrap;gap:.1rem 1.1rem;margin:.2rem 0}
dl.numbers div{display:flex;gap:.3rem}dl.numbers dt{color:var(--muted)}dl.numbers dd{margin:0;font-weight:600}
dl.gate,dl.when{display:grid;grid-template-columns:max-content 1fr;gap:.15rem .8rem;margin:.3rem 0}
dl.gate dt,dl.when dt{color:var(--muted)}dl.gate dd,dl.when dd{margin:0}
.legend{display:flex;flex-wrap:wrap;gap:.2rem 1rem;font-size:.9rem}
.axis{display:flex;justify-content:space-between;font-size:.85rem;color:var(--muted)}
@media (max-width:30rem){body{padding:.5rem;font-size:14px}.wave{padding:.6rem}dl.gate,dl.when{grid-template-columns:1fr}
dl.gate dd,dl.when dd{margin-bottom:.3rem}}
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
    return _legend(
        ("updated", "updated (on the wave version or newer)"),
        ("pending", "pending (on an older version)"),
        ("failed", "failed (pending, online, newest update to the wave version failed)"),
        ("offline", "offline (not seen for 4 hours; updated or pending)"),
    )


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


def _zone(name: object) -> tzinfo:
    """The calendar's zone by its name (``str`` of the core's zone: a tz database key, or ``UTC``)."""
    try:
        return ZoneInfo(str(name))
    except (ValueError, ZoneInfoNotFoundError):  # not a zone the tz database knows: UTC
        return timezone.utc


def forecast_of(wave: Json) -> Forecast | None:
    """The wave's forecast rebuilt from its JSON (``forecast_dict``'s inverse), so that the page words it
    with the text report's own functions (``Forecast.done_text``, ``step_text``); None without one, or for
    what is not the forecast's JSON (schemas/status.schema.json ``$defs/forecast``)."""
    data = wave.get("forecast")
    if not isinstance(data, Mapping):
        return None
    try:
        steps = tuple(
            StepForecast(
                step["step"],
                step["phase"],
                _moment(step["start"]),
                _moment(step["at"]),
                Bound(step["bound"]),
                int(step["wait"]),
                step["hold"],
                step["unmet"],
            )
            for step in data["steps"]
        )
        return Forecast(
            str(wave.get("name", "")),
            _zone(data["zone"]),
            steps,
            bool(data["completes"]),
            _moment(data["expires"]),
            tuple(str(item) for item in data["assumptions"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def forecast_section(wave: Json, now: str | None = None) -> str:
    """The wave's ``forecast``, when its status carries one, as a timeline; nothing without.

    Each step is a track on one time axis, from the earliest time the forecast names (the first wait's
    start, or ``now``) to the latest: its wait from ``start`` to ``start + wait``; when a window or a
    freeze held it (``bound``), the hold in that one's colour from where the wait ends (or ``now``, if
    later: the schedule is read from then) to ``at``, to the axis's end when no window ever opens; then
    its ``at`` as a mark, or, for a step not forecast, the words it waits on instead. The words beside
    each track are the text report's (``step_text``, ``done_text``); the times are the JSON's.
    """
    result, data = forecast_of(wave), wave.get("forecast")
    if result is None or not isinstance(data, Mapping):
        return ""
    current = _moment(now)
    spans = [_span(step, current) for step in result.steps]
    times = [
        moment
        for moment in (current, *(t for span in spans for t in span[:3]), *(s.at for s in result.steps))
        if moment is not None
    ]
    first, last = (min(times), max(times)) if times else (None, None)
    if first is not None and last is not None and last <= first:
        last = first + timedelta(hours=1)

    def x(moment: datetime | None) -> float | None:
        if moment is None or first is None or last is None:
            return None
        share = (moment - first).total_seconds() / (last - first).total_seconds()
        return min(max(share, 0.0), 1.0) * BAR_WIDTH

    rows = [
        _step_row(result, step, step_json, span, x, x(current))
        for step, step_json, span in zip(result.steps, data["steps"], spans, strict=True)
    ]
    axis = (
        f'<div class="axis"><span>{_utc(first)}</span><span>{_utc(last)}</span></div>'
        if first is not None and last is not None
        else ""
    )
    done = f'<p class="done">forecast: <strong>{text(result.done_text())}</strong>'
    if data.get("done_at"):
        done += f' <span class="muted">({text(data["done_at"])})</span>'
    done += "</p>"
    if result.within_expiry is False:
        done += (
            f'<p class="expiry"><strong class="blocked">Warning: the wave\'s targets expire '
            f"{text(data.get('expires'))}, before the forecast ends.</strong></p>"
        )
    assumed = "".join(f"<li>{text(item)}</li>" for item in result.assumptions)
    return f'<h3>{FORECAST_TITLE}</h3>\n{done}{forecast_legend()}{axis}<ol class="steps">{"".join(rows)}</ol>' + (
        f'<p class="muted">Assuming:</p><ul class="assumptions">{assumed}</ul>' if assumed else ""
    )


def forecast_legend() -> str:
    return _legend(
        ("wait", "the step's wait"),
        ("window", "outside the rollout windows"),
        ("freeze", "frozen"),
        ("earliest", "earliest time"),
        ("now", "now"),
    )


def _legend(*items: tuple[str, str]) -> str:
    """A swatch of each class (the style sheet colours it) with its label: fixed words, never names."""
    swatches = "".join(
        f'<span><svg class="swatch" viewBox="0 0 10 10" aria-hidden="true"><rect class="{kind}" width="10" '
        f'height="10"/></svg>{label}</span>'
        for kind, label in items
    )
    return f'<div class="legend">{swatches}</div>'


def _span(step: StepForecast, now: datetime | None) -> tuple[datetime | None, datetime | None, datetime | None]:
    """Where a step's wait starts, where it ends and where its hold starts (None: not drawn)."""
    if step.start is None:
        return None, None, None
    waited = step.start + timedelta(seconds=step.wait_seconds)
    held = step.bound in (Bound.WINDOW, Bound.FREEZE) and step.hold is not None
    return step.start, waited, (max(waited, now) if now is not None else waited) if held else None


def _step_row(
    result: Forecast,
    step: StepForecast,
    step_json: Json,
    span: tuple[datetime | None, datetime | None, datetime | None],
    x: Callable[[datetime | None], float | None],
    now: float | None,
) -> str:
    """One step: its words as the text report has them, its track, and its times as the JSON has them."""
    start, waited, held = span
    rects = [f'<rect class="track" x="0" y="{TRACK / 2 - 1:g}" width="{BAR_WIDTH}" height="2"/>']

    def band(kind: str, begin: datetime | None, end: datetime | None, title: str) -> None:
        left, right = x(begin), (x(end) if end is not None else float(BAR_WIDTH))
        if left is not None and right is not None and right > left:
            rects.append(
                f'<rect class="{kind}" x="{left:.1f}" y="3" width="{right - left:.1f}" height="{TRACK - 6}">'
                f"<title>{text(title)}</title></rect>"
            )

    if step.wait_seconds:
        band("wait", start, waited, f"wait {format_duration(step.wait_seconds)}")
    if held is not None:
        band(str(step.bound), held, step.at, step.hold or "")
    mark = x(step.at)
    if mark is not None:
        rects.append(
            f'<rect class="earliest" x="{max(mark - 3, 0):.1f}" y="0" width="6" height="{TRACK}">'
            f"<title>earliest: {text(step_json.get('at'))}</title></rect>"
        )
    if now is not None:
        rects.append(f'<rect class="now" x="{max(now - 1, 0):.1f}" y="0" width="2" height="{TRACK}"/>')
    rows = [
        ("wait starts", step_json.get("start")),
        ("wait", format_duration(step.wait_seconds) if step.wait_seconds else "none"),
    ]
    if step.hold is not None:
        rows.append(("held by", step.hold))
    rows.append(("earliest", step_json.get("at")) if step.at is not None else ("waits on", step.unmet or step.hold))
    cells = "".join(f"<dt>{name}</dt><dd>{DASH if value is None else text(value)}</dd>" for name, value in rows)
    return (
        f'<li class="step"><div class="head"><strong>{text(step.step)}</strong>'
        f'<span class="muted">{text(result.step_text(step))}</span></div>'
        f'<svg class="track" viewBox="0 0 {BAR_WIDTH} {TRACK}" height="{TRACK}" preserveAspectRatio="none" '
        f'aria-hidden="true">{"".join(rects)}</svg><dl class="when">{cells}</dl></li>'
    )


def _utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
