"""Usage records of finished Direct jobs: the job wrapper writes them, the backend reads them back with the status."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest, reconciler_name
from intercede.actors.seam import LocalSeam
from intercede.actors.settings import Settings
from intercede.backends.batch import BatchBackend
from intercede.backends.schedulers.direct import DirectScheduler
from intercede.backends.transports.local import LocalTransport
from intercede.diagnostics.frames import jobs_frame
from intercede.model import JobSpec, JobState
from tests.contract.waiting import until_terminal

pytestmark = [pytest.mark.direct, pytest.mark.policy]

BUSY = JobSpec(executable="/bin/sh", arguments=["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 1"])


async def test_a_finished_direct_job_reports_wall_cpu_node_and_times(tmp_path: Path) -> None:
    root = str(tmp_path / "jobs")
    async with BatchBackend(LocalTransport(), DirectScheduler(root), root, name="direct") as backend:
        result = await backend.submit(BUSY)
        (running,) = await backend.status(result.job_ids)
        assert running.usage is None  # nothing until it has ended
        (status,) = await until_terminal(backend, result.job_ids, timeout=60)
        assert status.state is JobState.DONE
        usage = status.usage
        assert usage is not None
        assert usage.wall_seconds is not None and usage.wall_seconds >= 1
        assert usage.cpu_seconds is not None and usage.cpu_seconds > 0
        assert usage.node
        assert usage.started_at is not None and usage.ended_at is not None and usage.started_at <= usage.ended_at
        assert usage.peak_memory_mb is None  # a shell cannot measure it


async def test_the_rows_and_the_notebook_table_carry_the_usage(tmp_path: Path) -> None:
    seam = LocalSeam()
    Intercede.start(Settings.embedded(tmp_path / "data", job_root=tmp_path / "jobs"), seam=seam)
    actor = seam.find(reconciler_name())
    try:
        ic = Intercede(seam, actor)
        await ic.declare([JobRequest("u1", "local", BUSY)], progress=False)
        (row,) = await ic.wait(["u1"], timeout=60, progress=False)
        assert row.state == "Done" and row.usage is not None and row.usage.cpu_seconds > 0
        frame = jobs_frame([row])
        assert frame.loc["u1", "node"] == row.usage.node
        assert frame.loc["u1", "cpu_seconds"] == pytest.approx(row.usage.cpu_seconds)
        assert frame.loc["u1", "ended_at"] == pd.Timestamp(row.usage.ended_at)
    finally:
        actor.close()
