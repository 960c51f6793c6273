"""Polling helpers for the contract suite: wait on the real resource, bounded, never on wall-clock assertions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from intercede.backends.capabilities import JobBackend
from intercede.model import JobState, JobStatus


async def until_terminal(backend: JobBackend, job_ids: Sequence[str], timeout: float = 180.0) -> list[JobStatus]:
    """Poll until every job is terminal; fail the test (with the last statuses) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = await backend.status(job_ids)
        if all(s.state.is_terminal for s in statuses):
            return statuses
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs not terminal after {timeout} s: {statuses}")
        await asyncio.sleep(0.5)


async def until_state(backend: JobBackend, job_id: str, states: set[JobState], timeout: float = 120.0) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        (status,) = await backend.status([job_id])
        if status.state in states:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"{job_id} never reached {states}: {status}")
        await asyncio.sleep(0.3)
