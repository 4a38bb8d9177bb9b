"""The ``require.updated`` gate after a partial rollout into a big group (issue 11, item 2).

The wave status counts every device of a rollout group below the wave version as scheduled
(reference §2.3), so after ``limit: 10`` in a group of about a hundred devices "updated / (updated +
scheduled)" stays near 10% for good. The gate divides by the devices the rollouts reached (the
history's ``num-devices``) instead, so it passes once those devices have updated.
"""

from __future__ import annotations

import json

from tests.helpers.e2e import advance, api, commit, reconcile, wave

WAVE = """\
apiVersion: reconciler/v1
kind: Wave
name: rel-46
target: 46
tag: production
phases:
  - name: us-east-10
    group: us-east
    limit: 10
  - name: us-east-30
    group: us-east
    limit: 30
    require:
      updated: 80%
"""


def test_a_limit_phase_in_a_big_group_lets_the_updated_gate_pass(release_repo, factory_dir):
    local = ["--local", str(factory_dir)]
    commit(release_repo, {"rel-46.yaml": WAVE}, "Release 46 to 10 devices of us-east, then 30 more")
    code, out, err = reconcile(str(release_repo), *local)
    assert code == 0, err
    assert "phase 'us-east-10' (group us-east, limit 10): rolled out to 10 devices" in err
    assert "needs the wave status after the previous rollout" in out

    advance(factory_dir, "25h")  # the ten check in and update
    with api(factory_dir) as client:
        status = client.get("/ota/factories/demo/waves/rel-46/status/").json()
    (us_east,) = status["rollout-groups"]
    on_46 = us_east["devices-on-wave-version"]
    assert 8 <= on_46 <= 10 and us_east["devices-total"] > 90
    assert status["scheduled-devices"] == us_east["devices-total"] - on_46  # the whole group is scheduled
    assert 100 * status["updated-devices"] / (status["updated-devices"] + status["scheduled-devices"]) < 80

    code, out, _ = reconcile("--dry-run", "--format", "json", str(release_repo), *local)
    plan = json.loads(out)
    assert code == 0
    (gated,) = plan["operations"]
    assert (gated["phase"], gated["status"]) == ("us-east-30", "ready"), gated
    assert plan["waves"][0]["progress"] == {"updated": on_46, "rolled_out": 10, "total": 400}

    code, out, err = reconcile(str(release_repo), *local)
    assert code == 0 and "phase 'us-east-30' (group us-east, limit 30): rolled out to 30 devices" in err
    assert [h["num-devices"] for h in wave(factory_dir, "rel-46")["rollout-history"]] == [10, 30]


def test_the_gate_waits_while_the_reached_devices_have_not_updated(release_repo, factory_dir):
    local = ["--local", str(factory_dir)]
    commit(release_repo, {"rel-46.yaml": WAVE}, "Release 46")
    assert reconcile(str(release_repo), *local)[0] == 0
    code, out, _ = reconcile("--dry-run", str(release_repo), *local)
    assert code == 0 and "updated 80%: 0.0% (0 of 10 devices rolled out are updated" in out
