"""Per-CE limits against a real Slurm 24.11 CE over SSH, with the reconciler and CE actors in process (LocalSeam).

* 500 trivial jobs declared at once with ``max_queued = 20``: a sampler counts the pending jobs *at the resource*
  (``squeue``) the whole time, and never sees more than 20; every job completes; the keys held back show why.
* Downtime switched on at run time (the config apply path, no restart): nothing new is submitted while the jobs
  already there are still monitored to their end; switched off, the held-back jobs are submitted and complete.
* A finished job's usage record, from sacct, through the backend's status.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest, ce_actor_name, reconciler_name
from intercede.actors.seam import LocalSeam
from intercede.actors.settings import Settings
from intercede.backends.batch import BatchBackend
from intercede.backends.registry import CEConfig
from intercede.backends.schedulers.slurm import SlurmScheduler
from intercede.backends.transports.ssh import SSHEndpoint, SSHTransport
from intercede.model import JobSpec, JobState
from stacks.slurm_stack import SlurmStack
from stacks.slurm_stack import start as start_slurm
from tests.contract.waiting import until_terminal

pytestmark = [pytest.mark.policy, pytest.mark.slurm]

VERSION = "24.11"
CE = "slurm"
TRUE = JobSpec(executable="/bin/true")
# What squeue lists for a job that holds a queue slot: every state before running.
QUEUED_STATES = "PENDING,CONFIGURING,REQUEUED,REQUEUE_HOLD,REQUEUE_FED,SUSPENDED,SPECIAL_EXIT,RESV_DEL_HOLD"


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmStack]:
    # Enough slots for trivial jobs to drain fast; finished jobs leave squeue after 10 s (sacct keeps them).
    stack = start_slurm(VERSION, cpus=16, min_job_age=10)
    try:
        yield stack
    finally:
        stack.stop()


def _settings(stack: SlurmStack, tmp_path: Path, **limits: object) -> Settings:
    namespace = f"policy-{uuid.uuid4().hex[:8]}"
    endpoint = {"host": stack.host, "port": stack.port, "username": stack.username,
                "client_keys": [str(stack.client_key)], "known_hosts": str(stack.known_hosts)}
    ce = CEConfig(name=CE, scheduler="slurm", root=f"/home/{stack.username}/{namespace}", transport="ssh",
                  transport_options={"endpoint": endpoint, "connect_timeout": 5.0}, poll_interval=0.5,
                  submits_per_tick=50, **limits)  # type: ignore[arg-type]
    return Settings(data_dir=tmp_path / "data", tick_interval=0.2, namespace=namespace, ce=[ce])


def _with_limits(settings: Settings, **limits: object) -> Settings:
    return settings.model_copy(update={"ce": [settings.ce[0].model_copy(update=limits)]})


async def _stop(seam: LocalSeam) -> None:
    reconciler = seam.find(reconciler_name())
    if reconciler is not None:
        reconciler.close()
    ce = seam.find(ce_actor_name(CE))
    if ce is not None:
        await ce.aclose()


class QueueSampler:
    """Counts, in a thread, the jobs of ours Slurm lists as not running yet, as often as ``squeue`` answers."""

    def __init__(self, stack: SlurmStack) -> None:
        self.stack = stack
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            out = self.stack.exec(["squeue", "--noheader", "--me", f"--states={QUEUED_STATES}", "--format=%i"],
                                  user=self.stack.username)
            if out.exit_code == 0:
                self.samples.append(len(out.stdout.split()))
            self._stop.wait(0.25)  # each sample is a container exec: keep the engine's load down

    def __enter__(self) -> QueueSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


async def test_downtime_stops_new_submits_while_monitoring_goes_on_and_lifting_it_resumes(
        slurm: SlurmStack, tmp_path: Path) -> None:
    seam = LocalSeam()
    settings = _settings(slurm, tmp_path)
    first = [f"before-{i}" for i in range(3)]
    held = [f"during-{i}" for i in range(5)]
    sleep = JobSpec(executable="/bin/sleep", arguments=["4"])
    try:
        ic = Intercede.start(settings, seam=seam)
        await ic.declare([JobRequest(k, CE, sleep) for k in first], progress=False)
        await _until(lambda: ic.rows_of(first), lambda rows: all(r.state == "Running" for r in rows), 60)
        down = _with_limits(settings, downtime=True)
        assert Intercede.start(down, seam=seam) is not None  # applied to the running reconciler, no restart
        await ic.declare([JobRequest(k, CE, TRUE) for k in held], progress=False)
        # Monitoring goes on: the running jobs are seen to their end while the CE is in downtime.
        rows = await ic.wait(first, timeout=60, progress=False)
        assert {r.state for r in rows} == {"Done"}
        rows = await ic.rows_of(held)
        assert all(r.job_id is None for r in rows), "nothing new was submitted during the downtime"
        assert {r.waiting_reason for r in rows} == {"CE in downtime"}
        names = slurm.check(["sacct", "--noheader", "--parsable2", "--allocations", "--starttime=now-1days",
                             f"--name={','.join(held)}", "--format=JobName"], user=slurm.username)
        assert names.split() == [], "Slurm never saw the held-back jobs"
        Intercede.start(settings, seam=seam)  # downtime lifted
        rows = await ic.wait(held, timeout=120, progress=False)
        assert {r.state for r in rows} == {"Done"} and all(r.waiting_reason is None for r in rows)
    finally:
        await _stop(seam)


async def test_a_job_held_longer_than_max_held_is_cancelled_and_says_why(slurm: SlurmStack, tmp_path: Path) -> None:
    seam = LocalSeam()
    settings = _settings(slurm, tmp_path, max_held=3.0, max_waiting=600.0)
    held = JobSpec(executable="/bin/true", resources={"native": ["--hold"]})  # PENDING, reason JobHeldUser
    try:
        ic = Intercede.start(settings, seam=seam)
        await ic.declare([JobRequest("held-1", CE, held), JobRequest("free-1", CE, TRUE)], progress=False)
        rows = {r.key: r for r in await ic.wait(["held-1", "free-1"], timeout=120, progress=False)}
        assert (rows["held-1"].state, rows["held-1"].policy_reason) == \
            ("Aborted", "held longer than max_held (3 s)")
        assert (rows["free-1"].state, rows["free-1"].policy_reason) == ("Done", None)
        job = rows["held-1"].job_id.split("@")[0]
        state = slurm.check(["sacct", "--noheader", "--parsable2", "--allocations", f"--jobs={job}",
                             "--format=State"], user=slurm.username)
        assert state.split()[0] == "CANCELLED", "cancelled at the resource"
    finally:
        await _stop(seam)


async def test_when_jobs_queue_up_at_the_resource_the_pending_count_there_stops_at_max_queued(
        slurm: SlurmStack, tmp_path: Path) -> None:
    """Jobs of 8 cores on the 16-core node: two run at a time, so Slurm would queue every other one. With
    ``max_queued = 10`` it is the limit, not Slurm, that bounds the queue: it fills to 10 and never beyond."""
    seam = LocalSeam()
    settings = _settings(slurm, tmp_path, max_queued=10)
    wide = JobSpec(executable="/bin/sleep", arguments=["2"], resources={"cores": 8})
    keys = [f"w{i:02d}" for i in range(30)]
    try:
        ic = Intercede.start(settings, seam=seam)
        with QueueSampler(slurm) as sampler:
            await ic.declare([JobRequest(k, CE, wide) for k in keys], progress=False)
            rows = await ic.wait(keys, timeout=600, progress=False)
        assert {r.state for r in rows} == {"Done"}
        assert max(sampler.samples) <= 10, f"at most 10 pending at the resource; samples: {sampler.samples}"
        assert max(sampler.samples) >= 7, f"the queue did fill up to the limit; samples: {sampler.samples}"
    finally:
        await _stop(seam)


async def test_a_finished_slurm_job_reports_its_usage_from_accounting(slurm: SlurmStack) -> None:
    endpoint = SSHEndpoint(host=slurm.host, port=slurm.port, username=slurm.username,
                           client_keys=[slurm.client_key], known_hosts=slurm.known_hosts)
    root = f"/home/{slurm.username}/usage"
    busy = JobSpec(executable="/bin/sh", arguments=["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
    async with BatchBackend(SSHTransport(endpoint), SlurmScheduler(), root, name="slurm") as backend:
        result = await backend.submit(busy)
        (status,) = await until_terminal(backend, result.job_ids, timeout=120)
        assert status.state is JobState.DONE
        deadline = time.monotonic() + 30
        while status.usage is None:  # the backend asks accounting again until it has the job's End
            assert time.monotonic() < deadline, "no usage from sacct"
            await asyncio.sleep(0.5)
            (status,) = await backend.status(result.job_ids)
        usage = status.usage
        assert usage.node == "slurmhost"
        assert usage.wall_seconds is not None and usage.cpu_seconds is not None and usage.cpu_seconds > 0
        assert usage.started_at is not None and usage.ended_at is not None and usage.started_at <= usage.ended_at


async def _until(rows, settled, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        current = await rows()
        if settled(current):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {current}")
        await asyncio.sleep(0.2)


@pytest.mark.timeout(1500)  # SSH submits dominate: ~0.7 jobs/s measured on a heavily loaded 2-core machine
async def test_500_jobs_with_max_queued_20_never_put_more_than_20_in_the_queue_and_all_complete(
        slurm: SlurmStack, tmp_path: Path) -> None:
    seam = LocalSeam()
    settings = _settings(slurm, tmp_path, max_queued=20)
    keys = [f"q{i:03d}" for i in range(500)]
    try:
        ic = Intercede.start(settings, seam=seam)
        with QueueSampler(slurm) as sampler:
            start = time.monotonic()
            await ic.declare([JobRequest(k, CE, TRUE) for k in keys], progress=False)
            reasons: set[str] = set()
            while True:
                rows = await ic.rows_of(keys[-50:])
                reasons |= {r.waiting_reason for r in rows if r.waiting_reason}
                if reasons or all(r.job_id for r in rows):
                    break
                await asyncio.sleep(0.2)
            rows = await ic.wait(keys, timeout=1300, progress=False)
            took = time.monotonic() - start
        assert {r.state for r in rows} == {"Done"}, "every job completed"
        assert all(r.permanent_error is None for r in rows), "none was failed by being held back"
        assert max(sampler.samples) <= 20, f"at most 20 pending at the resource; samples: {sampler.samples}"
        assert len(sampler.samples) >= 10 and max(sampler.samples) > 0, "the sampler saw the queue working"
        assert reasons == {"CE full: 20/20 queued"}, "held-back keys say why they wait"
        print(f"500 jobs, max_queued 20: {took:.1f} s, {len(sampler.samples)} squeue samples, "
              f"max {max(sampler.samples)} pending at the resource")
    finally:
        await _stop(seam)
