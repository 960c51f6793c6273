"""The node holding the reconciler dies while submits and fetches are in flight; with the PostgreSQL journal Ray
restarts the reconciler on another node and every key converges exactly once, counted at the resource.

A head and two worker nodes (``ray_nodes``); the CE actor of a real Slurm 24.11 CE (reached over SSH) on the head, the
reconciler on worker-1 (worker-2 as its fallback), its journal on a real PostgreSQL server. Keys ``fetch-*`` have run
and are Done; then the resource's SSH sessions are frozen (SIGSTOP: every command and transfer on the CE actor's
connection stalls, as on a hung link), the ``fetch-*`` keys are collected and the ``submit-*`` keys declared. Once the
journal shows the submits' intents and the tick that fetches is stuck behind them, worker-1 is removed. Ray starts the
reconciler on worker-2, which opens the same journal; the sessions are thawed, and the old instance's calls land at a
CE actor whose caller is gone. Every payload ran exactly once (the jobs' own ledger), Slurm's accounting has one job
per key, every output arrived once, and nothing is left at the resource.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest, ce_actor_name, reconciler_name
from intercede.actors.seam import RaySeam
from intercede.reconcile import Phase
from stacks.slurm_stack import SlurmStack
from tests.faults.conftest import Placement, RayNodes, await_placement, placement, stop_actors
from tests.faults.test_multinode import Resource, converged, every, found, requests, until
from tests.faults.test_outages import CE, _job, _settings

if TYPE_CHECKING:
    from stacks.postgres_stack import PostgresStack

pytestmark = pytest.mark.faults

SESSIONS = "sshd-session"  # one (or two, privilege-separated) per SSH connection; the listener is "sshd"


@pytest.fixture
def frozen_sessions(slurm_24_11: SlurmStack) -> Iterator[SlurmStack]:
    """The Slurm stack; its SSH sessions are thawed after the test, whatever happened."""
    yield slurm_24_11
    slurm_24_11.exec(["pkill", "-CONT", "-x", SESSIONS])


def _in_flight(pg: PostgresStack, dbname: str, submits: list[str], fetches: list[str]) -> bool:
    """The journal shows every submit's intent without a job id, and every fetch due without a manifest."""
    with pg.connect(dbname) as conn:
        rows = {k: (intent, job_id, manifest) for k, intent, job_id, manifest in conn.execute(
            "SELECT key, submit_intent, job_id, manifest FROM progress WHERE key = ANY(%s)", (submits + fetches,))}
    return (all(rows.get(k, (0, None, None))[:2] == (1, None) for k in submits)
            and all(k in rows and rows[k][2] is None for k in fetches))


async def test_the_reconcilers_node_dies_mid_submits_and_fetches_and_it_resumes_elsewhere_on_slurm_24_11(
        nodes: RayNodes, frozen_sessions: SlurmStack, postgres: PostgresStack, tmp_path: Path) -> None:
    slurm = frozen_sessions
    namespace = f"mn-pg-{uuid.uuid4().hex[:8]}"
    dsn = postgres.new_database()
    # Ticks 2 s apart when idle: the collect and the declare below, made right after a tick, land in the same next
    # tick, so its fetches and submits are in flight together.
    settings = _settings(slurm, tmp_path, namespace).model_copy(
        update={"journal": dsn, "journal_passfile": postgres.passfile, "tick_interval": 2.0})
    seam = RaySeam(namespace, options={reconciler_name(): nodes.preferably_on("worker-1", "worker-2"),
                                       ce_actor_name(CE): nodes.on("head")})
    resource = Resource(slurm, namespace)
    outputs = tmp_path / "out"
    fetches = [f"{namespace}-fetch-{i}" for i in range(4)]
    submits = [f"{namespace}-submit-{i}" for i in range(4)]
    try:
        ic = Intercede.start(settings, seam=seam)
        await ic.declare([JobRequest(k, CE, _job(k, resource.ledger, 0.5), Phase.RUNNING) for k in fetches],
                         progress=False)
        await ic.wait(fetches, until="terminal", timeout=120, progress=False)
        before = placement(ic._handle)
        first_node = nodes.name_of(before.node)

        slurm.check(["pkill", "-STOP", "-x", SESSIONS])
        ticks = (await ic.stats())["ticks"]

        async def ticked() -> bool:
            return bool((await ic.stats())["ticks"] > ticks)
        await until("an idle tick", ticked, 30)
        await ic.collect(fetches, outputs, wait=False)  # ask only: the fetches must be in flight, not awaited
        await ic.declare(requests(submits, CE, resource.ledger, outputs, 0.5), progress=False)
        dbname = dsn.rsplit("/", 1)[1]

        async def in_flight() -> bool:
            return await asyncio.to_thread(_in_flight, postgres, dbname, submits, fetches)
        await until("submits and fetches in flight", in_flight, 30)
        started = time.monotonic()
        await asyncio.to_thread(nodes.remove, "worker-1")
        after: Placement = await asyncio.to_thread(
            await_placement, ic._handle, "the reconciler restarted on another node",
            lambda p: p.state == "ALIVE" and p.pid != before.pid, 120)
        await ic.stats()  # the new instance answers: it opened the journal
        slurm.check(["pkill", "-CONT", "-x", SESSIONS])
        keys = fetches + submits
        rows = await ic.wait(keys, until="collected", timeout=240, progress=False)
        recovered = time.monotonic() - started
        await ic.download(fetches, outputs)  # the collected outputs, pulled to this machine
        ce_actor = placement(found(seam, ce_actor_name(CE)))
    finally:
        stop_actors(namespace)
    print(f"\n[multinode postgres] before={first_node} after={nodes.name_of(after.node)} converged_in={recovered:.1f}s")
    assert first_node == "worker-1" and nodes.name_of(after.node) == "worker-2", \
        "the reconciler ran on the removed node, then on another one"
    assert ce_actor.restarts == 0, "the CE actor (on the head) lived through it"
    assert converged(rows, keys) == every(keys), "every key Done and collected, none failed"
    assert resource.runs() == Counter({k: 1 for k in keys}), "each payload ran exactly once at the resource"
    jobs = await resource.jobs_once_accounted(keys)
    assert jobs == Counter({k: 1 for k in keys}), f"one Slurm job per key: {jobs}"
    for k in keys:
        assert (outputs / k / "out.txt").read_text() == f"{k}\n"
    assert resource.leftovers(settings.ce[0].root) == [], "everything purged at the resource"
