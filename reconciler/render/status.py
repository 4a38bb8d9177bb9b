"""``reconcile status`` output: the report as aligned text, JSON (schemas/status.schema.json) or Markdown.

Rendering only; ``status.py`` reads the factory. Times are UTC ``YYYY-MM-DDTHH:MM:SSZ``; a number
the factory was not asked for is ``–`` in text and Markdown and absent (or null) in JSON.

Names, users and messages come from the factory (a device names itself when it registers), so every
value is escaped as ``render.py`` escapes a plan's: ``printable`` in text, code spans and ``md_text``
in Markdown; JSON escapes every non-ASCII character.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from reconciler.core import (
    EXPIRY_WARNING,
    FORECAST_TITLE,
    DeviceRow,
    Forecast,
    GateReport,
    ObservedWave,
    PhaseReport,
    ScopeCounts,
    StatusReport,
    WaveReport,
    WaveStatus,
    counted,
    forecast_dict,
    format_duration,
    gate_text,
)
from reconciler.safetext import md_code, md_text, printable

FORMAT_VERSION = "1.0"
DASH = "–"


def iso(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def render(report: StatusReport, output_format: str) -> str:
    if output_format == "json":
        return json.dumps(to_dict(report), indent=2)
    if output_format == "markdown":
        return to_markdown(report)
    return to_text(report)


# -- tables -----------------------------------------------------------------------------------------


def table(
    header: list[str], rows: list[list[str]], numeric: frozenset[int] = frozenset(), indent: str = "  "
) -> list[str]:
    """Columns padded to their widest cell; numbers right-aligned, like ``fioctl waves status``."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = []
    for row in [header, *rows]:
        cells = [
            cell.rjust(w) if i in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append((indent + "  ".join(cells)).rstrip())
    return out


def _n(value: int | None) -> str:
    return DASH if value is None else str(value)


def _phase_cells(phase: PhaseReport) -> list[str]:
    counts = phase.counts
    return [
        phase.name,
        phase.scope,
        phase.state,
        iso(phase.rollout_at) or "",
        phase.rollout_by or "",
        _n(phase.reached),
        _n(counts.updated if counts else None),
        _n(counts.pending if counts else None),
        _n(counts.offline if counts else None),
        _n(phase.failed),
    ]


PHASE_HEADER = ["PHASE", "SCOPE", "STATE", "ROLLED OUT", "BY", "REACHED", "UPDATED", "PENDING", "OFFLINE", "FAILED"]


def _soon(when: datetime, now: datetime) -> str:
    """The plan's expiry warning, in a word: expired, or within its 30 days."""
    if when <= now:
        return " (EXPIRED)"
    return f" (in {format_duration(when - now)})" if when - now < EXPIRY_WARNING else ""


def _title(wave: WaveReport) -> str:
    where = wave.manifest or "unmanaged: no manifest"
    return f"{wave.name}: {wave.status}, version {wave.version}, tag {wave.tag} ({where})"


def _facts(wave: WaveReport, now: datetime) -> list[str]:
    lines = []
    if wave.created_at is not None:
        line = f"created {iso(wave.created_at)}" + (f" by {wave.created_by}" if wave.created_by else "")
        if wave.finished_at is not None:
            verb = "completed" if wave.status == "complete" else "canceled"
            line += f"; {verb} {iso(wave.finished_at)}" + (f" by {wave.finished_by}" if wave.finished_by else "")
        lines.append(line)
    if wave.totals is not None:
        t = wave.totals
        lines.append(
            f"devices on tag {wave.tag}: {t.devices} ({t.updated} updated, {t.pending} on older versions, "
            f"{t.offline} offline)"
        )
    if wave.left_on_canceled is not None:
        lines.append(f"left on canceled version {wave.version}: {counted(wave.left_on_canceled, 'device')}")
    expiry = []
    if wave.targets_expire is not None:
        expiry.append(f"wave targets expire {iso(wave.targets_expire)}{_soon(wave.targets_expire, now)}")
    if wave.production_expire is not None:
        expiry.append(
            f"production targets of {wave.tag} expire {iso(wave.production_expire)}{_soon(wave.production_expire, now)}"
        )
    if expiry:
        lines.append("; ".join(expiry))
    if wave.next_step is not None:
        lines.append(f"next: {gate_text(wave.next_step, now)}")
    if wave.forecast is not None:
        lines.append(f"forecast: {wave.forecast.done_text()}")
    return lines


def _forecast_lines(forecast: Forecast) -> list[str]:
    """Each remaining step's earliest time, then what the forecast assumes."""
    return [forecast.step_text(step) for step in forecast.steps] + [f"assuming {'; '.join(forecast.assumptions)}"]


def to_text(report: StatusReport) -> str:
    lines = [printable(f"Factory {report.factory} ({report.backend}), now {iso(report.now)}")]
    if not report.waves:
        lines += ["", "No waves: no manifests under the given paths and no active wave in the factory."]
    for wave in report.waves:
        lines += ["", printable(_title(wave))] + [f"  {printable(line)}" for line in _facts(wave, report.now)]
        if wave.phases:
            lines += table(PHASE_HEADER, [_phase_cells(p) for p in wave.phases], numeric=frozenset({5, 6, 7, 8, 9}))
        if wave.forecast is not None:
            lines += ["  forecast:"] + [f"    {printable(line)}" for line in _forecast_lines(wave.forecast)]
    return "\n".join(lines)


# -- Markdown ---------------------------------------------------------------------------------------


def _cell(text: object) -> str:
    """Literal Markdown text, also inside a table cell (``md_text`` escapes ``|``)."""
    return md_text(str(text))


def to_markdown(report: StatusReport) -> str:
    out = [
        f"### Wave status for factory {md_code(report.factory)}",
        "",
        f"Backend {md_code(report.backend)}, factory time {iso(report.now)}.",
    ]
    for wave in report.waves:
        out += ["", f"#### {md_code(wave.name)}: {wave.status}, version {wave.version}, tag {_cell(wave.tag)}", ""]
        out.append(f"Manifest {md_code(wave.manifest)}." if wave.manifest else "Unmanaged: no manifest.")
        out += [f"- {_cell(line)}" for line in _facts(wave, report.now)]
        if wave.phases:
            out += [
                "",
                "| " + " | ".join(h.title() for h in PHASE_HEADER) + " |",
                "|---|---|---|---|---|---:|---:|---:|---:|---:|",
            ]
            out += ["| " + " | ".join(_cell(c) for c in _phase_cells(p)) + " |" for p in wave.phases]
        if wave.forecast is not None:
            out += ["", f"{FORECAST_TITLE}:", ""]
            out += [f"- {_cell(line)}" for line in _forecast_lines(wave.forecast)]
    return "\n".join(out) + "\n"


# -- JSON -------------------------------------------------------------------------------------------


def _counts(counts: ScopeCounts | None) -> dict[str, Any] | None:
    if counts is None:
        return None
    return {"devices": counts.devices, "updated": counts.updated, "pending": counts.pending, "offline": counts.offline}


def _gate(gate: GateReport | None) -> dict[str, Any] | None:
    if gate is None:
        return None
    data: dict[str, Any] = {"step": gate.step, "passed": gate.passed}
    if gate.blocked_by:
        data["blocked_by"] = gate.blocked_by
    if gate.wait_seconds:
        data["wait_seconds"] = gate.wait_seconds
        data["wait_passes_at"] = iso(gate.wait_passes_at)
    if gate.updated_required is not None:
        data.update(updated_required=gate.updated_required, updated=gate.updated, reached=gate.reached)
    if gate.failed_bound is not None:
        data.update(failed_bound=gate.failed_bound, failed=gate.failed, reached=gate.reached)
    if gate.because:
        data["because"] = gate.because
    return data


def _phase(phase: PhaseReport) -> dict[str, Any]:
    return {
        "name": phase.name,
        "scope": phase.scope,
        "group": phase.group,
        "state": phase.state,
        "rollout_at": iso(phase.rollout_at),
        "rollout_by": phase.rollout_by,
        "reached": phase.reached,
        "counts": _counts(phase.counts),
        "failed": phase.failed,
    }


def wave_dict(wave: WaveReport) -> dict[str, Any]:
    return {
        "name": wave.name,
        "manifest": wave.manifest,
        "tag": wave.tag,
        "version": wave.version,
        "status": wave.status,
        "created_at": iso(wave.created_at),
        "created_by": wave.created_by,
        "finished_at": iso(wave.finished_at),
        "finished_by": wave.finished_by,
        "devices": _counts(wave.totals),
        "left_on_canceled": wave.left_on_canceled,
        "targets_expire": iso(wave.targets_expire),
        "production_expire": iso(wave.production_expire),
        "next_step": _gate(wave.next_step),
        "phases": [_phase(p) for p in wave.phases],
        "forecast": None if wave.forecast is None else forecast_dict(wave.forecast),
    }


def to_dict(report: StatusReport) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "factory": report.factory,
        "backend": report.backend,
        "now": iso(report.now),
        "waves": [wave_dict(w) for w in report.waves],
    }


# -- devices ----------------------------------------------------------------------------------------

DEVICE_HEADER = ["UUID", "NAME", "GROUP", "LAST SEEN", "TARGET", "STATE", "LAST UPDATE"]


def _last_update(row: DeviceRow) -> str:
    last = row.last_update
    if last is None:
        return DASH
    result = "failed" if last.failed else ("ok" if last.failed is False else "?")
    # The time as the other columns show theirs (UTC, Z); JSON keeps the API's own string.
    return f"{result}: {last.target or last.version} at {iso(last.at_utc) or last.at}"


def list_note(wave: ObservedWave) -> str | None:
    """What the list holds when that is not "the devices not on its version": after a cancel the wave stages
    no device, so a count that drops to the failed alone would read as if the failures had gone away."""
    if wave.status is not WaveStatus.CANCELED:
        return None
    return (
        f"After the cancel: the devices left on version {wave.version} (left) and those whose newest update, "
        f"to version {wave.version}, failed (failed), online or not; no device is pending or offline any more."
    )


def devices(wave: ObservedWave, rows: list[DeviceRow], now: datetime, output_format: str) -> str:
    note = list_note(wave)
    if output_format == "json":
        return json.dumps(
            {
                "format_version": FORMAT_VERSION,
                "wave": wave.name,
                "version": wave.version,
                "tag": wave.tag,
                "status": wave.status,
                "now": iso(now),
                "note": note,
                "devices": [
                    {
                        "uuid": r.device.uuid,
                        "name": r.device.name,
                        "group": r.device.group,
                        "last_seen": iso(r.device.last_seen),
                        "target": r.device.target_name,
                        "state": r.state,
                        "last_update": None
                        if r.last_update is None
                        else {
                            "version": r.last_update.version,
                            "target": r.last_update.target,
                            "time": r.last_update.at,
                            "failed": r.last_update.failed,
                        },
                    }
                    for r in rows
                ],
            },
            indent=2,
        )
    cells = [
        [
            r.device.uuid,
            r.device.name,
            r.device.group or DASH,
            iso(r.device.last_seen) or "never",
            r.device.target_name,
            r.state,
            _last_update(r),
        ]
        for r in rows
    ]
    if output_format == "markdown":
        out = [
            f"### Devices of wave {md_code(wave.name)} (version {wave.version}, {wave.status}): {counted(len(rows), 'device')}",
            "",
            *([md_text(note), ""] if note else []),
            "| " + " | ".join(h.title() for h in DEVICE_HEADER) + " |",
            "|---|---|---|---|---|---|---|",
        ]
        out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in cells]
        return "\n".join(out) + "\n"
    title = printable(
        f"Wave {wave.name} (version {wave.version}, tag {wave.tag}, {wave.status}), now {iso(now)}: "
        f"{counted(len(rows), 'device')}"
    )
    return "\n".join([title, *([note] if note else []), *(table(DEVICE_HEADER, cells, indent="") if rows else [])])
