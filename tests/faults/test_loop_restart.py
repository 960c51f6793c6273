"""Ray restarts the ReconcilerActor with no caller alive, and its loop resumes by itself.

A short-lived driver process (as `intercede run` without ``--serve``, or a WMS that went away) starts intercede on a
local Ray instance, declares jobs and exits. Nothing calls the reconciler afterwards: it crashes inside (``os._exit``
at planned points of submit and fetch) and is killed once through Ray's API with a restart. Every time Ray re-runs
its constructor, which starts the loop again, and every key converges: run exactly once at the resource (each job
appends its key to a ledger there), outputs collected, purged.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import ray

from intercede.actors import cluster
from intercede.actors.client import Intercede
from intercede.actors.faults import crashes_left
from intercede.actors.reconciler import JobRequest, reconciler_name
from intercede.actors.seam import RaySeam
from intercede.actors.settings import Settings
from intercede.model import JobSpec, OutputFile
from intercede.reconcile import Phase
from tests.faults.conftest import stop_actors

pytestmark = pytest.mark.faults

ROOT = Path(__file__).parents[2]
# The submits of one tick run together: the first crash takes the others with it and the next instance adopts them.
PLAN = {"after:submit": 1, "before:fetch": 1, "after:fetch": 1}


def _job(key: str, ledger: str) -> JobSpec:
    script = 'sleep 1; echo "$1" >> "$2"; echo "$1" > out.txt'
    return JobSpec(executable="/bin/sh", arguments=["-c", script, "sh", key, ledger],
                   output_files=[OutputFile(name="out.txt")])


async def drive(address: str, settings_json: str, plan: str, ledger: str, outputs: str, *keys: str) -> None:
    """The driver process: start intercede, declare the keys, return (the process then exits)."""
    settings = Settings.model_validate_json(settings_json)
    cluster.use_local_token()
    ic = Intercede.start(settings, address=address, fault_plan=Path(plan))
    await ic.declare([JobRequest(k, "local", _job(k, ledger), Phase.COLLECTED, Path(outputs) / k) for k in keys],
                     progress=False)


DRIVER = "import asyncio, sys; from tests.faults.test_loop_restart import drive; asyncio.run(drive(*sys.argv[1:]))"


@pytest.mark.usefixtures("ray_local")
async def test_a_reconciler_restarted_by_ray_with_no_caller_alive_resumes_and_every_key_converges(
        tmp_path: Path) -> None:
    namespace = f"loop-restart-{uuid.uuid4().hex[:8]}"
    settings = Settings.embedded(tmp_path / "data", job_root=tmp_path / "jobs").model_copy(
        update={"namespace": namespace, "tick_interval": 0.2})
    plan, ledger, outputs = tmp_path / "faults.json", tmp_path / "ledger", tmp_path / "out"
    plan.write_text(json.dumps(PLAN))
    keys = [f"restart-{i}" for i in range(6)]
    address = ray.get_runtime_context().gcs_address
    try:
        driver = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", DRIVER, address, settings.model_dump_json(), str(plan),
                             str(ledger), str(outputs), *keys],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert driver.returncode == 0, driver.stderr[-3000:]
        seam = RaySeam(namespace)
        handle = seam.find(reconciler_name())
        assert handle is not None, "the reconciler outlives its driver (a detached actor)"
        ic = Intercede(seam, handle)

        deadline = time.monotonic() + 120
        while crashes_left(plan) > 1:  # the crashes in a submit and before a fetch happened
            assert time.monotonic() < deadline, f"the reconciler did not go on after a crash: {plan.read_text()}"
            await asyncio.sleep(0.2)
        seam.kill(handle, restart=True)  # and once through Ray's API, from outside
        rows = await ic.wait(keys, until="collected", timeout=180, progress=False)
        stats = await ic.stats()
    finally:
        stop_actors(namespace)

    assert crashes_left(plan) == 0, f"every planned crash happened: {plan.read_text()}"
    assert stats["ticks"] > 0, "the loop runs in the instance Ray restarted last"
    assert [(r.key, r.state, r.permanent_error) for r in rows] == [(k, "Done", None) for k in keys]
    assert Counter(ledger.read_text().split()) == Counter({k: 1 for k in keys}), "each job ran exactly once"
    for k in keys:
        assert (outputs / k / "out.txt").read_text() == f"{k}\n"
    assert list((tmp_path / "jobs").iterdir()) == [], "every job was purged at the resource"
