"""Writing to the factory: a plan's steps, each guarded, under the factory's apply lease.

steps      apply a plan step by step; the factory's rollout history is the ledger
writes     one guarded write: checked against the factory before and after, an uncertain answer settled
lease      the apply lease (a git ref) and its pending-write notes
savedplan  ``--out`` / ``--plan``: a reviewed plan, refused when the factory changed since
session    one run's steps, as the command line calls them: plan, scope to the key, check, confirm, apply
"""

from reconciler.apply.savedplan import DEFAULT_MAX_AGE as DEFAULT_PLAN_MAX_AGE
from reconciler.apply.savedplan import SavedPlan
from reconciler.apply.savedplan import load as load_saved_plan
from reconciler.apply.session import KeySource, Planned, Say, Session, open_session, summary
from reconciler.apply.steps import Outcome, apply_plan
from reconciler.apply.writes import exclusive_writer, lease_store, unlock

__all__ = [
    "DEFAULT_PLAN_MAX_AGE",
    "KeySource",
    "Outcome",
    "Planned",
    "SavedPlan",
    "Say",
    "Session",
    "apply_plan",
    "exclusive_writer",
    "lease_store",
    "load_saved_plan",
    "open_session",
    "summary",
    "unlock",
]
