"""The example workflow's concurrency settings never lose a merge's apply (issue 21, item 9).

GitHub's documented rule for a concurrency group ("Control the concurrency of workflows and jobs",
docs.github.com/actions/how-tos/write-workflows/choose-when-workflows-run/control-workflow-concurrency):
at most one run in progress and one pending per group; when a run is queued while another of its
group is in progress, it waits as the pending run, and a run already pending in that group is
cancelled and replaced; with ``cancel-in-progress: true`` the run in progress is cancelled instead.

``Groups`` below is that rule and nothing else; the tests drive it with the jobs, groups and triggers
read from ``examples/workflows/release.yml`` and check that every apply a push queued either runs, or
is replaced by a newer apply (which checks out main later, so it applies everything the replaced one
would have). The shared group the workflow had before is shown to lose one.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

WORKFLOW = Path(__file__).resolve().parents[2] / "examples/workflows/release.yml"
TRIGGER_OF_JOB = {"apply": "push", "advance": "schedule"}


def concurrency_of(workflow: dict, job: str) -> tuple[str, bool]:
    setting = workflow["jobs"][job]["concurrency"]
    group = setting["group"].replace("${{ github.repository }}", "acme/release")
    return group, bool(setting.get("cancel-in-progress", False))


@dataclass
class Run:
    job: str
    queued_at: int
    duration: int
    started_at: int | None = None
    cancelled: bool = False


@dataclass
class Groups:
    """GitHub's concurrency rule, one running and one pending run per group."""

    running: dict[str, Run] = field(default_factory=dict)
    pending: dict[str, Run] = field(default_factory=dict)

    def queue(self, run: Run, group: str, cancel_in_progress: bool, now: int) -> None:
        self.finish_until(now)
        current = self.running.get(group)
        if current and cancel_in_progress:
            current.cancelled = True
            del self.running[group]
            current = None
        if current is None:
            run.started_at = now
            self.running[group] = run
            return
        if group in self.pending:
            self.pending[group].cancelled = True
        self.pending[group] = run

    def finish_until(self, now: int) -> None:
        """Runs that end by ``now`` leave their group, and the pending run of the group starts."""
        progressed = True
        while progressed:
            progressed = False
            for group, run in list(self.running.items()):
                assert run.started_at is not None
                end = run.started_at + run.duration
                if end <= now:
                    del self.running[group]
                    if group in self.pending:
                        nxt = self.pending.pop(group)
                        nxt.started_at = end
                        self.running[group] = nxt
                    progressed = True


def simulate(workflow: dict, events: list[tuple[int, str, int]]) -> list[Run]:
    """``events``: (minute, job, duration in minutes), in time order; every run, as it ended."""
    groups, runs = Groups(), []
    for at, job, duration in sorted(events, key=lambda e: e[0]):
        run = Run(job, at, duration)
        group, cancel = concurrency_of(workflow, job)
        groups.queue(run, group, cancel, at)
        runs.append(run)
    groups.finish_until(10**9)
    return runs


def lost_applies(runs: list[Run]) -> list[Run]:
    """Applies cancelled with no newer apply queued after them that ran."""
    applies = [r for r in runs if r.job == "apply"]
    return [
        r
        for r in applies
        if r.cancelled and not any(o.queued_at >= r.queued_at and o is not r and not o.cancelled for o in applies)
    ]


@functools.cache
def _parsed() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def load() -> dict:
    return copy.deepcopy(_parsed())


def test_the_triggers_are_what_the_simulation_assumes():
    workflow = load()
    assert "push" in workflow["jobs"]["apply"]["if"] and "schedule" in workflow["jobs"]["advance"]["if"]


def test_a_pending_apply_survives_the_next_scheduled_advance():
    """The case that lost an apply: an advance runs, a merge's apply waits, the next hour's advance queues."""
    events = [(0, "advance", 90), (10, "apply", 5), (60, "advance", 5)]
    runs = simulate(load(), events)
    apply = next(r for r in runs if r.job == "apply")
    assert not apply.cancelled and apply.started_at == 10


def test_the_shared_group_of_before_lost_that_apply():
    """The simulation can fail: with advance in the apply group (the workflow before), the apply is lost."""
    workflow = load()
    workflow["jobs"]["advance"]["concurrency"] = dict(workflow["jobs"]["apply"]["concurrency"])
    runs = simulate(workflow, [(0, "advance", 90), (10, "apply", 5), (60, "advance", 5)])
    assert [r.job for r in lost_applies(runs)] == ["apply"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 600), st.sampled_from(["apply", "advance"]), st.integers(1, 120)),
        min_size=1,
        max_size=25,
    )
)
def test_no_push_triggered_apply_is_ever_lost(events):
    assert lost_applies(simulate(_parsed(), events)) == []
