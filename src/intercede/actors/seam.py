"""The one thin seam every Ray call goes through.

:class:`RaySeam` makes plain classes into named, detached Ray actors and awaits their methods; :class:`LocalSeam`
instantiates the same classes in this process, so the actor logic is tested without a cluster. Nothing else in
intercede touches Ray's actor API.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Protocol

import ray

__all__ = ["LocalSeam", "RaySeam", "Seam"]


class Seam(Protocol):
    """Start, find, call and kill named actors."""

    namespace: str

    def start(self, cls: type, name: str, *args: Any, **kwargs: Any) -> Any:
        """The actor ``name``, created from ``cls(*args, **kwargs)`` unless it already exists."""

    def find(self, name: str) -> Any | None:
        """The running actor ``name``, or None."""

    async def call(self, handle: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        """Await ``handle.method(*args, **kwargs)``."""

    def kill(self, handle: Any, *, restart: bool = False) -> None:
        """Kill the actor; with ``restart`` Ray brings it back (its __init__ runs again)."""

    def spawn(self, handle: Any, method: str) -> None:
        """Start the long-running ``handle.method()`` without waiting for it."""


class RaySeam:
    """Named, detached actors in ``namespace`` that Ray restarts after a crash (and retries their calls)."""

    def __init__(self, namespace: str = "intercede") -> None:
        self.namespace = namespace
        self._spawned: list[Any] = []

    @staticmethod
    def connect(namespace: str, address: str | None = None) -> None:
        """Join the Ray cluster at ``address`` ("auto": the running one), or start a local one if None."""
        if not ray.is_initialized():
            ray.init(address=address, namespace=namespace, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)

    def start(self, cls: type, name: str, *args: Any, **kwargs: Any) -> Any:
        actor: Any = ray.remote(cls).options(
            name=name, namespace=self.namespace, lifetime="detached", get_if_exists=True,
            max_restarts=-1, max_task_retries=-1, max_concurrency=1000, num_cpus=0,
        )
        return actor.remote(*args, **kwargs)

    def find(self, name: str) -> Any | None:
        try:
            return ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            return None

    async def call(self, handle: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        return await getattr(handle, method).remote(*args, **kwargs)

    def kill(self, handle: Any, *, restart: bool = False) -> None:
        ray.kill(handle, no_restart=not restart)

    def spawn(self, handle: Any, method: str) -> None:
        self._spawned.append(getattr(handle, method).remote())


class LocalSeam:
    """In-process stand-in: the same classes, called directly on this event loop."""

    def __init__(self, namespace: str = "intercede") -> None:
        self.namespace = namespace
        self.actors: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[Any]] = []

    def start(self, cls: type, name: str, *args: Any, **kwargs: Any) -> Any:
        if name not in self.actors:
            self.actors[name] = cls(*args, **kwargs)
        return self.actors[name]

    def find(self, name: str) -> Any | None:
        return self.actors.get(name)

    async def call(self, handle: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(handle, method)(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    def spawn(self, handle: Any, method: str) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(getattr(handle, method)()))

    def kill(self, handle: Any, *, restart: bool = False) -> None:
        for name, actor in list(self.actors.items()):
            if actor is handle:
                del self.actors[name]
                closing = getattr(actor, "aclose", None)
                if closing is not None:
                    asyncio.get_running_loop().create_task(closing())
