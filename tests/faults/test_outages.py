"""A real Slurm 24.11 CE, reached over SSH, goes away and comes back while intercede runs on Ray.

The outages are real: sshd inside the stack is killed (every open connection drops) and started again; slurmctld is
restarted, or stopped for a while (client commands then fail with "Unable to contact slurm controller"). Every job
appends its key to a ledger file on the resource, and Slurm's accounting lists every job by its name (the key), so
"ran exactly once" is counted twice, at the resource and at the scheduler. Through every outage the promise is: the CE
is marked unreachable, its jobs wait (none is failed, none gets a permanent error), and everything converges once it
is back.

* sshd killed while the submits are on the wire, again while the jobs run, slurmctld restarted, then stopped for
  ~15 s: the cut-short submits are adopted by tag, the polls fail for a while, every job converges exactly once.
* The CE unreachable from the start (sshd stopped): the declared jobs wait, backing off, and run once it is back.
* Jobs declared while slurmctld is down: "controller unreachable" is temporary, so they are submitted once it is back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from intercede.actors.ce import CEHealth
from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest
from intercede.actors.settings import Settings
from intercede.backends.registry import CEConfig
from intercede.model import JobSpec, OutputFile
from intercede.reconcile import KeyRow, Phase
from stacks.slurm_stack import SlurmStack
from tests.faults.conftest import stop_actors
from tests.faults.outages import (
    kill_sshd_when,
    restart_sshd,
    sshd_killed_then_started,
    start_sshd,
    stop_sshd,
    wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("ray_local")]

CE = "slurm"

# ---- intercede against that stack


def _settings(stack: SlurmStack, tmp_path: Path, namespace: str) -> Settings:
    endpoint = {"host": stack.host, "port": stack.port, "username": stack.username,
                "client_keys": [str(stack.client_key)], "known_hosts": str(stack.known_hosts)}
    ce = CEConfig(name=CE, scheduler="slurm", root=f"/home/{stack.username}/{namespace}", transport="ssh",
                  transport_options={"endpoint": endpoint, "connect_timeout": 5.0}, poll_interval=1.0)
    return Settings(data_dir=tmp_path / "data", tick_interval=0.2, namespace=namespace, ce=[ce])


def _job(key: str, ledger: str, seconds: float) -> JobSpec:
    script = 'sleep "$3"; echo "$1" >> "$2"; echo "$1" > out.txt'
    return JobSpec(executable="/bin/sh", arguments=["-c", script, "sh", key, ledger, str(seconds)],
                   output_files=[OutputFile(name="out.txt")])


class Run:
    """One intercede on Ray against the stack, in its own namespace, with its own ledger on the resource."""

    def __init__(self, stack: SlurmStack, tmp_path: Path) -> None:
        self.stack = stack
        self.namespace = f"outage-{uuid.uuid4().hex[:8]}"
        self.settings = _settings(stack, tmp_path, self.namespace)
        self.ledger = f"/home/{stack.username}/ledger-{self.namespace}"
        self.outputs = tmp_path / "out"
        self.ic: Intercede | None = None
        self.health_seen: list[CEHealth] = []

    def start(self) -> Intercede:
        self.ic = Intercede.start(self.settings)
        return self.ic

    def requests(self, keys: Sequence[str], seconds: float) -> list[JobRequest]:
        return [JobRequest(k, CE, _job(k, self.ledger, seconds), Phase.COLLECTED, self.outputs / k) for k in keys]

    async def health(self) -> CEHealth:
        assert self.ic is not None
        (health,) = await self.ic.ce_health()
        self.health_seen.append(health)
        return health

    async def until(self, what: str, predicate: Callable[[], Awaitable[bool]], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not await predicate():
            if time.monotonic() > deadline:
                assert self.ic is not None
                raise AssertionError(f"not within {timeout:.0f} s: {what}; health: {await self.health()}; "
                                     f"rows: {await self.ic.rows()}")
            await asyncio.sleep(0.2)

    async def rows(self, keys: Sequence[str]) -> dict[str, KeyRow]:
        assert self.ic is not None
        return {r.key: r for r in await self.ic.rows() if r.key in keys}

    async def all_submitted(self, keys: Sequence[str]) -> bool:
        rows = await self.rows(keys)
        return len(rows) == len(keys) and all(r.job_id for r in rows.values())

    async def collected(self, keys: Sequence[str], timeout: float) -> dict[str, KeyRow]:
        assert self.ic is not None
        await self.until("every job collected", lambda: self._collected(keys), timeout)
        return await self.rows(keys)

    async def _collected(self, keys: Sequence[str]) -> bool:
        rows = await self.rows(keys)
        await self.health()
        return all(r.collected or r.permanent_error for r in rows.values())

    def ledger_runs(self) -> Counter[str]:
        """How often each key ran, as the jobs themselves recorded it on the resource."""
        return Counter(self.stack.check(["cat", self.ledger], user=self.stack.username).split())

    def accounted(self, keys: Sequence[str]) -> Counter[str]:
        """How many Slurm jobs carry each key as their name (queue and history, every state)."""
        out = self.stack.check(["sacct", "--noheader", "--parsable2", "--allocations", "--starttime=now-1days",
                                f"--name={','.join(keys)}", "--format=JobName"], user=self.stack.username)
        return Counter(line.strip() for line in out.splitlines() if line.strip())

    def wait_accounted(self, keys: Sequence[str]) -> Counter[str]:
        # A job that ended while slurmctld was down reaches accounting shortly after slurmctld is back.
        wait_until("every job in Slurm's accounting", lambda: set(self.accounted(keys)) >= set(keys), timeout=60)
        return self.accounted(keys)

    def assert_converged_exactly_once(self, keys: Sequence[str], rows: dict[str, KeyRow]) -> None:
        """Every key Done and collected, without a permanent error; ran once (ledger) and submitted once (sacct);
        nothing left at the resource, not even the directory of a submit cut short between staging and sbatch."""
        problems = {k: (r.state, r.last_error, r.permanent_error) for k, r in rows.items()
                    if r.permanent_error or r.state != "Done" or not r.collected}
        assert problems == {}, "every job finished, was collected, and none was failed by the outage"
        assert self.ledger_runs() == Counter({k: 1 for k in keys}), "each job ran exactly once at the resource"
        assert self.wait_accounted(keys) == Counter({k: 1 for k in keys}), "Slurm knows exactly one job per key"
        for k in keys:
            assert (self.outputs / k / "out.txt").read_text() == f"{k}\n"
        assert self.leftover_directories() == {}, "every job and every attempt was purged at the resource"

    def leftover_directories(self) -> dict[str, str]:
        """Job directories still under the CE's root: "ran" (Slurm wrote .slurm.out there) or "staged" (never ran)."""
        script = 'for d in "$1"/*/; do [ -d "$d" ] || continue; [ -e "$d/.slurm.out" ] && s=ran || s=staged; ' \
                 'echo "$d $s"; done'
        out = self.stack.check(["sh", "-c", script, "sh", self.settings.ce[0].root], user=self.stack.username)
        return dict(line.split() for line in out.splitlines())

    def stop(self) -> None:
        stop_actors(self.namespace)


# ---- the tests


async def test_jobs_converge_exactly_once_through_sshd_and_slurmctld_restarts_and_a_controller_outage(
        slurm: SlurmStack, tmp_path: Path) -> None:
    run = Run(slurm, tmp_path)
    keys = [f"{run.namespace}-{i:02d}" for i in range(16)]
    try:
        ic = run.start()
        # sshd dies as the first job reaches Slurm: the connection drops with the other submits on it.
        kill_sshd_when(slurm, f"squeue --noheader --name={','.join(keys)} --format=%i | grep -q .")
        await ic.declare(run.requests(keys, seconds=6.0), progress=False)  # 4 run at once on the stack's 4 CPUs
        await asyncio.to_thread(sshd_killed_then_started, slurm)
        await run.until("every job submitted", lambda: run.all_submitted(keys), timeout=60)

        await asyncio.to_thread(restart_sshd, slurm)  # and again while the jobs run
        await asyncio.sleep(2)
        await asyncio.to_thread(slurm.restart_slurmctld)
        await asyncio.sleep(2)
        await asyncio.to_thread(slurm.stop_slurmctld)
        await run.until("the CE marked unreachable", lambda: _unreachable(run), timeout=30)
        await asyncio.sleep(5)  # ~15-20 s without a controller in all
        await asyncio.to_thread(slurm.start_slurmctld)

        rows = await run.collected(keys, timeout=180)
        health = await run.health()
        adopted = {a.key for a in await ic.recent_actions(1000) if a.kind == "Adopt"}
    finally:
        run.stop()
    # A submit cut short between staging and sbatch left its directory: swept with the key's other attempts (item 6).
    run.assert_converged_exactly_once(keys, rows)
    assert adopted, "the first sshd kill cut submits short, and the reconciler looked them up by tag"
    assert health.poll_errors > 0 and health.reachable, f"the CE was unreachable for a while, then back: {health}"


async def test_jobs_declared_while_the_ce_is_unreachable_wait_for_it_and_then_converge(
        slurm: SlurmStack, tmp_path: Path) -> None:
    run = Run(slurm, tmp_path)
    keys = [f"{run.namespace}-{i:02d}" for i in range(12)]
    await asyncio.to_thread(stop_sshd, slurm)
    try:
        ic = run.start()
        await ic.declare(run.requests(keys, seconds=1.0), progress=False)
        await run.until("the CE marked unreachable", lambda: _unreachable(run), timeout=60)
        await asyncio.sleep(5)  # the reconciler keeps trying (and backing off) for a while
        waiting = await run.rows(keys)
        await asyncio.to_thread(start_sshd, slurm)
        rows = await run.collected(keys, timeout=180)
    finally:
        run.stop()
    assert [(r.job_id, r.permanent_error) for r in waiting.values()] == [(None, None)] * len(keys), \
        "while the CE was unreachable nothing was submitted and nothing failed"
    assert all(r.attempts >= 1 and "ConnectivityError" in r.last_error for r in waiting.values()), \
        "each submit was tried, found the CE unreachable, and is backing off"
    run.assert_converged_exactly_once(keys, rows)
    assert any(not h.reachable for h in run.health_seen)


async def test_jobs_declared_while_slurmctld_is_down_are_submitted_once_it_is_back(
        slurm: SlurmStack, tmp_path: Path) -> None:
    run = Run(slurm, tmp_path)
    keys = [f"{run.namespace}-{i:02d}" for i in range(6)]
    try:
        ic = run.start()
        await asyncio.to_thread(slurm.stop_slurmctld)
        await ic.declare(run.requests(keys, seconds=1.0), progress=False)
        await asyncio.sleep(15)  # sbatch gives up after ~10 s without a controller
        await asyncio.to_thread(slurm.start_slurmctld)
        rows = await run.collected(keys, timeout=180)
    finally:
        run.stop()
    run.assert_converged_exactly_once(keys, rows)


async def _unreachable(run: Run) -> bool:
    return not (await run.health()).reachable
