"""Ray for the fault suite: a local instance (``ray_local``) or a two-node local cluster (``ray_cluster``), and a helper
that stops every intercede actor of a namespace.

A process holds one Ray connection at a time, so the two fixtures take turns: ``ray_local`` starts a local instance
unless one is connected already and leaves it running for the next test (it is shut down at the end of the session);
``ray_cluster`` shuts down whatever is connected, starts its cluster, and shuts it down after its test, so the next
``ray_local`` user simply starts a fresh local instance. Tests may therefore run in any order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

_LOCAL: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}


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


@pytest.fixture
def ray_cluster(_ray_shutdown_at_session_end: None) -> Iterator[TwoNodes]:
    """A head node and a worker node on this machine, the driver connected to the head; torn down after the test."""
    if ray.is_initialized():
        ray.shutdown()  # a ray_local instance of an earlier test: the next ray_local user starts a new one
    # Health checks every 500 ms, dead after 3 misses: a removed node is declared dead in ~2 s instead of ~15 s.
    system_config = {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
                      "health_check_initial_delay_ms": 0}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "labels": {NODE_LABEL: "head"},
                                                            "_system_config": system_config})
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
