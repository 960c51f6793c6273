"""The one thin seam every Ray call goes through.

:class:`RaySeam` makes plain classes into named, detached Ray actors and awaits their methods; :class:`LocalSeam`
instantiates the same classes in this process, so the actor logic is tested without a cluster. Nothing else in
intercede touches Ray's actor API.

Every call has a deadline: the seam's ``timeout`` unless the call passes its own (``timeout=``, a keyword the seam
keeps for itself: an actor method's own ``timeout`` parameter cannot be reached through the seam). A call past its
deadline raises :class:`~intercede.errors.TimeoutError`; an actor that died or cannot be reached raises
:class:`~intercede.errors.ConnectivityError`. Both are temporary (:func:`~intercede.errors.is_temporary`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Mapping
from typing import Any, Protocol

import ray
from ray.exceptions import ActorUnschedulableError, GetTimeoutError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from intercede.errors import ConnectivityError, InvalidSpecError, TimeoutError

__all__ = ["DEFAULT_TIMEOUT", "LocalSeam", "RaySeam", "Seam"]

# Long enough for a fetch of large outputs by a healthy CE actor (the backend bounds each transfer itself); a quick
# call that must fail fast passes its own.
DEFAULT_TIMEOUT = 300.0


class Seam(Protocol):
    """Start, find, call and kill named actors. ``timeout`` is the default deadline of a call, in seconds."""

    namespace: str
    timeout: float

    def start(self, cls: type, name: str, *args: Any, **kwargs: Any) -> Any:
        """The actor ``name``, created from ``cls(*args, **kwargs)`` unless it already exists."""

    def find(self, name: str) -> Any | None:
        """The running actor ``name``, or None."""

    async def call(self, handle: Any, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Await ``handle.method(*args, **kwargs)``; :class:`TimeoutError` after ``timeout`` (default: the seam's),
        :class:`ConnectivityError` if the actor died for good or cannot be reached."""

    async def call_once(self, handle: Any, method: str, *args: Any, timeout: float | None = None,
                        **kwargs: Any) -> Any:
        """Like :meth:`call`, for a method that must not run twice (a submit): it is never re-run on a restarted
        actor. If the actor dies or cannot be reached while the call is in flight, :class:`ConnectivityError` is
        raised, and :class:`TimeoutError` past the deadline: the call may or may not have run, and the caller must
        find out (a submit is adopted by its tag)."""

    def call_blocking(self, handle: Any, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Call a plain (not async) method and block until it answers, for synchronous callers; same errors."""

    def kill(self, handle: Any, *, restart: bool = False) -> None:
        """Kill the actor; with ``restart`` Ray brings it back (its __init__ runs again)."""

    def spawn(self, handle: Any, method: str) -> None:
        """Start the long-running ``handle.method()`` without waiting for it."""

    def node(self) -> str | None:
        """The Ray node id of this process (None in process: there are no nodes)."""

    def pinned(self, name: str, node: str) -> Seam:
        """This seam, but the actor ``name`` runs only on the Ray node ``node``: created there, and restarted only
        there. :class:`InvalidSpecError` if no live node has that id."""


# ActorDiedError, ActorUnavailableError; and an actor pinned to a node that is gone (not a RayActorError in Ray 2.60).
_GONE = (RayActorError, ActorUnschedulableError)


def _lost(method: str, exc: BaseException, *, may_have_run: bool) -> ConnectivityError:
    maybe = "; it may have run" if may_have_run else ""
    return ConnectivityError(f"actor call {method!r} lost (the actor died or could not be reached){maybe}: "
                             f"{type(exc).__name__}")


class RaySeam:
    """Named, detached actors in ``namespace`` that Ray restarts after a crash (and retries their calls, except
    :meth:`call_once`).

    ``options`` maps an actor's name to Ray actor options that override the defaults for that actor only, e.g.
    ``{"intercede-ce-local": {"label_selector": {"zone": "a"}}}`` to place it on a node (the multi-node fault tests
    do). Actors not named there get the defaults. A RaySeam holds only this configuration, so it can be handed to an
    actor (the reconciler starts its CE actors through the seam it was given).
    """

    def __init__(self, namespace: str = "intercede", *, options: Mapping[str, Mapping[str, Any]] | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.namespace = namespace
        self.timeout = timeout
        self._options = {name: dict(opts) for name, opts in (options or {}).items()}

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

    async def _await(self, ref: Any, method: str, timeout: float | None, *, may_have_run: bool) -> Any:
        deadline = self.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(ref, deadline)
        except asyncio.TimeoutError as exc:  # the builtin one: intercede's TimeoutError is raised instead
            # Ask Ray to drop it (a queued call never starts; a running async one is cancelled) so that a hung actor
            # does not run a pile of stale calls when it wakes up. Best effort: the actor may not hear it in time.
            with contextlib.suppress(Exception):
                ray.cancel(ref)
            maybe = "; it may still run" if may_have_run else ""
            raise TimeoutError(f"actor call {method!r} got no answer within {deadline:g} s{maybe}") from exc
        except _GONE as exc:
            raise _lost(method, exc, may_have_run=may_have_run) from exc

    async def call(self, handle: Any, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        ref = getattr(handle, method).remote(*args, **kwargs)
        return await self._await(ref, method, timeout, may_have_run=False)

    async def call_once(self, handle: Any, method: str, *args: Any, timeout: float | None = None,
                        **kwargs: Any) -> Any:
        # The actors' max_task_retries=-1 would run an interrupted call again on the restarted actor: a submit that
        # reached the resource before its actor died would be submitted twice. Here Ray's error comes back instead.
        ref = getattr(handle, method).options(max_task_retries=0).remote(*args, **kwargs)
        return await self._await(ref, method, timeout, may_have_run=True)

    def call_blocking(self, handle: Any, method: str, *args: Any, timeout: float | None = None) -> Any:
        deadline = self.timeout if timeout is None else timeout
        try:
            return ray.get(getattr(handle, method).remote(*args), timeout=deadline)
        except GetTimeoutError as exc:
            raise TimeoutError(f"actor call {method!r} got no answer within {deadline:g} s") from exc
        except _GONE as exc:
            raise _lost(method, exc, may_have_run=False) from exc

    def kill(self, handle: Any, *, restart: bool = False) -> None:
        ray.kill(handle, no_restart=not restart)

    def spawn(self, handle: Any, method: str) -> None:
        # Fire and forget: Ray keeps running the call; its result is never read.
        getattr(handle, method).remote()

    def node(self) -> str | None:
        node: str = ray.get_runtime_context().get_node_id()
        return node

    def pinned(self, name: str, node: str) -> RaySeam:
        """See :meth:`Seam.pinned`. Options this seam was given for ``name`` win (a caller that places the actor
        itself, e.g. a test by node label); otherwise its scheduling is NodeAffinitySchedulingStrategy(soft=False):
        Ray never creates or restarts it elsewhere, and while the node is gone the actor cannot run at all."""
        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}  # type: ignore[no-untyped-call]
        if node not in alive:
            raise InvalidSpecError(f"no live node of this Ray cluster has the id {node!r} (the node meant to run "
                                   f"{name}); `ray list nodes` shows the ids")
        options = {k: dict(v) for k, v in self._options.items()}
        options.setdefault(name, {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)})
        return RaySeam(self.namespace, options=options, timeout=self.timeout)


class LocalSeam:
    """In-process stand-in: the same classes, called directly on this event loop, with the same deadlines."""

    def __init__(self, namespace: str = "intercede", *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.namespace = namespace
        self.timeout = timeout
        self.actors: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[Any]] = []

    def start(self, cls: type, name: str, *args: Any, **kwargs: Any) -> Any:
        if name not in self.actors:
            self.actors[name] = cls(*args, **kwargs)
        return self.actors[name]

    def find(self, name: str) -> Any | None:
        return self.actors.get(name)

    async def call(self, handle: Any, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        result = getattr(handle, method)(*args, **kwargs)
        if not inspect.isawaitable(result):
            return result
        deadline = self.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(result, deadline)
        except asyncio.TimeoutError as exc:
            raise TimeoutError(f"actor call {method!r} got no answer within {deadline:g} s") from exc

    async def call_once(self, handle: Any, method: str, *args: Any, timeout: float | None = None,
                        **kwargs: Any) -> Any:
        return await self.call(handle, method, *args, timeout=timeout, **kwargs)  # in-process: nothing re-runs

    def call_blocking(self, handle: Any, method: str, *args: Any, timeout: float | None = None) -> Any:
        result = getattr(handle, method)(*args)
        if inspect.isawaitable(result):
            with contextlib.suppress(AttributeError):
                result.close()  # type: ignore[attr-defined]  # a coroutine never awaited
            raise TypeError(f"{method!r} is async; call_blocking takes plain methods only")
        return result

    def spawn(self, handle: Any, method: str) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(getattr(handle, method)()))

    def node(self) -> str | None:
        return None

    def pinned(self, name: str, node: str) -> LocalSeam:
        return self  # in process: every actor runs here already

    def kill(self, handle: Any, *, restart: bool = False) -> None:
        for name, actor in list(self.actors.items()):
            if actor is handle:
                del self.actors[name]
                # A plain close() runs now (the reconciler releases its journal at once, for a successor in this
                # process); an async aclose() is scheduled.
                if callable(getattr(actor, "close", None)):
                    actor.close()
                elif callable(getattr(actor, "aclose", None)):
                    asyncio.get_running_loop().create_task(actor.aclose())
