"""Usage records of finished jobs on a real schedd (each release), through the bindings (HTCondorBackend)."""

from __future__ import annotations

import asyncio
import time

import pytest

from intercede.model import JobSpec, JobState
from tests.contract.cases_htcondor import CondorSetup
from tests.contract.waiting import until_terminal
from tests.htcondor.conftest import schedd_backend

pytestmark = [pytest.mark.htcondor, pytest.mark.policy]

BUSY = JobSpec(executable="/bin/sh", arguments=["-c", "x=$(head -c 20000000 /dev/zero | tr '\\0' a); sleep 3"])


async def test_a_finished_job_reports_wall_cpu_memory_node_and_times(pool: CondorSetup) -> None:
    async with schedd_backend(pool) as backend:
        result = await backend.submit(BUSY)
        (status,) = await until_terminal(backend, result.job_ids)
        assert status.state is JobState.DONE
        deadline = time.monotonic() + 30
        while status.usage is None:  # the queue ad shows JobStatus 4 a moment before its completion figures
            assert time.monotonic() < deadline, f"no usage: {status}"
            await asyncio.sleep(0.5)
            (status,) = await backend.status(result.job_ids)
        usage = status.usage
        assert usage.wall_seconds is not None and usage.wall_seconds >= 3
        assert usage.cpu_seconds is not None and usage.cpu_seconds >= 0
        assert usage.node is not None and "@" in usage.node  # the execution slot
        assert usage.started_at is not None and usage.ended_at is not None and usage.started_at <= usage.ended_at
        await backend.purge(result.job_ids)
