"""Usage records of finished Grid Engine jobs (``qacct -j``), through the backend's status, on the real cell: a single
job and each copy of a job array. Uses the contract suite's session-scoped ``sge_stack``."""

from __future__ import annotations

import asyncio
import time

import pytest

from intercede.backends.batch import BatchBackend
from intercede.backends.schedulers.gridengine import GridEngineScheduler
from intercede.backends.transports.ssh import SSHTransport
from intercede.model import Copy, JobSpec, JobState, JobStatus
from stacks.sge_stack import SGE_VERSIONS, GridEngineStack
from tests.contract.waiting import until_terminal

pytestmark = [pytest.mark.sge, pytest.mark.policy]

ROOT = "/home/tester/usage"
BUSY = JobSpec(executable="/bin/sh", arguments=["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 1"])


async def _with_usage(backend: BatchBackend, job_ids: list[str]) -> list[JobStatus]:
    """The terminal statuses once every one carries its usage (accounting is flushed every ~15 s)."""
    statuses = await until_terminal(backend, job_ids, timeout=120)
    deadline = time.monotonic() + 60
    while any(s.usage is None for s in statuses):
        assert time.monotonic() < deadline, f"no usage from qacct: {statuses}"
        await asyncio.sleep(0.5)
        statuses = await backend.status(job_ids)
    return statuses


@pytest.mark.parametrize("version", list(SGE_VERSIONS), ids=[f"sge-{v}" for v in SGE_VERSIONS])
async def test_a_finished_job_and_every_array_copy_report_their_usage_from_accounting(
        version: str, sge_stack: GridEngineStack) -> None:
    assert sge_stack.version == version
    async with BatchBackend(SSHTransport(sge_stack.endpoint()), GridEngineScheduler(ROOT), ROOT,
                            name=f"sge-{version}") as backend:
        single = await backend.submit(BUSY)
        array = await backend.submit(BUSY.model_copy(update={"copies": [Copy(), Copy()], "tag": "usage-arr"}))
        (running,) = await backend.status(single.job_ids)
        assert running.usage is None or running.state.is_terminal  # nothing until it has ended
        statuses = await _with_usage(backend, [*single.job_ids, *array.job_ids])
    assert [s.state for s in statuses] == [JobState.DONE] * 3
    assert [s.job_id.partition("@")[0].partition(".")[2] for s in statuses[1:]] == ["1", "2"]  # array tasks
    for status in statuses:
        usage = status.usage
        assert usage is not None
        assert usage.node == "sgehost"
        assert usage.wall_seconds is not None and usage.wall_seconds >= 1
        assert usage.cpu_seconds is not None and usage.cpu_seconds > 0
        assert usage.peak_memory_mb is not None and usage.peak_memory_mb > 0
        assert usage.started_at is not None and usage.ended_at is not None and usage.started_at <= usage.ended_at
