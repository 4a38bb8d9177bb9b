"""The pure core: the desired state (``spec``), the observed state (``state``) and the planner (``plan``).

    manifests --reconciler.manifest--> [WaveSpec]
    factory   --reconciler.observe---> ObservedState
    [WaveSpec] + ObservedState ------> build_plan() -> Plan --> reconciler.render | reconciler.apply

Nothing here does I/O, reads a clock or talks to a network: every rule of the domain (ledger
matching, gates, ordering, conflicts) is tested with hand-built states. ``tests/test_architecture.py``
keeps it that way.
"""

from reconciler.core.plan import Operation, Plan, build_plan
from reconciler.core.spec import WaveSpec
from reconciler.core.state import ObservedState

__all__ = ["ObservedState", "Operation", "Plan", "WaveSpec", "build_plan"]
