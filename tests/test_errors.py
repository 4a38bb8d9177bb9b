"""The error tree (errors.py): who can fix what went wrong decides the class, and a lost answer stays apart."""

from __future__ import annotations

import pytest

from reconciler.apply.lease import LeaseHeld
from reconciler.apply.writes import ConcurrentWriter, is_uncertain
from reconciler.errors import BackendError, OutcomeUnknown, ReconcilerError, UserError, ValidationFailed
from reconciler.manifest._source import SourceError
from reconciler.signing import TufError


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ValidationFailed([]), UserError),
        (SourceError("no such file or directory"), UserError),
        (TufError("key archive is not a gzip'd tar file"), UserError),
        (OutcomeUnknown("rollout: outcome unknown"), BackendError),
        (ConcurrentWriter("another writer"), ReconcilerError),
        (LeaseHeld("held by someone"), ReconcilerError),
    ],
)
def test_every_error_the_command_line_reports_is_a_reconciler_error(error, kind):
    assert isinstance(error, kind) and isinstance(error, ReconcilerError)


def test_the_factory_failing_is_not_the_users_mistake():
    for error in (BackendError("HTTP 500"), OutcomeUnknown("lost"), ConcurrentWriter("x"), LeaseHeld("x")):
        assert not isinstance(error, UserError)


def test_a_write_is_uncertain_when_its_answer_was_lost_or_a_gateway_answered_not_when_the_factory_refused():
    assert is_uncertain(OutcomeUnknown("rollout: outcome unknown: the connection dropped"))
    assert is_uncertain(BackendError("rollout: HTTP 502", 502))
    assert not is_uncertain(BackendError("rollout: HTTP 409", 409))
    assert OutcomeUnknown("lost", 504).outcome_unknown and not BackendError("refused", 409).outcome_unknown
