"""ReconcilerActor: the loop that never dies, around :class:`~intercede.reconcile.Reconciler`. A plain class.

The actor starts its own loop when it is constructed (as Ray Serve's controller does): Ray re-runs ``__init__``
after every restart it performs, so the loop resumes from the journal with no caller keeping it alive.

Each step pulls what changed from every CE actor, all at once (one cheap call each: the CE actors poll the resources
on their own schedule), feeds it to the reconciler, tells each CE actor which ids to track (those not yet terminal: a
job whose final state is recorded stops being polled), then runs one reconcile tick. A step waits for the CE actors'
answers at most :attr:`ReconcilerActor.observe_wait` seconds: a CE actor that has not answered by then (hung,
overloaded, its node gone) is marked unreachable, so its keys get no action, and its answer is folded in by a later
step when it comes (each call is bounded by the seam's timeout). One hung CE actor therefore delays only its own
jobs. Every step is caught, logged and timed; the loop sleeps and goes on.

The WMS-facing methods (``declare``, ``cancel``, ``collect``, ``forget``) journal before they return.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from intercede.actors import metrics
from intercede.actors.ce import CEActor, CEHealth
from intercede.actors.faults import CrashingGateway
from intercede.actors.gateway import ActorGateway
from intercede.actors.seam import RaySeam, Seam
from intercede.actors.settings import Settings
from intercede.model import JobSpec, JobStatus
from intercede.reconcile import Journal, KeyRow, Phase, Reconciler, RetryPolicy
from intercede.reconcile.gateway import CEGateway

__all__ = ["ActionRecord", "JobRequest", "ReconcilerActor", "ce_actor_name", "reconciler_name"]

log = logging.getLogger(__name__)

# Reports of job ids the reconciler does not know yet, kept per CE (the newest); a bound against ids that never
# become known (a job whose key was forgotten while its CE actor still tracked it).
MAX_UNMATCHED = 100_000


def reconciler_name() -> str:
    return "intercede-reconciler"


def ce_actor_name(ce: str) -> str:
    return f"intercede-ce-{ce}"


@dataclass(frozen=True, slots=True)
class JobRequest:
    """One key the WMS declares."""

    key: str
    ce: str
    spec: JobSpec
    phase: Phase = Phase.RUNNING
    destination: Path | None = None


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """An action the reconciler issued, for diagnostics."""

    at: float
    kind: str
    key: str


Pull = tuple[str, int, list[JobStatus], bool]
"""A CE actor's answer to ``changes``: (epoch, counter, changed statuses, reachable)."""


class ReconcilerActor:
    """Owns the journal and drives every CE actor; see the module docstring.

    With ``start`` (the default) the loop is started on the running event loop at construction: the actor's own
    under Ray, the caller's with :class:`LocalSeam`. ``start=False`` leaves stepping to the caller (tests).
    """

    def __init__(self, settings: Settings, *, seam: Seam | None = None, fault_plan: Path | None = None,
                 start: bool = True) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._seam: Seam = seam or RaySeam(settings.namespace)
        self._ces = {c.name: self._seam.start(CEActor, ce_actor_name(c.name), c) for c in settings.ce}
        gateways: dict[str, CEGateway] = {}
        for name, handle in self._ces.items():
            gateway: CEGateway = ActorGateway(self._seam, handle)
            gateways[name] = CrashingGateway(gateway, fault_plan) if fault_plan else gateway
        self._budget = {c.name: c.submits_per_tick for c in settings.ce}
        policy = RetryPolicy(purge_cancelled_after=settings.purge_cancelled_after)
        self.reconciler = Reconciler(Journal(settings.journal_path), gateways, policy=policy)
        self._cursors: dict[str, tuple[str, int]] = {name: ("", 0) for name in self._ces}
        self._pulls: dict[str, asyncio.Task[Pull | None]] = {}
        self._unmatched: dict[str, dict[str, JobStatus]] = {name: {} for name in self._ces}
        self._lagging: set[str] = set()  # CEs whose actor missed the last wait; no step waits for them again
        # A healthy CE actor answers in milliseconds; the wait only bounds what a hung one costs a step.
        self.observe_wait = min(self._seam.timeout, max(5.0, settings.tick_interval))
        self._actions: deque[ActionRecord] = deque(maxlen=1000)
        self._loop: asyncio.Task[None] | None = None
        self.ticks = 0
        self.tick_errors = 0
        self.last_tick_seconds = 0.0
        self.last_error = ""
        if start:
            self._loop = asyncio.get_running_loop().create_task(self._forever())

    # -- the loop ---------------------------------------------------------------------------------------------

    async def ensure_running(self) -> None:
        """Start the reconcile loop unless it runs already (idempotent)."""
        if self._loop is None or self._loop.done():
            self._loop = asyncio.get_running_loop().create_task(self._forever())

    async def run_forever(self) -> None:
        """Wait on the loop (starting it if need be); nothing needs to call this for the loop to run."""
        await self.ensure_running()
        assert self._loop is not None
        await self._loop

    def running_settings(self) -> Settings:
        """The settings this actor runs with (a plain method: :meth:`Seam.call_blocking` asks it)."""
        return self.settings

    async def _forever(self) -> None:
        # No call to the CE actors before the first step: one that hangs must not hold the loop up. The first pull
        # of each finds a new epoch and starts its poller.
        while True:
            start = time.monotonic()
            issued = 0
            try:
                issued = await self.step()
            except Exception as exc:  # the loop must never die; the error is logged and counted
                self.tick_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                metrics.record_error("tick", exc)
                log.exception("reconcile step failed; continuing")
            self.last_tick_seconds = time.monotonic() - start
            # A step that acted may have unblocked the next one (a fetch makes a purge due): go on at once.
            await asyncio.sleep(0 if issued else self.settings.tick_interval)

    async def step(self) -> int:
        """Observe every CE (concurrently, see the module docstring), then one reconcile tick; returns the number of
        actions issued."""
        await self.observe()
        actions = await self.reconciler.tick(self._budget)
        now = time.time()
        self._actions.extend(ActionRecord(now, type(a).__name__, a.key) for a in actions)
        metrics.record_actions(type(a).__name__ for a in actions)
        self.ticks += 1
        return len(actions)

    async def observe(self) -> None:
        """Start a pull from every CE actor that has none in flight, wait up to :attr:`observe_wait` for the new
        ones (not for CE actors that already missed a wait), and fold in every pull that has finished."""
        fresh = []
        for name, handle in self._ces.items():
            if name not in self._pulls:
                self._pulls[name] = task = asyncio.get_running_loop().create_task(self._pull(name, handle))
                if name not in self._lagging:
                    fresh.append(task)
        if fresh:
            await asyncio.wait(fresh, timeout=self.observe_wait)
        for name, task in list(self._pulls.items()):
            if not task.done():
                if name not in self._lagging:
                    log.warning("CE actor %s has not answered within %.1f s; its CE counts as unreachable until it "
                                "does", name, self.observe_wait)
                    self._lagging.add(name)
                self.reconciler.set_reachable(name, False)
                continue
            del self._pulls[name]
            pulled = task.result()
            if pulled is None:
                self.reconciler.set_reachable(name, False)
                continue
            epoch, version, changed, reachable = pulled
            self._lagging.discard(name)
            if epoch != self._cursors[name][0]:
                self._unmatched[name] = {}  # a new CE actor instance sends everything again
            # A CE actor reports every id it tracks, including jobs this reconciler adopts only in a later tick (it
            # restarted between a submit and its answer): the cursor moves past those reports, so they are kept
            # and offered again until their key knows the job.
            offered = self._unmatched[name] | {s.job_id: s for s in changed}
            unknown = self.reconciler.observe(name, offered.values())
            self._unmatched[name] = {s.job_id: s for s in unknown[-MAX_UNMATCHED:]}
            self.reconciler.set_reachable(name, reachable)
            self._cursors[name] = (epoch, version)

    async def _pull(self, name: str, handle: Any) -> Pull | None:
        """One CE actor's changes since the cursor (None if it did not answer), having told it what to track."""
        epoch, since = self._cursors[name]
        try:
            pulled: Pull = await self._seam.call(handle, "changes", epoch, since)
            if pulled[0] != epoch:
                # A CE actor instance this loop has not seen yet: Ray restarted it (a crash, its node died) and its
                # __init__ ran again, so its poll loop is not running. Without this it would never poll again.
                await self._seam.call(handle, "start")
            # Exactly the ids whose state can still change: jobs whose final state is recorded stop being polled.
            await self._seam.call(handle, "track_only", self.reconciler.tracked_job_ids(name))
        except Exception as exc:  # noqa: BLE001 - a CE actor that cannot answer makes its CE unreachable, no more
            log.warning("CE actor %s did not answer: %s", name, exc)
            return None
        return pulled

    def close(self) -> None:
        """Stop the loop and the pulls in flight and release the journal (idempotent): before the actor is replaced
        (``Intercede.start(..., replace=True)``), and when the in-process seam kills it."""
        for task in [self._loop, *self._pulls.values()]:
            if task is not None:
                task.cancel()
        self._pulls.clear()
        self.reconciler.close()

    # -- the WMS's API ----------------------------------------------------------------------------------------

    async def declare(self, jobs: Sequence[JobRequest]) -> int:
        """Declare keys, all or nothing (idempotent for the same spec). :class:`InvalidSpecError` names every refused
        job (bad key or CE, another spec for a known key, a key being forgotten) and nothing is declared."""
        return len(self.reconciler.declare_many(jobs))

    async def check_declare(self, jobs: Sequence[JobRequest]) -> list[str]:
        """What :meth:`declare` would refuse in ``jobs``, one line per refused job; declares nothing."""
        return self.reconciler.check_declarations(jobs)

    async def cancel(self, keys: Sequence[str]) -> None:
        """Cancel each key's job; it is purged at the CE ``settings.purge_cancelled_after`` seconds later. All or
        nothing: :class:`UnknownKeyError` names the keys never declared."""
        self.reconciler.set_phases(keys, Phase.CANCELLED)

    async def collect(self, keys: Sequence[str], destination: Path) -> None:
        """Fetch each key's outputs to ``destination/<key>`` once it is terminal, then purge it remotely. All or
        nothing, as :meth:`cancel`."""
        destinations = {key: destination / key for key in keys if isinstance(key, str)}
        self.reconciler.set_phases(keys, Phase.COLLECTED, destinations)

    async def forget(self, keys: Sequence[str]) -> None:
        """Cancel, purge and drop each key. All or nothing, as :meth:`cancel`."""
        self.reconciler.set_phases(keys, Phase.FORGOTTEN)

    # -- queries ----------------------------------------------------------------------------------------------

    async def rows(self) -> list[dict[str, Any]]:
        return [_row(r) for r in self.reconciler.snapshot()]

    async def ce_health(self) -> list[CEHealth]:
        """Every CE actor's health, asked concurrently; :class:`TimeoutError` if one does not answer in time."""
        health: list[CEHealth] = await asyncio.gather(*(self._seam.call(h, "health") for h in self._ces.values()))
        return health

    async def recent_actions(self, limit: int = 200) -> list[ActionRecord]:
        return list(self._actions)[-limit:]

    async def stats(self) -> dict[str, Any]:
        return {"ticks": self.ticks, "tick_errors": self.tick_errors, "last_tick_seconds": self.last_tick_seconds,
                "last_error": self.last_error, "keys": len(self.reconciler.snapshot())}


def _row(row: KeyRow) -> dict[str, Any]:
    # Shallow on purpose: dataclasses.asdict deep-copies every field (25x slower over many rows).
    data = {f.name: getattr(row, f.name) for f in fields(row)}
    data["phase"] = row.phase.value
    data["state"] = row.state.value if row.state else None
    return data
