"""Rendering the status report (render/status.py): the parts the CLI tests cannot reach with a fresh factory."""

from __future__ import annotations

from datetime import timedelta

from reconciler.render.status import to_text
from tests.helpers.planning import NOW
from tests.helpers.status import SPEC, facts, report


def test_text_marks_targets_that_expire_within_30_days():
    state = report(
        [SPEC],
        [facts("v46", 46)],
        prod_expiry={"production": NOW + timedelta(days=20)},
        wave_expiry={"v46": NOW - timedelta(hours=1)},
    )
    text = to_text(state)
    assert "wave targets expire 2026-11-23T11:00:00Z (EXPIRED)" in text
    assert "production targets of production expire 2026-12-13T12:00:00Z (in 20d)" in text
    far = to_text(report([SPEC], [facts("v46", 46)], prod_expiry={"production": NOW + timedelta(days=31)}))
    assert "expire 2026-12-24T12:00:00Z\n" in far + "\n" and "(in " not in far
