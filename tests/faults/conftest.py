"""Ray for the fault suite: a local instance (``ray_local``), a two-node local cluster (``ray_cluster``), a head and
two workers shared by a module (``ray_nodes``), and helpers that stop every intercede actor of a namespace and say
where an actor runs.

A process holds one Ray connection at a time, so the two fixtures take turns: ``ray_local`` starts a local instance
unless one is connected already and leaves it running for the next test (it is shut down at the end of the session);
``ray_cluster`` (per test) and ``ray_nodes`` (per module) shut down whatever is connected, start their cluster, and
shut it down after their test or module, so the next ``ray_local`` user simply starts a fresh local instance. Tests
may therefore run in any order.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from stacks.slurm_stack import SlurmStack
from stacks.slurm_stack import start as start_slurm
from tests.faults.outages import disarm_watcher, sshd_greets, start_sshd

_LOCAL: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}


@pytest.fixture(scope="session")
def slurm_24_11() -> Iterator[SlurmStack]:
    """A Slurm 24.11 stack (with sshd and slurmdbd), started once for the fault suite."""
    stack = start_slurm("24.11")
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def slurm(slurm_24_11: SlurmStack) -> Iterator[SlurmStack]:
    """The shared Slurm 24.11 stack for a test that makes outages: whatever the test left down (sshd, slurmctld, an
    armed watcher) is brought back after it, so a test that fails mid-outage does not take the next one with it."""
    yield slurm_24_11
    disarm_watcher(slurm_24_11)
    if not sshd_greets(slurm_24_11):
        start_sshd(slurm_24_11)
    slurm_24_11.start_slurmctld()


@pytest.fixture(scope="session")
def _ray_shutdown_at_session_end() -> Iterator[None]:
    yield
    ray.shutdown()


@pytest.fixture
def ray_local(_ray_shutdown_at_session_end: None) -> Iterator[None]:
    """A local Ray instance (started on first use, then shared by the tests that follow)."""
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, namespace="intercede-tests", **_LOCAL)  # never join another cluster
    yield


NODE_LABEL = "intercede-test-node"


@dataclass
class TwoNodes:
    """A local Ray cluster: ``head`` (where the driver is connected) and ``worker``, a second node tests may kill.

    The nodes carry the label :data:`NODE_LABEL` = ``"head"`` / ``"worker"``: :meth:`on` and :meth:`preferably_on`
    give the Ray actor options that place an actor by it. (Labels rather than NodeAffinitySchedulingStrategy: with
    ``soft=True`` Ray 2.60 places a zero-CPU actor on another node about half the time, even with the target alive.)
    """

    cluster: Cluster
    head: Any  # ray._private.node.Node
    worker: Any

    @staticmethod
    def on(node: str) -> dict[str, Any]:
        """Options that place an actor on ``node`` ("head" or "worker") and nowhere else."""
        return {"label_selector": {NODE_LABEL: node}}

    @staticmethod
    def preferably_on(node: str, otherwise: str) -> dict[str, Any]:
        """Options that place an actor on ``node``, or on ``otherwise`` when ``node`` is gone (e.g. after a restart)."""
        return {"label_selector": {NODE_LABEL: node},
                "fallback_strategy": [{"label_selector": {NODE_LABEL: otherwise}}]}

    def remove_worker(self) -> None:
        """Kill every process of the worker node (raylet, object store, its actors' workers), like a node dying."""
        self.cluster.remove_node(self.worker, allow_graceful=False)


# Health checks every 500 ms, dead after 3 misses: a removed node is declared dead in ~2 s instead of ~15 s.
_FAST_HEALTH = {"health_check_period_ms": 500, "health_check_failure_threshold": 3, "health_check_initial_delay_ms": 0}
_LEAN_NODE = {"object_store_memory": 80 * 1024**2}  # Ray's floor is 75 MiB; the tests move kilobytes


@dataclass
class RayNodes:
    """A local Ray cluster of real nodes (a raylet and object store each): ``head``, where the driver is connected,
    and workers, each labelled :data:`NODE_LABEL` = its name (``"head"``, ``"worker-1"``, ...).

    Shared by the tests of a module: a test may remove nodes (:meth:`remove`); the next test starts with the
    workers topped up again (:meth:`top_up`: new nodes, under the names of the removed ones).
    """

    cluster: Cluster
    head: Any  # ray._private.node.Node
    workers: dict[str, Any] = field(default_factory=dict)
    size: int = 2
    cpus: int = 2

    @staticmethod
    def on(node: str) -> dict[str, Any]:
        """Ray actor options that place an actor on the node named ``node`` and nowhere else."""
        return {"label_selector": {NODE_LABEL: node}}

    @staticmethod
    def preferably_on(node: str, *otherwise: str) -> dict[str, Any]:
        """Options that place an actor on ``node``, or else on the first of ``otherwise`` alive (after a restart)."""
        return {"label_selector": {NODE_LABEL: node},
                "fallback_strategy": [{"label_selector": {NODE_LABEL: n}} for n in otherwise]}

    def node_id(self, name: str) -> str:
        node = self.head if name == "head" else self.workers[name]
        node_id: str = node.node_id
        return node_id

    def name_of(self, node_id: str) -> str:
        """The name of the node with the Ray id ``node_id`` ("gone" for a node removed meanwhile)."""
        return next((n for n in ["head", *self.workers] if self.node_id(n) == node_id), "gone")

    def add(self) -> str:
        name = next(n for i in itertools.count(1) if (n := f"worker-{i}") not in self.workers)
        self.workers[name] = self.cluster.add_node(num_cpus=self.cpus, labels={NODE_LABEL: name}, **_LEAN_NODE)
        return name

    def remove(self, name: str) -> None:
        """Kill every process of a worker node (raylet, object store, its actors' workers), like a node dying."""
        self.cluster.remove_node(self.workers.pop(name), allow_graceful=False)

    def top_up(self) -> None:
        added = [self.add() for _ in range(self.size - len(self.workers))]
        if added:
            self.cluster.wait_for_nodes()


@pytest.fixture(scope="module")
def ray_nodes(_ray_shutdown_at_session_end: None) -> Iterator[RayNodes]:
    """A head node (1 CPU) and two worker nodes (2 CPUs each) on this machine, the driver connected to the head;
    shared by the module's tests (each starts with two live workers), torn down after the module. ~250 MB of RAM."""
    if ray.is_initialized():
        ray.shutdown()  # a ray_local instance of an earlier test: the next ray_local user starts a new one
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "labels": {NODE_LABEL: "head"},
                                                            "_system_config": _FAST_HEALTH, **_LEAN_NODE})
    try:
        nodes = RayNodes(cluster, cluster.head_node)
        ray.init(address=cluster.address, namespace="intercede-tests", **_LOCAL)
        nodes.top_up()
        yield nodes
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def nodes(ray_nodes: RayNodes) -> RayNodes:
    """:func:`ray_nodes` with two live workers (a node an earlier test removed is replaced)."""
    ray_nodes.top_up()
    return ray_nodes


@dataclass(frozen=True)
class Placement:
    """Where a Ray actor instance runs: its node id and process id, and how often Ray restarted it."""

    node: str
    pid: int
    restarts: int
    state: str


def placement(handle: Any) -> Placement:
    """Where the actor behind ``handle`` runs now, from the GCS's actor table."""
    from ray._private import state  # the only way to see an actor's node and pid without the dashboard

    info = state.actors(handle._actor_id.hex())
    return Placement(info["Address"]["NodeID"], info["Pid"], info["NumRestarts"], info["State"])


def await_placement(handle: Any, what: str, ok: Any, timeout: float = 60.0) -> Placement:
    """The actor's :func:`placement` once ``ok(placement)`` holds (AssertionError after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not ok(where := placement(handle)):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}; last seen {where}")
        time.sleep(0.1)
    return where


@pytest.fixture
def ray_cluster(_ray_shutdown_at_session_end: None) -> Iterator[TwoNodes]:
    """A head node and a worker node on this machine, the driver connected to the head; torn down after the test."""
    if ray.is_initialized():
        ray.shutdown()  # a ray_local instance of an earlier test: the next ray_local user starts a new one
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "labels": {NODE_LABEL: "head"},
                                                            "_system_config": _FAST_HEALTH})
    try:
        worker = cluster.add_node(num_cpus=1, labels={NODE_LABEL: "worker"})
        ray.init(address=cluster.address, namespace="intercede-tests", **_LOCAL)
        cluster.wait_for_nodes()
        yield TwoNodes(cluster, cluster.head_node, worker)
    finally:
        ray.shutdown()
        cluster.shutdown()


def stop_actors(namespace: str) -> None:
    """Kill the detached actors a test started (they would outlive it otherwise)."""
    from ray.util import list_named_actors

    for entry in list_named_actors(all_namespaces=True):
        if entry["namespace"] == namespace:
            ray.kill(ray.get_actor(entry["name"], namespace=namespace), no_restart=True)
