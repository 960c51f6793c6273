"""A real local Ray instance and an intercede started on it for each test (own namespace, own data directory).

Kept out of a conftest on purpose: ``tests/hostile`` is shared, and only the modules that import these fixtures pay
for Ray. Same convention as ``tests/faults/conftest.py``: a Ray instance this process already joined is reused, and
one is started (``address="local"``, never another cluster) otherwise.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray

from intercede.actors.client import Intercede
from intercede.actors.reconciler import ce_actor_name
from intercede.actors.settings import Settings


@dataclass
class Running:
    """An intercede on real Ray: the facade, its settings, and the CE actor's handle for health checks."""

    ic: Intercede
    settings: Settings

    @property
    def jobs_root(self) -> Path:
        return Path(self.settings.ce[0].root)

    async def ce_health(self) -> dict[str, object]:
        (health,) = await self.ic.ce_health()
        return health.model_dump()


def _stop(namespace: str) -> None:
    from ray.util import list_named_actors

    for entry in list_named_actors(all_namespaces=True):
        if entry["namespace"] == namespace:
            ray.kill(ray.get_actor(entry["name"], namespace=namespace), no_restart=True)


@pytest.fixture
async def intercede_on_ray(tmp_path: Path) -> AsyncIterator[Running]:
    """An intercede over the embedded local CE (fast ticks and polls; a cancelled job's files are kept 1 s), on a real
    local Ray instance."""
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, namespace="intercede-tests", include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    base = Settings.embedded(tmp_path / "data", job_root=tmp_path / "jobs")
    ce = base.ce[0].model_copy(update={"poll_interval": 0.2})
    namespace = f"intercede-h4-{secrets.token_hex(4)}"
    settings = Settings.model_validate(base.model_dump() | {"tick_interval": 0.1, "ce": [ce.model_dump()],
                                                            "namespace": namespace, "purge_cancelled_after": 1.0})
    ic = Intercede.start(settings)
    await ic.stats()  # the actors exist and answer
    assert ray.get_actor(ce_actor_name("local"), namespace=namespace) is not None
    try:
        yield Running(ic, settings)
    finally:
        _stop(namespace)


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 60.0, what: str = "condition") -> None:
    """Await ``condition()`` becoming true (polled every 0.1 s); fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)
