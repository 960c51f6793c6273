"""Usage records of finished Direct jobs: the job wrapper writes them, the backend reads them back with the status."""

from __future__ import annotations

from pathlib import Path

import pytest

from intercede.backends.batch import BatchBackend
from intercede.backends.schedulers.direct import DirectScheduler
from intercede.backends.transports.local import LocalTransport
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
