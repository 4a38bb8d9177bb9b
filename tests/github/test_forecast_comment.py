"""The PR comment and the job summary carry the forecast: a list anyone can read, then a Mermaid gantt chart
(GitHub renders it; elsewhere its source shows below the same facts)."""

from __future__ import annotations

from datetime import timedelta

from reconciler.core import CompleteSpec, Gate, build_plan
from reconciler.github._comment import comment_body
from reconciler.github._report import Report, summary_markdown
from reconciler.render.plan import to_dict, to_markdown
from tests.helpers.planning import HOUR, NOW, active, observed, phase, record, wave

SPEC = wave(
    "v46",
    46,
    [phase("canary", group="canary"), phase("beta", group="beta", wait=24 * HOUR)],
    complete=CompleteSpec(Gate(wait_seconds=12 * HOUR)),
)


def test_the_comment_and_the_summary_show_the_forecast_as_a_list_then_a_gantt_chart():
    state = observed([active("v46", 46, [record("canary", NOW - timedelta(hours=2), full=True)])])
    plan = build_plan([SPEC], state)
    markdown = to_markdown(plan)
    for body in (comment_body(markdown, "demo", None), summary_markdown(Report(to_dict(plan), markdown, ""))):
        listed = body.index("- `v46`: done no earlier than Tue 2026-11-24 22:00 UTC")
        assert body.index("  - rollout beta no earlier than Tue 2026-11-24 10:00 UTC (wait 24h)") > listed
        chart = body.index("```mermaid\ngantt\n")
        assert chart > listed
        assert "  rollout beta :s0, 2026-11-23 10:00, 2026-11-24 10:00\n" in body[chart:]
        assert "  complete :s1, 2026-11-24 10:00, 2026-11-24 22:00\n" in body[chart:]
