"""The pure core: desired (``spec``) and observed (``state``) state, the planner (``plan``), ``status``.

    manifests --reconciler.manifest--> [WaveSpec]
    factory   --reconciler.factory.observe---> ObservedState
    [WaveSpec] + ObservedState ------> build_plan() -> Plan --> reconciler.render | reconciler.apply

Nothing here does I/O, reads a clock or talks to a network: every rule of the domain (ledger
matching, gates, ordering, conflicts) is tested with hand-built states. ``tests/test_architecture.py``
keeps it that way.
"""

from reconciler.core.failures import waves_needing_failures
from reconciler.core.forecast import ASSUMPTIONS, Bound, Forecast, StepForecast, forecast
from reconciler.core.forecast import TITLE as FORECAST_TITLE
from reconciler.core.forecast import to_dict as forecast_dict
from reconciler.core.ledger import MAX_PHASE_UUIDS, MAX_ROLLOUT_UUIDS
from reconciler.core.plan.checks import empty_rollout_warnings
from reconciler.core.plan.keys import without_keyed_steps, without_signs_by
from reconciler.core.plan.model import (
    CancelOp,
    CompleteOp,
    InitOp,
    Operation,
    OpKind,
    Plan,
    RolloutOp,
    SignOp,
    WaveSummary,
    rollout_scope,
)
from reconciler.core.plan.planner import build_plan
from reconciler.core.plan.reads import (
    active_tags,
    next_rollouts,
    pending_groups,
    selected_specs,
    tags_needing_devices,
    uuids_to_check,
    waves_needing_status,
    waves_to_cancel,
)
from reconciler.core.signatures import short_keyid, shortfall, signatures_text
from reconciler.core.spec import (
    CompleteSpec,
    FailureBound,
    Gate,
    Limit,
    Location,
    LostManifest,
    ManifestChange,
    OnFailure,
    PhaseSpec,
    WaveSpec,
)
from reconciler.core.state import (
    Device,
    ObservedState,
    ObservedWave,
    ProdTargets,
    RolloutRecord,
    SigningInputs,
    TargetsKeys,
    WaveFailures,
    WaveProgress,
    WaveStatus,
)
from reconciler.core.status import (
    DeviceFacts,
    DeviceRow,
    GateReport,
    LastUpdate,
    PhaseReport,
    ScopeCounts,
    StatusReport,
    WaveCounts,
    WaveReport,
    build_status,
    classify,
    gate_text,
    needs_events,
    newest_completed,
    reached,
    waves_needing_counts,
    waves_to_report,
)
from reconciler.core.text import EXPIRY_WARNING, counted, format_duration
from reconciler.core.windows import MINUTES_PER_DAY, WEEKDAYS, Freeze, Schedule, Window, day_start

__all__ = [
    "ASSUMPTIONS",
    "EXPIRY_WARNING",
    "FORECAST_TITLE",
    "MAX_PHASE_UUIDS",
    "MAX_ROLLOUT_UUIDS",
    "MINUTES_PER_DAY",
    "WEEKDAYS",
    "Bound",
    "CancelOp",
    "CompleteOp",
    "CompleteSpec",
    "Device",
    "DeviceFacts",
    "DeviceRow",
    "FailureBound",
    "Forecast",
    "Freeze",
    "Gate",
    "GateReport",
    "InitOp",
    "LastUpdate",
    "Limit",
    "Location",
    "LostManifest",
    "ManifestChange",
    "ObservedState",
    "ObservedWave",
    "OnFailure",
    "OpKind",
    "Operation",
    "PhaseReport",
    "PhaseSpec",
    "Plan",
    "ProdTargets",
    "RolloutOp",
    "RolloutRecord",
    "Schedule",
    "ScopeCounts",
    "SignOp",
    "SigningInputs",
    "StatusReport",
    "StepForecast",
    "TargetsKeys",
    "WaveCounts",
    "WaveFailures",
    "WaveProgress",
    "WaveReport",
    "WaveSpec",
    "WaveStatus",
    "WaveSummary",
    "Window",
    "active_tags",
    "build_plan",
    "build_status",
    "classify",
    "counted",
    "day_start",
    "empty_rollout_warnings",
    "forecast",
    "forecast_dict",
    "format_duration",
    "gate_text",
    "needs_events",
    "newest_completed",
    "next_rollouts",
    "pending_groups",
    "reached",
    "rollout_scope",
    "selected_specs",
    "short_keyid",
    "shortfall",
    "signatures_text",
    "tags_needing_devices",
    "uuids_to_check",
    "waves_needing_counts",
    "waves_needing_failures",
    "waves_needing_status",
    "waves_to_cancel",
    "waves_to_report",
    "without_keyed_steps",
    "without_signs_by",
]
