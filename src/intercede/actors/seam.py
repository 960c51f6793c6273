"""The one thin seam every Ray call goes through.

:class:`RaySeam` makes plain classes into named, detached Ray actors and awaits their methods; :class:`LocalSeam`
instantiates the same classes in this process, so the actor logic is tested without a cluster. Nothing else in
intercede touches Ray's actor API.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping
from typing import Any, Protocol

import ray
from ray.exceptions import RayActorError

from intercede.errors import ConnectivityError

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

    async def call_once(self, handle: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        """Like :meth:`call`, for a method that must not run twice (a submit): it is never re-run on a restarted
        actor. If the actor dies or cannot be reached while the call is in flight, :class:`ConnectivityError` is
        raised: the call may or may not have run, and the caller must find out (a submit is adopted by its tag)."""

    def kill(self, handle: Any, *, restart: bool = False) -> None:
        """Kill the actor; with ``restart`` Ray brings it back (its __init__ runs again)."""

    def spawn(self, handle: Any, method: str) -> None:
        """Start the long-running ``handle.method()`` without waiting for it."""


class RaySeam:
    """Named, detached actors in ``namespace`` that Ray restarts after a crash (and retries their calls, except
    :meth:`call_once`).

    ``options`` maps an actor's name to Ray actor options that override the defaults for that actor only, e.g.
    ``{"intercede-ce-local": {"label_selector": {"zone": "a"}}}`` to place it on a node (the multi-node fault tests
    do). Actors not named there get the defaults.
    """

    def __init__(self, namespace: str = "intercede", *, options: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.namespace = namespace
        self._options = {name: dict(opts) for name, opts in (options or {}).items()}
        self._spawned: list[Any] = []

    @staticmethod
    def connect(namespace: str, address: str | None = None) -> None:
        """Join the Ray cluster at ``address`` ("auto": the running one), or start a local one if None."""
        if not ray.is_initialized():
            ray.init(address=address, namespace=namespace, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)

    def start(self, cls: type, name: str, *args: Any, **kwargs: Any) -> Any:
        defaults: dict[str, Any] = {"lifetime": "detached", "max_restarts": -1, "max_task_retries": -1,
                                    "max_concurrency": 1000, "num_cpus": 0}
        options = defaults | self._options.get(name, {})
        actor: Any = ray.remote(cls).options(name=name, namespace=self.namespace, get_if_exists=True, **options)
        return actor.remote(*args, **kwargs)

    def find(self, name: str) -> Any | None:
        try:
            return ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            return None

    async def call(self, handle: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        return await getattr(handle, method).remote(*args, **kwargs)

    async def call_once(self, handle: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        # The actors' max_task_retries=-1 would run an interrupted call again on the restarted actor: a submit that
        # reached the resource before its actor died would be submitted twice. Here Ray's error comes back instead.
        try:
            return await getattr(handle, method).options(max_task_retries=0).remote(*args, **kwargs)
        except RayActorError as exc:  # ActorDiedError, ActorUnavailableError
            raise ConnectivityError(f"actor call {method!r} lost (the actor died or could not be reached); it may "
                                    f"have run: {type(exc).__name__}") from exc

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

    async def call_once(self, handle: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        return await self.call(handle, method, *args, **kwargs)  # in-process: nothing re-runs a call

    def spawn(self, handle: Any, method: str) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(getattr(handle, method)()))

    def kill(self, handle: Any, *, restart: bool = False) -> None:
        for name, actor in list(self.actors.items()):
            if actor is handle:
                del self.actors[name]
                closing = getattr(actor, "aclose", None)
                if closing is not None:
                    asyncio.get_running_loop().create_task(closing())
