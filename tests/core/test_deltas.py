"""The static-delta warning of the planner: a wave to create whose build's targets have no static delta."""

from __future__ import annotations

import re
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from reconciler.core import build_plan
from reconciler.core.spec import Location
from reconciler.errors import Severity
from tests.helpers.planning import NOW, active, observed, phase, record, wave

TARGET_AT = Location("v46.yaml", 5, 9)  # where `target: 46` has its value
BOTH = {"intel-corei7-64-lmp-46": frozenset({"main"}), "raspberrypi4-64-lmp-46": frozenset({"main"})}


def spec46(**changes):
    spec = wave("v46", 46, [phase("canary", group="canary")])
    return replace(spec, positions={"target": TARGET_AT}, **changes)


def state(without: dict | None, *waves, backend: str = "local:/f"):
    return replace(
        observed(list(waves), ci={46: True}),
        ci_without_deltas={} if without is None else {46: without},
        backend=backend,
    )


def test_a_new_wave_of_a_build_without_static_deltas_warns_at_its_target_line_with_the_fix():
    plan = build_plan([spec46()], state(BOTH, backend="https://api.foundries.io"))
    (warning,) = plan.warnings
    assert (warning.file, warning.line, warning.col, warning.severity) == ("v46.yaml", 5, 9, Severity.WARNING)
    assert warning.message == (
        "wave 'v46': targets intel-corei7-64-lmp-46, raspberrypi4-64-lmp-46 of build 46 have no static delta "
        "(custom.delta-stats), so devices download the full OSTree update; before the wave is created, run "
        "`fioctl targets static-deltas --by-tag production 46`"
    )
    assert not plan.errors and [op.ready for op in plan.operations] == [True, True], "a warning holds nothing"


def test_on_the_local_factory_the_warning_also_names_its_command():
    (warning,) = build_plan([spec46()], state(BOTH)).warnings
    assert warning.message.endswith(
        "`fioctl targets static-deltas --by-tag production 46` "
        "(local factory: `reconcile-factory build 46 --static-deltas`)"
    )


def test_a_build_whose_targets_all_have_static_deltas_does_not_warn():
    assert build_plan([spec46()], state({})).warnings == ()


def test_only_the_targets_without_a_delta_are_named():
    (warning,) = build_plan([spec46()], state({"raspberrypi4-64-lmp-46": frozenset({"main"})})).warnings
    assert "target raspberrypi4-64-lmp-46 of build 46 has no static delta" in warning.message
    assert "intel" not in warning.message


def test_many_targets_are_counted_after_the_first_three():
    many = {f"hw{i}-lmp-46": frozenset({"main"}) for i in range(5)}
    (warning,) = build_plan([spec46()], state(many)).warnings
    assert "targets hw0-lmp-46, hw1-lmp-46, hw2-lmp-46 and 2 more of build 46 have" in warning.message


def test_with_a_source_tag_only_the_targets_the_wave_promotes_count():
    mixed = {"a-lmp-46": frozenset({"devel"}), "b-lmp-46": frozenset({"main", "devel"})}
    assert build_plan([spec46(source_tag="main")], state({"a-lmp-46": frozenset({"devel"})})).warnings == ()
    (warning,) = build_plan([spec46(source_tag="main")], state(mixed)).warnings
    assert "target b-lmp-46 of build 46 has" in warning.message


def test_an_init_blocked_behind_an_active_wave_still_warns_it_is_the_time_to_generate_them():
    older = active("v44", 44, [record("canary", NOW - timedelta(hours=1), full=True)])
    spec44 = replace(wave("v44", 44, [phase("canary", group="canary")]), positions={})
    plan = build_plan([spec44, spec46()], state(BOTH, older))
    init = next(op for op in plan.operations if op.wave == "v46")
    assert not init.ready and [w.line for w in plan.warnings] == [5]


def test_existing_waves_are_not_checked_their_signed_targets_cannot_change():
    for status in ("active", "complete", "canceled"):
        plan = build_plan([spec46()], state(BOTH, active("v46", 46, status=status)))
        assert not [w for w in plan.warnings if "static delta" in w.message], status


def test_a_manifest_that_cancels_a_wave_never_created_does_not_warn():
    plan = build_plan([spec46(cancel=True)], state(BOTH))
    assert not [w for w in plan.warnings if "static delta" in w.message]


def test_unread_ci_targets_do_not_warn():
    assert build_plan([spec46()], state(None)).warnings == ()


tags = st.frozensets(st.sampled_from(["main", "devel", "prod"]), max_size=3)


@settings(max_examples=200, deadline=None)
@given(
    without=st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]), tags, max_size=5),
    source_tag=st.none() | st.sampled_from(["main", "devel"]),
)
def test_it_warns_exactly_when_a_target_the_wave_promotes_lacks_a_delta_and_names_each(without, source_tag):
    plan = build_plan([spec46(source_tag=source_tag)], state(without))
    promoted = sorted(n for n, t in without.items() if source_tag is None or source_tag in t)
    assert len(plan.warnings) == (1 if promoted else 0)
    if promoted:
        named = re.search(r": targets? (.+) of build 46 ha", plan.warnings[0].message).group(1)
        shown, _, more = named.partition(" and ")
        assert shown.split(", ") == promoted[:3]
        assert more == (f"{len(promoted) - 3} more" if len(promoted) > 3 else "")
