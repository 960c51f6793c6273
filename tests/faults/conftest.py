"""A local Ray instance for the fault suite, and a helper that stops every intercede actor of a namespace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             namespace="intercede-tests")
    yield
    ray.shutdown()


def stop_actors(namespace: str) -> None:
    """Kill the detached actors a test started (they would outlive it otherwise)."""
    from ray.util import list_named_actors

    for entry in list_named_actors(all_namespaces=True):
        if entry["namespace"] == namespace:
            ray.kill(ray.get_actor(entry["name"], namespace=namespace), no_restart=True)
