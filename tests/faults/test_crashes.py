"""Kill the ReconcilerActor at every step of submit and of fetch, again and again, on real Ray with real CEs.

After every crash Ray restarts the actor and the new instance resumes from the journal. In the end every desired job
ran exactly once (counted at the resource: each job appends its key to a ledger there) and every output is collected.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path

import pytest

from intercede.actors.client import Intercede
from intercede.actors.faults import crashes_left
from intercede.actors.reconciler import JobRequest
from intercede.actors.settings import Settings
from intercede.model import JobSpec, OutputFile
from intercede.reconcile import Phase
from tests.faults.conftest import stop_actors

pytestmark = pytest.mark.faults

# Submits and fetches are one call per key; purges are bulk (one call per tick), so fewer of them can crash. A crash
# after a submit takes the tick's other submits with it, and the next instance adopts them all: few submits are left
# to crash after (a fetch that is due runs in the same tick as the submits and often crashes first).
PLAN = {"before:submit": 5, "after:submit": 2, "after:find_attempts": 1, "before:fetch": 7, "after:fetch": 7,
        "before:purge": 1, "after:purge": 1}


def _job(key: str, ledger: str) -> JobSpec:
    script = 'echo "$1" >> "$2"; echo "$1" > out.txt'
    return JobSpec(executable="/bin/sh", arguments=["-c", script, "sh", key, ledger],
                   output_files=[OutputFile(name="out.txt")])


@pytest.mark.usefixtures("ray_local")
async def test_no_job_is_duplicated_or_lost_across_twenty_crashes(tmp_path: Path) -> None:
    namespace = f"faults-{uuid.uuid4().hex[:8]}"
    settings = Settings.embedded(tmp_path / "data", job_root=tmp_path / "jobs").model_copy(
        update={"namespace": namespace, "tick_interval": 0.2})
    plan = tmp_path / "faults.json"
    plan.write_text(json.dumps(PLAN))
    ledger = tmp_path / "ledger"
    keys = [f"crash-{i:02d}" for i in range(16)]
    outputs = tmp_path / "out"
    try:
        ic = Intercede.start(settings, fault_plan=plan)
        await ic.declare([JobRequest(k, "local", _job(k, str(ledger)), Phase.COLLECTED, outputs / k) for k in keys],
                         progress=False)
        rows = await ic.wait(keys, until="collected", timeout=600, progress=False)
    finally:
        stop_actors(namespace)
    crashed = sum(PLAN.values()) - crashes_left(plan)
    assert crashed >= 20, f"only {crashed} crashes happened; left: {plan.read_text()}"
    assert [r.permanent_error for r in rows] == [None] * len(keys)
    runs = Counter(ledger.read_text().split())
    assert runs == Counter({k: 1 for k in keys}), "each job ran exactly once at the resource"
    for k in keys:
        assert (outputs / k / "out.txt").read_text() == f"{k}\n"
    assert list((tmp_path / "jobs").iterdir()) == [], "every job was purged at the resource"
