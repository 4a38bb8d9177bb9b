"""Plan -> text (terminal), JSON (machines, schemas/plan.schema.json) or Markdown (pull requests).

Conventions borrowed from Terraform: one symbol per kind of step (``+ init``, ``~ rollout``,
``* complete``, ``- cancel``; ``# sign`` adds an offline signature), a summary line, and "No changes." when there is nothing to do.

Names, groups, reasons, file names and diffs come from pull requests and from the factory, so every
format escapes them (``reconciler.safetext``): the text plan shows control and bidi characters as
``\\u`` escapes, one line per line; Markdown puts values in code spans whose fence they cannot close
and backslash-escapes everything else (no raw HTML); JSON escapes by itself.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime
from typing import Any

from reconciler.core import (
    FORECAST_TITLE,
    CancelOp,
    Forecast,
    InitOp,
    Operation,
    OpKind,
    Plan,
    RolloutOp,
    SignOp,
    WaveStatus,
    WaveSummary,
    counted,
    forecast_dict,
    rollout_scope,
)
from reconciler.errors import MAX_SHOWN, Problem, more_line
from reconciler.safetext import md_cell_code, md_code, md_text, printable

FORMAT_VERSION = "1.0"
SYMBOLS = {OpKind.INIT: "+", OpKind.SIGN: "#", OpKind.ROLLOUT: "~", OpKind.COMPLETE: "*", OpKind.CANCEL: "-"}
NO_CHANGES = "No changes. The factory matches the manifests."


def iso(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def summary_line(plan: Plan) -> str:
    ready = Counter(op.op for op in plan.ready)
    blocked = sum(1 for op in plan.operations if not op.ready)
    parts = [
        f"{ready[OpKind.INIT]} to init",
        f"{ready[OpKind.ROLLOUT]} to roll out",
        f"{ready[OpKind.COMPLETE]} to complete",
        f"{ready[OpKind.CANCEL]} to cancel",
    ]
    if any(isinstance(op, SignOp) for op in plan.operations):  # only factories whose root needs more signatures
        parts.insert(1, f"{ready[OpKind.SIGN]} to sign")
    return f"Plan: {', '.join(parts)}; {blocked} blocked."


def operation_detail(op: Operation) -> str:
    if isinstance(op, RolloutOp):
        detail = f"phase '{op.phase}'{op.part_label} ({rollout_scope(op)})"
        if op.devices is not None:
            detail += f", {counted(op.devices, 'device')}"
        return detail
    if isinstance(op, InitOp):
        detail = f"target {op.target}, tag {op.tag}, expires {iso(op.expires)}"
        if op.prune:
            detail += f", prune {', '.join(map(str, op.prune))}"
        return detail + ", needs the offline key"
    if isinstance(op, SignOp):
        return f"{op.shortfall.text()}: {op.signatures} of {op.threshold} signatures, needs the offline key"
    if isinstance(op, CancelOp) and op.orphans is not None:
        return op.leaves_behind()
    return ""


def _first(problems: tuple[Problem, ...]) -> tuple[Problem, ...]:
    """The problems a person reads (all of them are in the JSON plan)."""
    return problems[:MAX_SHOWN]


def _more(problems: tuple[Problem, ...], title: str, indent: str) -> list[str]:
    omitted = len(problems) - MAX_SHOWN
    return [indent + more_line(omitted, title.lower())] if omitted > 0 else []


# -- text ----------------------------------------------------------------------------------------


def to_text(plan: Plan, diffs: dict[str, str] | None = None) -> str:
    """The plan for a terminal; every line is escaped on its own, so nothing in it adds a line."""
    lines = [f"Factory {plan.factory} ({plan.backend}), now {iso(plan.now)}"]
    for path, diff in (diffs or {}).items():
        lines += ["", f"Changed manifest {path}:"] + [f"  {line}" for line in diff.rstrip("\n").split("\n")]
    active = [w for w in plan.waves if w.status == WaveStatus.ACTIVE]
    if active:
        lines += ["", "Active waves:", *_progress_table(active)]
    if plan.operations:
        lines.append("")
        width = max(len(op.wave) for op in plan.operations)
        for op in plan.operations:
            lines.append(f"  {SYMBOLS[op.op]} {op.op:<8} {op.wave:<{width}}  {operation_detail(op)}".rstrip())
            if not op.ready:
                lines.append(f"      blocked: {op.reason}")
            elif op.reason:  # a step the reconciler decided on itself (onFailure: cancel) says why
                lines.append(f"      because {op.reason}")
    forecasts = _forecasts(plan)
    if forecasts:
        lines += ["", FORECAST_TITLE + ":"] + [f"  {f.wave}: {f.done_text()}" for f in forecasts]
    for title, problems in (("Warnings", plan.warnings), ("Errors", plan.errors)):
        if problems:
            lines += ["", f"{title}:"] + [f"  {p}" for p in _first(problems)] + _more(problems, title, "  ")
    if plan.held:
        lines += ["", "Held by errors (their steps and the later steps of their tag wait; other tags go on):"]
        lines += [f"  {held.wave} (tag {held.tag}): {held.reason}" for held in plan.held]
    if plan.skipped_manifests:
        skipped = plan.skipped_manifests
        lines += ["", f"{skipped} wave{'' if skipped == 1 else 's'} for other factories skipped."]
    lines.append("")
    lines.append(NO_CHANGES if not plan.operations and not plan.errors else summary_line(plan))
    return "\n".join(printable(line) for line in lines)


def _forecasts(plan: Plan) -> list[Forecast]:
    """The forecasts of the waves with steps left after this plan (core/forecast.py): a wave done within
    this plan needs none."""
    return [
        w.forecast
        for w in plan.waves
        if w.forecast is not None
        and w.forecast.steps
        and (w.forecast.done_at or datetime.max.replace(tzinfo=plan.now.tzinfo)) > plan.now
    ]


def _progress_table(waves: list[WaveSummary]) -> list[str]:
    """The Markdown plan's wave table for the terminal: phases done and the updated share, aligned."""
    rows = [["WAVE", "TAG", "TARGET", "PHASES", "PROGRESS"]]
    for wave in waves:
        drift = " (drift)" if wave.drift else ""
        rows.append(
            [wave.name, wave.tag, str(wave.target), f"{wave.phases_done}/{len(wave.phases)}{drift}", _progress(wave)]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


# -- JSON ----------------------------------------------------------------------------------------


def problem_dict(problem: Problem) -> dict[str, Any]:
    data: dict[str, str | int] = {"message": problem.message}
    if problem.file:
        data.update(file=problem.file, line=problem.line, col=problem.col)
    return data


def operation_dict(op: Operation) -> dict[str, Any]:
    data: dict[str, Any] = {
        "op": op.op,
        "wave": op.wave,
        "tag": op.tag,
        "status": op.status,
        "manifest": op.location.file,
        "line": op.location.line,
    }
    if op.reason:
        data["reason"] = op.reason
    if op.opens_at is not None:
        data["opens_at"] = iso(op.opens_at)
    if isinstance(op, RolloutOp):
        data.update(phase=op.phase, phase_index=op.phase_index, group=op.group)
        if op.parts > 1:
            data.update(part=op.part, parts=op.parts)
        if op.limit is not None:
            data["limit"] = op.limit
        if op.percentage is not None:
            data["percentage"] = op.percentage
        if op.uuids is not None:
            data["uuids"] = len(op.uuids)
        if op.devices is not None:
            data["devices"] = op.devices
    if isinstance(op, InitOp):
        data.update(target=op.target, prune=list(op.prune), expires=iso(op.expires), needs_key=True)
        if op.source_tag:
            data["source_tag"] = op.source_tag
    if isinstance(op, SignOp):
        data.update(signatures=op.signatures, threshold=op.threshold, keyids=list(op.keyids), needs_key=True)
    if isinstance(op, CancelOp) and op.orphans is not None:
        data.update(orphans=op.orphans, keep_previous=op.keep_previous, previous_version=op.previous_version)
    return data


def wave_dict(wave: WaveSummary) -> dict[str, Any]:
    data = {
        "name": wave.name,
        "manifest": wave.manifest,
        "tag": wave.tag,
        "target": wave.target,
        "status": wave.status,
        "phases_done": wave.phases_done,
        "phases_total": len(wave.phases),
        "phases": [{"name": name, "state": state} for name, state in wave.phases],
        "drift": list(wave.drift),
    }
    if wave.rolled_out is not None:
        data["progress"] = {"updated": wave.updated, "rolled_out": wave.rolled_out, "total": wave.total}
    if wave.forecast is not None and wave.forecast.steps:
        data["forecast"] = forecast_dict(wave.forecast)
    return data


Outcomes = list[tuple[Operation, str, str]]  # (step, done|already_done|failed|held, message) from an apply


def to_dict(
    plan: Plan,
    provenance: dict[str, Any] | None = None,
    diffs: dict[str, str] | None = None,
    outcomes: Outcomes | None = None,
) -> dict[str, Any]:
    data: dict[str, object] = {
        "format_version": FORMAT_VERSION,
        "factory": plan.factory,
        "backend": plan.backend,
        "now": iso(plan.now),
        "changes": plan.changes,
        "operations": [operation_dict(op) for op in plan.operations],
        "waves": [wave_dict(w) for w in plan.waves],
        "warnings": [problem_dict(p) for p in plan.warnings],
        "errors": [problem_dict(p) for p in plan.errors],
        "held": [{"wave": h.wave, "tag": h.tag, "reason": h.reason} for h in plan.held],
    }
    if outcomes is not None:
        data["applied"] = [
            {"step": operation_dict(op), "outcome": outcome, "message": message} for op, outcome, message in outcomes
        ]
    if provenance:
        data["provenance"] = provenance
    if diffs is not None:
        data["diffs"] = diffs
    return data


def to_json(
    plan: Plan,
    provenance: dict[str, Any] | None = None,
    diffs: dict[str, str] | None = None,
    outcomes: Outcomes | None = None,
) -> str:
    return json.dumps(to_dict(plan, provenance, diffs, outcomes), indent=2)


# -- Markdown ------------------------------------------------------------------------------------

STATE_STYLE = {
    "done": "fill:#2da44e,color:#ffffff",
    "ready": "fill:#0969da,color:#ffffff",
    "blocked": "fill:#d29922,color:#000000",
    "pending": "fill:#eaeef2,color:#000000",
}


def _fenced_block(text: str, info: str) -> list[str]:
    """A fenced code block that the text cannot close early: the fence is longer than any backtick run."""
    body = [printable(line) for line in text.rstrip("\n").split("\n")]
    longest = max((len(run) for line in body for run in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{info}", *body, fence]


def _progress(wave: WaveSummary) -> str:
    if wave.rolled_out and wave.updated is not None:
        return f"{wave.updated}/{wave.rolled_out} updated ({100 * wave.updated / wave.rolled_out:.0f}%)"
    return "–"


def mermaid(plan: Plan, wave: WaveSummary) -> str:
    """A left-to-right flow of the wave's steps, each node coloured by its state."""
    steps: list[tuple[str, str]] = []
    ops = [op for op in plan.operations if op.wave == wave.name]
    init = next((op for op in ops if op.op is OpKind.INIT), None)
    steps.append(("init", "done" if wave.status != "absent" else ("ready" if init and init.ready else "blocked")))
    sign = next((op for op in ops if op.op is OpKind.SIGN), None)
    if sign is not None:
        steps.append(("sign", "ready" if sign.ready else "blocked"))
    steps += wave.phases
    finish = next((op for op in ops if op.op in (OpKind.COMPLETE, OpKind.CANCEL)), None)
    if finish is not None:
        steps.append((finish.op, "ready" if finish.ready else "blocked"))
    elif wave.status in (WaveStatus.COMPLETE, WaveStatus.CANCELED):
        steps.append(("complete" if wave.status is WaveStatus.COMPLETE else "cancel", "done"))
    lines = ["```mermaid", "flowchart LR"]
    ids = []
    for index, (name, state) in enumerate(steps):
        node = f"s{index}"
        ids.append(node)
        lines.append(f'  {node}["{_mermaid_label(name)}"]:::{state}')
    if len(ids) > 1:
        lines.append("  " + " --> ".join(ids))
    lines += [f"  classDef {state} {style}" for state, style in STATE_STYLE.items()]
    lines.append("```")
    return "\n".join(lines)


def _mermaid_label(name: str) -> str:
    """A node label Mermaid shows literally: anything but letters, digits and ``_.+-`` as an entity
    code (``#96;`` for a backtick), so a label cannot end the node, the diagram or the code block."""
    return "".join(
        char if char.isascii() and (char.isalnum() or char in "_.+- ") else f"#{ord(char)};" for char in name
    )


def to_markdown(plan: Plan, provenance: dict[str, Any] | None = None, diffs: dict[str, str] | None = None) -> str:
    out = []
    verdict = "changes pending" if plan.changes else ("errors" if plan.errors else "no changes")
    out.append(f"### Wave plan for factory {md_code(plan.factory)}: {verdict}")
    source = f" at commit {md_code(provenance['commit'][:12])}" if provenance and provenance.get("commit") else ""
    out.append(f"Backend {md_code(plan.backend)}, factory time {iso(plan.now)}{source}.")
    out.append("")
    if plan.waves:
        out += ["| Wave | Tag | Target | Status | Phases | Progress |", "|---|---|---|---|---|---|"]
        for wave in plan.waves:
            drift = " ⚠ drift" if wave.drift else ""
            out.append(
                f"| {md_cell_code(wave.name)} | {md_text(wave.tag)} | {wave.target} | "
                f"{md_text(str(wave.status))}{drift} | {wave.phases_done}/{len(wave.phases)} | {_progress(wave)} |"
            )
        out.append("")
    if plan.operations:
        out += ["| | Step | Wave | Detail | Devices | Status |", "|---|---|---|---|---|---|"]
        for op in plan.operations:
            status = (
                ("ready" + (f": because {op.reason}" if op.reason else "")) if op.ready else f"blocked: {op.reason}"
            )
            devices = op.devices if isinstance(op, RolloutOp) and op.devices is not None else ""
            out.append(
                f"| `{SYMBOLS[op.op]}` | {op.op} | {md_cell_code(op.wave)} | {md_text(operation_detail(op))} | "
                f"{devices} | {md_text(status)} |"
            )
        out.append("")
        out.append(f"**{summary_line(plan)}**")
    elif not plan.errors:
        out.append(f"**{NO_CHANGES}**")
    out += forecast_markdown(_forecasts(plan))
    for title, problems in (("Errors", plan.errors), ("Warnings", plan.warnings)):
        if problems:
            out += ["", f"#### {title}", ""] + [f"- {md_code(str(p))}" for p in _first(problems)]
            out += _more(problems, title, "- ")
    if plan.held:
        out += [
            "",
            "#### Held by errors",
            "",
            "Their steps and the later steps of their tag wait; other tags go on.",
            "",
        ]
        out += [f"- {md_code(h.wave)} (tag {md_code(h.tag)}): {md_text(h.reason)}" for h in plan.held]
    if diffs:
        out += ["", f"<details><summary>Changed manifests ({len(diffs)})</summary>", ""]
        for path, diff in diffs.items():
            out += [f"Manifest {md_code(path)}:", "", *_fenced_block(diff, "diff"), ""]
        out.append("</details>")
    diagrams = [w for w in plan.waves if w.phases or w.status == "absent"]
    if diagrams:
        out += ["", "<details><summary>Phases</summary>", ""]
        for wave in diagrams:
            out += [f"**{md_text(wave.name)}**", "", mermaid(plan, wave), ""]
        out.append("</details>")
    return "\n".join(out) + "\n"


# -- the forecast in Markdown: a list, and a Mermaid gantt chart where Mermaid is rendered ----------


def forecast_markdown(forecasts: list[Forecast]) -> list[str]:
    """Each wave's forecast as a list a reader can read anywhere, then as a gantt chart (GitHub renders
    Mermaid; elsewhere the chart shows as its plain source, below the same facts in the list)."""
    if not forecasts:
        return []
    out = ["", f"#### {FORECAST_TITLE}", ""]
    for result in forecasts:
        out.append(f"- {md_code(result.wave)}: {md_text(result.done_text())}")
        out += [f"  - {md_text(result.step_text(step))}" for step in result.steps]
    charts = [chart for chart in (gantt(result) for result in forecasts) if chart]
    for chart in charts:
        out += ["", chart]
    return out


GANTT_DATE = "%Y-%m-%d %H:%M"


def gantt(result: Forecast) -> str:
    """A Mermaid ``gantt`` chart of one wave's forecast, on the calendar's clock: a bar per step from when
    its wait starts to its earliest time (a milestone when it runs right away); steps that are not
    forecast are left out (the list says why). Empty when no step is forecast."""
    rows = []
    for index, step in enumerate(result.steps):
        if step.at is None:
            continue
        at = step.at.astimezone(result.zone).strftime(GANTT_DATE)
        name = gantt_text(step.step)
        if step.start is None or step.start >= step.at:
            rows.append(f"  {name} :milestone, s{index}, {at}, 0m")
        else:
            start = step.start.astimezone(result.zone).strftime(GANTT_DATE)
            rows.append(f"  {name} :s{index}, {start}, {at}")
    if not rows:
        return ""
    lines = [
        "```mermaid",
        "gantt",
        f"  title {gantt_text(f'{result.wave} earliest times ({result.zone})')}",
        "  dateFormat YYYY-MM-DD HH:mm",
        "  axisFormat %m-%d %H:%M",
        f"  section {gantt_text(result.wave)}",
        *rows,
        "```",
    ]
    return "\n".join(lines)


def gantt_text(text: str) -> str:
    """Text Mermaid's gantt grammar reads as a name, whatever a pull request put in it: ASCII letters,
    digits, spaces and ``_.+-/()'`` stay, anything else (``:``, ``#``, ``;``, a comma, a backtick, a line
    break, any non-ASCII character) becomes ``_``; the same name always gives the same text."""
    return "".join(char if char.isascii() and (char.isalnum() or char in " _.+-/()'") else "_" for char in text)
