"""The static-delta warning: a wave about to be created for a build whose targets have no static delta.

The seeds recommend OSTree static deltas before rolling a wave out: without one, every device
downloads the whole OSTree update. A CI target has a static delta when its ``custom.delta-stats``
is an object (reference §1.4). fioctl checks this in ``waves init`` once it has created the wave (or
signed a ``--dry-run``), when the fix is to cancel the wave and create another
(fioctl 9b0a6e7, subcommands/waves/init.go L154-178: ``hasStaticDelta`` and its warning); the plan
says it before the init, when generating the deltas first is enough. The fix it names is fioctl's
``targets static-deltas --by-tag TAG VERSION`` (subcommands/targets/deltas.go): deltas to the
build from every version the devices of the wave's tag run.

Only waves the plan will create are checked. A wave's targets are signed with the offline key at
init, so once it exists its targets cannot gain a delta: a warning on every later run of an active
wave would name a fix (cancel, create again) that the previews and the init's own run already
offered, and would train operators to skip warnings.
"""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.core.spec import WaveSpec

MAX_NAMED_TARGETS = 3  # targets named in the warning; the rest are counted


def missing_deltas_warning(
    spec: WaveSpec, without_deltas: Mapping[str, frozenset[str]] | None, backend: str
) -> str | None:
    """Why the wave's new targets should get static deltas first, or None when they all have one.

    ``without_deltas`` maps each CI target of the wave's version that has no ``custom.delta-stats``
    to the tags it carries (None: the version's CI targets were not read). Only the targets the wave
    will promote count: with a ``sourceTag``, those carrying it, as ``waves init`` selects them.
    """
    if not without_deltas:
        return None
    names = sorted(name for name, tags in without_deltas.items() if spec.source_tag is None or spec.source_tag in tags)
    if not names:
        return None
    named = ", ".join(names[:MAX_NAMED_TARGETS])
    if len(names) > MAX_NAMED_TARGETS:
        named += f" and {len(names) - MAX_NAMED_TARGETS} more"
    fix = f"`fioctl targets static-deltas --by-tag {spec.tag} {spec.target}`"
    if backend.startswith("local:"):
        fix += f" (local factory: `reconcile-factory build {spec.target} --static-deltas`)"
    what = (
        f"target {named} of build {spec.target} has"
        if len(names) == 1
        else f"targets {named} of build {spec.target} have"
    )
    return (
        f"wave '{spec.name}': {what} no static delta (custom.delta-stats), so devices download the full "
        f"OSTree update; before the wave is created, run {fix}"
    )
