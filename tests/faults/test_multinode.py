"""Faults on a real multi-node Ray cluster (a head and two worker nodes on this machine, ``ray_nodes``), against a
real Slurm 24.11 reached over SSH. "Ran exactly once" is counted at the resource: each job appends its key to a
ledger file there, and Slurm's accounting lists every job by its name (the key).

* With the SQLite journal the reconciler runs on the node that holds the file, even when other nodes have more room;
  if that node is lost it is not started anywhere else, and calls to it fail as intercede's ConnectivityError.
* A CE actor on one node hangs (SIGSTOP): only its CE's jobs wait; the other CE's, whose actor is on another node,
  converge meanwhile; after SIGCONT the hung CE's converge too.
* The driver that started intercede exits, then the reconciler's process is killed: Ray restarts it (on its journal's
  node), its loop resumes by itself, and every declared key converges.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import ray

from intercede.actors import cluster
from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest, ce_actor_name, reconciler_name
from intercede.actors.seam import RaySeam
from intercede.actors.settings import Settings
from intercede.errors import ConnectivityError
from intercede.reconcile import Phase
from stacks.slurm_stack import SlurmStack
from tests.faults.conftest import Placement, RayNodes, await_placement, placement, stop_actors
from tests.faults.test_outages import _job, _settings

pytestmark = pytest.mark.faults

ROOT = Path(__file__).parents[2]


async def until(what: str, predicate: Callable[[], Awaitable[bool]], timeout: float,
                ic: Intercede | None = None) -> None:
    """Await ``predicate`` for at most ``timeout`` seconds; the failure shows ``ic``'s rows."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            rows = await ic.rows() if ic is not None else "-"
            raise AssertionError(f"not within {timeout:.0f} s: {what}; rows: {rows}")
        await asyncio.sleep(0.2)


def found(seam: RaySeam, name: str, timeout: float = 60.0) -> Any:
    """The handle of actor ``name`` once it exists (the reconciler creates its CE actors in its constructor)."""
    deadline = time.monotonic() + timeout
    while (handle := seam.find(name)) is None:
        assert time.monotonic() < deadline, f"actor {name} not created within {timeout:.0f} s"
        time.sleep(0.1)
    return handle


class Resource:
    """What the Slurm stack itself says happened to a set of keys."""

    def __init__(self, stack: SlurmStack, namespace: str) -> None:
        self.stack = stack
        self.ledger = f"/home/{stack.username}/ledger-{namespace}"

    def runs(self) -> Counter[str]:
        """How often each key's payload ran, as the jobs recorded it."""
        out = self.stack.exec(["cat", self.ledger], user=self.stack.username).stdout
        return Counter(out.split())

    def jobs(self, keys: Sequence[str]) -> Counter[str]:
        """How many Slurm jobs carry each key as their name (queue and history, every state)."""
        out = self.stack.check(["sacct", "--noheader", "--parsable2", "--allocations", "--starttime=now-1days",
                                f"--name={','.join(keys)}", "--format=JobName"], user=self.stack.username)
        return Counter(line.strip() for line in out.splitlines() if line.strip())

    async def jobs_once_accounted(self, keys: Sequence[str], timeout: float = 60.0) -> Counter[str]:
        # A finished job reaches slurmdbd's accounting a moment after it left the queue.
        async def accounted() -> bool:
            return set(await asyncio.to_thread(self.jobs, keys)) >= set(keys)
        await until("every key's job in Slurm's accounting", accounted, timeout)
        return await asyncio.to_thread(self.jobs, keys)

    def leftovers(self, root: str) -> list[str]:
        out = self.stack.check(["sh", "-c", 'ls -A "$1" 2>/dev/null || true', "sh", root], user=self.stack.username)
        return out.split()


def requests(keys: Sequence[str], ce: str, ledger: str, outputs: Path, seconds: float) -> list[JobRequest]:
    return [JobRequest(k, ce, _job(k, ledger, seconds), Phase.COLLECTED, outputs / k) for k in keys]


def converged(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[tuple[str, str, bool, str | None]]:
    return [(r.key, r.state, bool(r.collected), r.permanent_error) for r in rows]


def every(keys: Sequence[str]) -> list[tuple[str, str, bool, None]]:
    return [(k, "Done", True, None) for k in keys]


# ---- SQLite: the reconciler lives where its journal is


@pytest.mark.actors
@pytest.mark.parametrize("where", ["caller", "settings"])
def test_the_sqlite_reconciler_runs_on_its_journal_node_even_when_other_nodes_have_more_room(
        nodes: RayNodes, tmp_path: Path, where: str) -> None:
    # The head has 1 CPU, taken by a blocker: Ray's default placement prefers the emptier workers (2 free CPUs each).
    blocker = ray.remote(num_cpus=1)(_Blocker).options(**nodes.on("head")).remote()
    ray.get(blocker.ready.remote(), timeout=120)
    journal_node = "head" if where == "caller" else "worker-2"  # the driver is connected to the head
    seen: list[str] = []
    try:
        for round_ in range(5):
            namespace = f"affinity-{uuid.uuid4().hex[:8]}"
            settings = Settings(data_dir=tmp_path / f"data-{round_}", namespace=namespace,
                                journal_node=None if where == "caller" else nodes.node_id(journal_node))
            try:
                ic = Intercede.start(settings)
                ray.get(ic._handle.stats.remote(), timeout=120)  # constructed and answering
                seen.append(nodes.name_of(placement(ic._handle).node))
            finally:
                stop_actors(namespace)
    finally:
        ray.kill(blocker)
    assert seen == [journal_node] * 5, "every reconciler was placed on the node holding its journal"


class _Blocker:
    def ready(self) -> bool:
        return True


@pytest.mark.actors
async def test_a_sqlite_reconciler_whose_node_is_lost_is_not_restarted_elsewhere(
        nodes: RayNodes, tmp_path: Path) -> None:
    namespace = f"affinity-lost-{uuid.uuid4().hex[:8]}"
    settings = Settings(data_dir=tmp_path / "data", namespace=namespace, journal_node=nodes.node_id("worker-1"))
    try:
        ic = Intercede.start(settings)
        await ic.stats()
        first = placement(ic._handle)
        assert nodes.name_of(first.node) == "worker-1"
        await asyncio.to_thread(nodes.remove, "worker-1")
        dead = await asyncio.to_thread(await_placement, ic._handle, "the reconciler dead",
                                       lambda p: p.state == "DEAD", 60)
        with pytest.raises(ConnectivityError, match="'stats' lost"):
            await ic.stats()  # intercede's error, not Ray's ActorUnschedulableError
    finally:
        stop_actors(namespace)
    # Ray counts the restart it tried and found unschedulable (the node a dead actor's table entry names is then not
    # meaningful): no other process ever ran it.
    assert dead.pid == first.pid, f"Ray did not start it on another node: {first} -> {dead}"


# ---- a CE actor that hangs on one node


async def test_a_hung_ce_actor_on_one_node_delays_only_its_own_ce_on_slurm_24_11(
        nodes: RayNodes, slurm_24_11: SlurmStack, tmp_path: Path) -> None:
    namespace = f"mn-hung-{uuid.uuid4().hex[:8]}"
    (template,) = _settings(slurm_24_11, tmp_path, namespace).ce
    ces = [template.model_copy(update={"name": n, "root": f"{template.root}-{n}"}) for n in ("a", "b")]
    settings = _settings(slurm_24_11, tmp_path, namespace).model_copy(update={"ce": ces})
    seam = RaySeam(namespace, options={ce_actor_name("a"): nodes.on("worker-1"),
                                       ce_actor_name("b"): nodes.on("worker-2")}, timeout=10.0)
    resource = Resource(slurm_24_11, namespace)
    outputs = tmp_path / "out"
    a_keys, b_keys = [f"{namespace}-a{i}" for i in range(3)], [f"{namespace}-b{i}" for i in range(3)]
    stopped = 0
    try:
        ic = Intercede.start(settings, seam=seam)
        ic = Intercede(RaySeam(namespace), ic._handle)  # the test's own calls: the default deadline
        a_actor, b_actor = found(seam, ce_actor_name("a")), found(seam, ce_actor_name("b"))
        await ic.declare(requests(a_keys, "a", resource.ledger, outputs, 3.0), progress=False)

        async def a_submitted() -> bool:
            return all(r.job_id for r in await ic.rows_of(a_keys))
        await until("a's jobs submitted", a_submitted, 60, ic)
        where = {n: nodes.name_of(placement(h).node) for n, h in
                 [("reconciler", ic._handle), ("a", a_actor), ("b", b_actor)]}

        stopped = placement(a_actor).pid
        os.kill(stopped, signal.SIGSTOP)
        started = time.monotonic()
        await ic.declare(requests(b_keys, "b", resource.ledger, outputs, 0.5), progress=False)
        b_rows = await ic.wait(b_keys, until="collected", timeout=90, progress=False)
        b_seconds = time.monotonic() - started
        a_while_stopped = await ic.rows_of(a_keys)

        os.kill(stopped, signal.SIGCONT)
        stopped = 0
        a_rows = await ic.wait(a_keys, until="collected", timeout=120, progress=False)
    finally:
        if stopped:
            os.kill(stopped, signal.SIGCONT)
        stop_actors(namespace)
    print(f"\n[multinode hung-ce] placement={where} b_collected_in={b_seconds:.1f}s")
    assert where == {"reconciler": "head", "a": "worker-1", "b": "worker-2"}, "three actors on three nodes"
    assert converged(b_rows, b_keys) == every(b_keys), "b's jobs converged while a's CE actor was stopped"
    assert not any(r.collected for r in a_while_stopped), "a's jobs waited for their CE actor"
    assert converged(a_rows, a_keys) == every(a_keys), "a's jobs converged after SIGCONT"
    keys = a_keys + b_keys
    assert resource.runs() == Counter({k: 1 for k in keys}), "each payload ran exactly once at the resource"
    assert await resource.jobs_once_accounted(keys) == Counter({k: 1 for k in keys}), "one Slurm job per key"
    for k in keys:
        assert (outputs / k / "out.txt").read_text() == f"{k}\n"
    assert resource.leftovers(ces[0].root) == resource.leftovers(ces[1].root) == [], "everything purged"


# ---- the reconciler restarted by Ray, with no caller alive


async def drive(address: str, settings_json: str, ledger: str, outputs: str, *keys: str) -> None:
    """The driver process: start intercede on the cluster, declare the keys, say which node it ran on, return."""
    settings = Settings.model_validate_json(settings_json)
    cluster.use_local_token()
    ic = Intercede.start(settings, address=address)
    await ic.declare(requests(keys, "slurm", ledger, Path(outputs), 2.0), progress=False)
    print(ray.get_runtime_context().get_node_id())


DRIVER = "import asyncio, sys; from tests.faults.test_multinode import drive; asyncio.run(drive(*sys.argv[1:]))"


async def test_a_reconciler_killed_after_its_driver_exited_is_restarted_by_ray_and_resumes_on_slurm_24_11(
        nodes: RayNodes, slurm_24_11: SlurmStack, tmp_path: Path) -> None:
    namespace = f"mn-restart-{uuid.uuid4().hex[:8]}"
    settings = _settings(slurm_24_11, tmp_path, namespace)
    resource = Resource(slurm_24_11, namespace)
    outputs = tmp_path / "out"
    keys = [f"{namespace}-{i}" for i in range(8)]
    seam = RaySeam(namespace)
    try:
        driver = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", DRIVER, nodes.cluster.address, settings.model_dump_json(),
                             resource.ledger, str(outputs), *keys],
            cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert driver.returncode == 0, driver.stderr[-3000:]
        driver_node = driver.stdout.split()[-1]
        handle = found(seam, reconciler_name())
        ic = Intercede(seam, handle)

        async def some_submitted() -> bool:
            return any(r.job_id for r in await ic.rows_of(keys))
        await until("a first job submitted", some_submitted, 90, ic)
        before = placement(handle)
        os.kill(before.pid, signal.SIGKILL)  # no caller is alive: only Ray can bring it back
        after: Placement = await asyncio.to_thread(
            await_placement, handle, "the reconciler restarted",
            lambda p: p.state == "ALIVE" and p.pid not in (0, before.pid), 120)
        rows = await ic.wait(keys, until="collected", timeout=180, progress=False)
        stats = await ic.stats()
    finally:
        stop_actors(namespace)
    print(f"\n[multinode restart] journal_node={nodes.name_of(driver_node)} before={before} after={after}")
    assert after.restarts > before.restarts and after.node == before.node == driver_node, \
        "Ray restarted the reconciler on its journal's node, the one its driver ran on"
    assert stats["ticks"] > 0, "the restarted instance's loop runs with no caller"
    assert converged(rows, keys) == every(keys)
    assert resource.runs() == Counter({k: 1 for k in keys}), "each payload ran exactly once at the resource"
    jobs = await resource.jobs_once_accounted(keys)
    assert jobs == Counter({k: 1 for k in keys}), f"one Slurm job per key: {jobs}"
    for k in keys:
        assert (outputs / k / "out.txt").read_text() == f"{k}\n"
    assert resource.leftovers(settings.ce[0].root) == [], "everything purged at the resource"
