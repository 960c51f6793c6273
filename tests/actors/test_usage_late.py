"""Usage that arrives after the job's end was recorded (issue 12 part 4).

* Slurm 24.11 with slurmdbd stopped while a job runs and ends: squeue shows it COMPLETED, so the service records
  Done, but sacct cannot answer, so there is no usage yet. slurmdbd started again, slurmctld sends it the job's record
  (measured: sacct has it ~7 s later), and the row gets its usage, though the reconciler stopped tracking the job
  when it recorded Done (the CE actor polls it a bounded while longer for its usage).
* The bound, on the Direct CE: a cancelled local job never gets a usage record (its script is killed before writing
  it), so the CE actor asks for it :data:`~intercede.actors.ce.USAGE_REPOLLS` more times, then never again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from intercede.actors.ce import USAGE_REPOLLS, CEHealth
from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest, ce_actor_name, reconciler_name
from intercede.actors.seam import LocalSeam
from intercede.actors.settings import Settings
from intercede.backends.registry import BatchConfig, CEConfig
from intercede.model import JobSpec
from stacks.slurm_stack import SlurmStack
from stacks.slurm_stack import start as start_slurm

pytestmark = [pytest.mark.actors]

T = TypeVar("T")
VERSION = "24.11"
BUSY = JobSpec(executable="/bin/sh", arguments=["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmStack]:
    # Its own stack: this test stops the stack's slurmdbd. MinJobAge 300: the job stays in squeue meanwhile.
    stack = start_slurm(VERSION, min_job_age=300)
    try:
        yield stack
    finally:
        stack.stop()


async def _until(probe: Callable[[], Awaitable[T]], settled: Callable[[T], bool], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        current = await probe()
        if settled(current):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s; last: {current}")
        await asyncio.sleep(0.2)


async def _stop(seam: LocalSeam, ce: str) -> None:
    reconciler = seam.find(reconciler_name())
    if reconciler is not None:
        reconciler.close()
    actor = seam.find(ce_actor_name(ce))
    if actor is not None:
        await actor.aclose()


async def _health(ic: Intercede, ce: str) -> CEHealth:
    return next(h for h in await ic.ce_health() if h.name == ce)


@pytest.mark.slurm
@pytest.mark.timeout(400)
async def test_slurm_usage_that_accounting_records_after_the_end_reaches_the_row(slurm: SlurmStack,
                                                                                 tmp_path: Path) -> None:
    namespace = f"usage-{uuid.uuid4().hex[:8]}"
    endpoint = {"host": slurm.host, "port": slurm.port, "username": slurm.username,
                "client_keys": [str(slurm.client_key)], "known_hosts": str(slurm.known_hosts)}
    ce = CEConfig(name="slurm", scheduler="slurm", root=f"/home/{slurm.username}/{namespace}", transport="ssh",
                  transport_options={"endpoint": endpoint, "connect_timeout": 5.0}, poll_interval=1.0)
    settings = Settings(data_dir=tmp_path / "data", tick_interval=0.2, namespace=namespace, ce=[ce])
    slurm.check("kill $(cat /run/slurmdbd.pid) && while pgrep -x slurmdbd; do sleep 0.2; done")
    seam = LocalSeam()
    try:
        ic = Intercede.start(settings, seam=seam)
        await ic.declare([JobRequest("late", "slurm", BUSY)], progress=False)
        (row,) = await ic.wait(["late"], timeout=180, progress=False)
        assert row.state == "Done" and row.usage is None, "recorded Done while accounting could not answer"
        assert slurm.exec(["sacct", "-n", "-X"], user=slurm.username).exit_code != 0, "slurmdbd is still down"

        slurm.check("slurmdbd")
        (row,) = await _until(lambda: _rows(ic, "late"), lambda rows: rows[0].usage is not None, 120,
                              "the late usage in the row")
        usage = row.usage
        assert usage is not None and usage.node == "slurmhost"
        assert usage.cpu_seconds is not None and usage.cpu_seconds > 0 and usage.ended_at is not None
        health = await _until(lambda: _health(ic, "slurm"), lambda h: h.usage_pending == 0, 30,
                              "the CE actor stops asking once the usage came")
        assert health.tracked == 0
    finally:
        slurm.exec("pgrep -x slurmdbd || slurmdbd")
        await _stop(seam, "slurm")


async def _rows(ic: Intercede, key: str) -> list[Any]:
    return list(await ic.rows_of([key]))


@pytest.mark.direct
async def test_a_finished_job_without_usage_is_asked_a_bounded_number_of_times(tmp_path: Path) -> None:
    ce = BatchConfig(name="local", scheduler="direct", root=str(tmp_path / "jobs"), poll_interval=0.1)
    settings = Settings(data_dir=tmp_path / "data", tick_interval=0.1, namespace=f"usage-{uuid.uuid4().hex[:8]}",
                        ce=[ce])
    seam = LocalSeam()
    try:
        ic = Intercede.start(settings, seam=seam)
        await ic.declare([JobRequest("cut", "local", JobSpec(executable="/bin/sleep", arguments=["300"]))],
                         progress=False)
        await _until(lambda: _rows(ic, "cut"), lambda rows: rows[0].state == "Running", 60, "running")
        await ic.cancel(["cut"])
        (row,) = await ic.wait(["cut"], timeout=60, progress=False)
        assert row.state == "Aborted" and row.usage is None
        pending = await _until(lambda: _health(ic, "local"), lambda h: h.usage_pending == 1 and h.tracked == 0, 30,
                               "the untracked Aborted job is asked for its usage")
        done = await _until(lambda: _health(ic, "local"), lambda h: h.usage_pending == 0, 60,
                            "the CE actor gives up on its usage")
        asked = done.polls - pending.polls
        assert USAGE_REPOLLS - 2 <= asked <= USAGE_REPOLLS + 2, f"asked {asked} more polls, not ~{USAGE_REPOLLS}"
        later = await _until(lambda: _health(ic, "local"), lambda h: h.polls >= done.polls + 5, 30, "polls go on")
        assert later.usage_pending == 0 and later.tracked == 0, "and the job is not asked again"
        (row,) = await _rows(ic, "cut")
        assert row.usage is None
    finally:
        await _stop(seam, "local")
