"""ReconcilerActor: the loop that never dies, around :class:`~intercede.reconcile.Reconciler`. A plain class.

The actor starts its own loop when it is constructed (as Ray Serve's controller does): Ray re-runs ``__init__``
after every restart it performs, so the loop resumes from the journal with no caller keeping it alive.

The SQLite journal is a file on one node's disk, so :meth:`Intercede.start <intercede.actors.client.Intercede.start>`
places this actor on that node (``Settings.journal_node``, by default the node ``start`` runs on) with a hard node
affinity: a restart can only happen there. If that node is lost, Ray does not restart the actor anywhere else (that
would open an empty journal): the service is down, its jobs go on at their CEs, and it resumes from the file once the
node is back and ``Intercede.start`` (``intercede serve``) runs there again.

Each step pulls what changed from every CE actor, all at once (one cheap call each: the CE actors poll the resources
on their own schedule), telling each which ids to start and stop tracking (it tracks those not yet terminal: a job
whose final state is recorded stops being polled); folds the reports in with the results of the units of work that
left some since the last step, in one journal transaction; then plans and starts the next units of work in the
background (:meth:`Reconciler.start`) and returns: a step never waits for a submit, a fetch or a purge. The loop
steps again as soon as a unit ends or leaves a result, or the WMS changes something, else after ``tick_interval``;
while results keep coming, steps start at most every :data:`STEP_GAP` (so that they are folded in groups), unless a
CE with keys waiting to be submitted has half its ``max_in_flight`` free.
Each CE takes at most its ``max_in_flight`` units at a time; a CE whose calls hang holds only its own slots.
The tracking is sent as deltas against what this actor last told that CE actor instance, and only when there is one,
so its cost follows churn; the whole set is sent when the CE actor's epoch is not the cursor's (Ray restarted it, or
this reconciler restarted and its cursor is new), or when the count a CE actor reports after a delta is not the count
sent.

The loop's steps wait for nothing: each CE actor's pull runs in the background (one at a time, at most one per
``tick_interval``) and wakes the loop when it ends. A CE actor whose pull has not come back within
:attr:`ReconcilerActor.observe_wait` seconds (hung, overloaded, its node gone) is marked unreachable, so its keys get
no action, and its answer is folded in by a later step when it comes (each call is bounded by the seam's timeout).
One hung CE actor therefore delays only its own jobs. (A step taken by hand, :meth:`ReconcilerActor.step` with
``settle``, waits up to ``observe_wait`` for the pulls and then for its units, as one whole tick.) Every step is
caught, logged and timed; the loop sleeps until something happens, at most ``tick_interval``, and goes on.

The WMS-facing methods (``declare``, ``cancel``, ``collect``, ``forget``) journal before they return. The queries
move what they are asked for: :meth:`~ReconcilerActor.counts` for summaries, :meth:`~ReconcilerActor.rows_of` for
some keys, and :meth:`~ReconcilerActor.watch` / :meth:`~ReconcilerActor.settled_since` for a waiter, which gets the
keys that settled since it last asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import os
import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from intercede.actors import metrics
from intercede.actors.ce import CEActor, CEHealth
from intercede.actors.faults import CrashingGateway
from intercede.actors.gateway import ActorGateway
from intercede.actors.seam import RaySeam, Seam
from intercede.actors.settings import Settings
from intercede.backends.registry import LIMIT_FIELDS, CEConfigBase
from intercede.errors import ConfigConflictError, UnknownKeyError
from intercede.model import JobSpec, JobState, JobStatus, OutputManifest
from intercede.reconcile import CELimits, KeyRow, Phase, Reconciler, RetryPolicy, open_journal
from intercede.reconcile.gateway import CEGateway

__all__ = ["ActionRecord", "JobRequest", "ReconcilerActor", "Until", "ce_actor_name", "reconciler_name", "settled"]

log = logging.getLogger(__name__)

# Reports of job ids the reconciler does not know yet, kept per CE (the newest); a bound against ids that never
# become known (a job whose key was forgotten while its CE actor still tracked it).
MAX_UNMATCHED = 100_000
# A waiter asks every fraction of a second; a watch nobody asked for this long was abandoned (its caller died).
WATCH_IDLE = 600.0
MAX_WATCHES = 100


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


#: Seconds between two steps at the least while units keep ending (at most half of tick_interval).
STEP_GAP = 0.1

Pull = tuple[str, int, list[JobStatus], bool]
"""A CE actor's answer to ``changes``: (epoch, counter, changed statuses, reachable)."""


class ReconcilerActor:
    """Owns the journal and drives every CE actor; see the module docstring. With the SQLite journal it runs, and is
    restarted, only on the node that holds the file.

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
        limits = {c.name: c.max_in_flight for c in settings.ce}
        policy = RetryPolicy(purge_cancelled_after=settings.purge_cancelled_after)
        journal = open_journal(settings.journal_location, passfile=settings.journal_passfile)
        # The overall bound is the sum of the CEs' own: a slow CE can only fill its own slots.
        self.reconciler = Reconciler(journal, gateways, policy=policy,
                                     concurrency=max(1, sum(limits.values())), max_in_flight=limits)
        for c in settings.ce:
            self.reconciler.set_limits(c.name, ce_limits(c))
        self._cursors: dict[str, tuple[str, int]] = {name: ("", 0) for name in self._ces}
        # The ids each CE actor was last told to track (valid for the instance of the cursor's epoch only).
        self._told: dict[str, set[str]] = {name: set() for name in self._ces}
        self.resyncs = 0  # full tracking lists sent (diagnostics and the churn benchmark)
        self._pulls: dict[str, asyncio.Task[Pull | None]] = {}
        self._pulled_at: dict[str, float] = {}  # monotonic time the last pull of each CE actor started
        self._unmatched: dict[str, dict[str, JobStatus]] = {name: {} for name in self._ces}
        self._lagging: set[str] = set()  # CEs whose actor missed the last wait; no step waits for them again
        # A healthy CE actor answers in milliseconds; the wait only bounds what a hung one costs a step.
        self.observe_wait = min(self._seam.timeout, max(5.0, settings.tick_interval))
        # The least time between the starts of two steps while results keep coming (see _forever). Measured on the
        # local CE (1,000 jobs, tick_interval 0.2 s): no gap took ~2,500 steps, 0.1 s ~700, and finished sooner.
        self.step_gap = min(STEP_GAP, settings.tick_interval / 2)
        self._actions: deque[ActionRecord] = deque(maxlen=1000)
        self._watches: dict[str, _Watch] = {}
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

    def apply_limits(self, settings: Settings) -> list[str]:
        """Take ``settings`` that differ from the running ones in CE limits only (:data:`LIMIT_FIELDS`) at once, with
        no restart: held-back keys are re-planned against the new limits on the next tick. Returns the CEs whose limits
        changed; :class:`ConfigConflictError` (and nothing changes) if anything else differs. A plain method, so
        :meth:`Seam.call_blocking` can ask it."""
        if not limits_only_change(self.settings, settings):
            raise ConfigConflictError("apply_limits: the new settings differ in more than CE limits; nothing was "
                                      "changed (replace the running service instead)")
        old = {c.name: c for c in self.settings.ce}
        changed = [c.name for c in settings.ce if c != old[c.name]]
        for c in settings.ce:
            self.reconciler.set_limits(c.name, ce_limits(c))
        self.settings = settings
        if changed:
            log.info("CE limits changed for %s", ", ".join(changed))
        return changed

    async def _forever(self) -> None:
        # No call to the CE actors before the first step: one that hangs must not hold the loop up. The first pull
        # of each finds a new epoch and starts its poller.
        while True:
            start = time.monotonic()
            try:
                await self.step(settle=False)
            except Exception as exc:  # the loop must never die; the error is logged and counted
                self.tick_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                metrics.record_error("tick", exc)
                log.exception("reconcile step failed; continuing")
            self.last_tick_seconds = time.monotonic() - start
            # A unit that ended may have unblocked the next action (a fetch makes a purge due), and the WMS may have
            # declared keys: step again when either happens (at most once per step_gap), else after tick_interval.
            if await self.reconciler.wait_for_results(self.settings.tick_interval) and not self.reconciler.hungry():
                # Results come one unit at a time: coalesce them, so that a busy CE's stream of endings costs a
                # step (a fold, a plan, their transactions) per gap rather than per result. After a quiet spell the
                # gap has passed already and the step comes at once; so it does when a CE with keys waiting to be
                # submitted has half its slots free (its queue would run dry during the gap).
                await asyncio.sleep(start + self.step_gap - time.monotonic())

    async def step(self, *, settle: bool = True) -> int:
        """Observe every CE (concurrently, see the module docstring) and fold the reports in with the finished
        units' results, then plan and start the next units; returns the number of actions started. The loop steps
        with ``settle=False``: the units run on in the background. A caller stepping by hand (tests) gets
        ``settle=True``: the step waits for its units and folds their results, as one whole tick."""
        if settle:
            await self.observe()
            actions = await self.reconciler.tick()
        else:
            # Nothing here waits: pulls run in the background (at most one per CE actor per tick_interval, as
            # statuses change only as often as the CE actors poll) and wake the loop when they end.
            self._start_pulls(self.settings.tick_interval)
            self._fold_pulls(waited=False)
            actions = self.reconciler.start()
        now = time.time()
        self._actions.extend(ActionRecord(now, type(a).__name__, a.key) for a in actions)
        metrics.record_actions(type(a).__name__ for a in actions)
        self.ticks += 1
        return len(actions)

    async def observe(self) -> None:
        """Start a pull from every CE actor that has none in flight, wait up to :attr:`observe_wait` for the new
        ones (not for CE actors that already missed a wait), and fold in every pull that has finished, with the
        results of the units that ended, in one journal transaction (:meth:`Reconciler.fold`). If that fails
        (JournalError) no cursor moves: the CE actors send the same changes again."""
        fresh = [task for name, task in self._start_pulls().items() if name not in self._lagging]
        if fresh:
            await asyncio.wait(fresh, timeout=self.observe_wait)
        self._fold_pulls(waited=True)

    def _start_pulls(self, every: float = 0.0) -> dict[str, asyncio.Task[Pull | None]]:
        """Start a pull from every CE actor that has none in flight and none started in the last ``every``
        seconds; its end wakes the loop. Returns the pulls started."""
        started = {}
        now = time.monotonic()
        for name, handle in self._ces.items():
            if name not in self._pulls and now - self._pulled_at.get(name, -math.inf) >= every:
                self._pulls[name] = task = asyncio.get_running_loop().create_task(self._pull(name, handle))
                task.add_done_callback(lambda _: self.reconciler.nudge())
                self._pulled_at[name] = now
                started[name] = task
        return started

    def _fold_pulls(self, *, waited: bool) -> None:
        """Fold in every pull that has finished, with the units' results, in one journal transaction. A CE actor
        whose pull is still out after a wait (``waited``), or for longer than :attr:`observe_wait`, is unreachable
        until it answers."""
        answered: dict[str, Pull] = {}
        now = time.monotonic()
        for name, task in list(self._pulls.items()):
            if not task.done():
                if not waited and now - self._pulled_at[name] < self.observe_wait:
                    continue  # not late yet
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
            answered[name] = pulled
            self._lagging.discard(name)
        offered: dict[str, dict[str, JobStatus]] = {}
        for name, (epoch, _, changed, _) in answered.items():
            # A new CE actor instance sends everything again.
            earlier = self._unmatched[name] if epoch == self._cursors[name][0] else {}
            # A CE actor reports every id it tracks, including jobs this reconciler adopts only in a later tick (it
            # restarted between a submit and its answer): the cursor moves past those reports, so they are kept
            # and offered again until their key knows the job.
            offered[name] = earlier | {s.job_id: s for s in changed}
        unknown = self.reconciler.fold({name: statuses.values() for name, statuses in offered.items()})
        for name, (epoch, version, _, reachable) in answered.items():
            self._unmatched[name] = {s.job_id: s for s in unknown.get(name, [])[-MAX_UNMATCHED:]}
            self.reconciler.set_reachable(name, reachable)
            self._cursors[name] = (epoch, version)

    async def _pull(self, name: str, handle: Any) -> Pull | None:
        """One CE actor's changes since the cursor (None if it did not answer), having told it what to track."""
        epoch, since = self._cursors[name]
        try:
            pulled: Pull = await self._seam.call(handle, "changes", epoch, since)
            fresh = pulled[0] != epoch
            if fresh:
                # A CE actor instance this loop has not seen yet: Ray restarted it (a crash, its node died) and its
                # __init__ ran again, so its poll loop is not running. Without this it would never poll again.
                await self._seam.call(handle, "start")
            await self._tell_tracking(name, handle, resync=fresh)
        except Exception as exc:  # noqa: BLE001 - a CE actor that cannot answer makes its CE unreachable, no more
            log.warning("CE actor %s did not answer: %s", name, exc)
            return None
        return pulled

    async def _tell_tracking(self, name: str, handle: Any, *, resync: bool) -> None:
        """Tell a CE actor which ids to start and stop tracking: exactly the ids whose state can still change.

        Deltas against :attr:`_told`, each sent only when non-empty; the whole set when ``resync`` (an instance
        this loop has not told anything yet) or when the count the CE actor answers is not ours (it tracked a
        submit's ids itself, or untracked a purge's, that this reconciler never adopted). ``_told`` is updated only
        after a call is answered: an unanswered one is sent again (all three calls are idempotent)."""
        wanted = set(self.reconciler.tracked_job_ids(name))
        told = self._told[name]
        count = len(told)
        if not resync:
            if added := wanted - told:
                count = await self._seam.call(handle, "track", sorted(added))
                told |= added
            if removed := told - wanted:
                count = await self._seam.call(handle, "untrack", sorted(removed))
                told -= removed
        if resync or count != len(wanted):
            self.resyncs += 1
            await self._seam.call(handle, "track_only", sorted(wanted))
            self._told[name] = wanted

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

    async def collect(self, keys: Sequence[str], destination: Path | None = None) -> None:
        """Fetch each key's outputs once it is terminal, then purge it remotely. All or nothing, as :meth:`cancel`.

        The outputs are fetched by the key's CE actor, on *its* node, into the service's output area: under
        ``destination/<key>`` when given (a path on the CE actors' nodes), else the key's declared destination, else
        ``<data_dir>/fetched/<key>``. :meth:`Intercede.collect <intercede.actors.client.Intercede.collect>` then
        brings them to the caller's machine (:meth:`outputs_of`, ``CEActor.read_output``)."""
        destinations: dict[str, Path] = {}
        for key in keys:
            if not isinstance(key, str):
                continue
            if destination is not None:
                destinations[key] = destination / key
                continue
            with contextlib.suppress(KeyError):  # an unknown key: set_phases names it
                declared = self.reconciler.desired(key).destination
                destinations[key] = declared or self.settings.data_dir.absolute() / "fetched" / key
        self.reconciler.set_phases(keys, Phase.COLLECTED, destinations)

    async def outputs_of(self, keys: Sequence[str]) -> list[tuple[str, str, OutputManifest | None]]:
        """Per key (in their order): ``(key, CE, recorded manifest)``; the manifest is None until the outputs were
        fetched, verified and recorded. Its destination is on the CE actor's node. :class:`UnknownKeyError` names
        the keys never declared."""
        rows, unknown = self.reconciler.rows_of(keys)
        _refuse_unknown(unknown)
        return [(r.key, r.ce, self.reconciler.progress(r.key).manifest) for r in rows]

    async def forget(self, keys: Sequence[str]) -> None:
        """Cancel, purge and drop each key. All or nothing, as :meth:`cancel`."""
        self.reconciler.set_phases(keys, Phase.FORGOTTEN)

    # -- queries ----------------------------------------------------------------------------------------------

    async def rows(self, limit: int | None = None) -> list[KeyRow]:
        """Every key's row sorted by key (the first ``limit`` only, if given): moves every row asked for;
        :meth:`rows_of`, :meth:`watch` and :meth:`counts` move less."""
        if limit is None:
            return self.reconciler.snapshot()
        return self.reconciler.rows_of(heapq.nsmallest(max(limit, 0), self.reconciler.keys()))[0]

    async def unknown(self, keys: Sequence[str]) -> list[str]:
        """The keys of ``keys`` never declared (or forgotten), in their order; moves no row."""
        declared = self.reconciler.keys()
        return [key for key in dict.fromkeys(keys) if key not in declared]

    async def rows_of(self, keys: Sequence[str]) -> list[KeyRow]:
        """The rows of ``keys``; :class:`UnknownKeyError` names the keys never declared."""
        rows, unknown = self.reconciler.rows_of(keys)
        _refuse_unknown(unknown)
        return rows

    async def watch(self, keys: Sequence[str], until: Until = "terminal") -> tuple[str, list[str]]:
        """Start watching ``keys`` until they are settled (see :func:`settled`): ``(watch id, keys settled
        already)``. :meth:`settled_since` then answers with the keys that settled since the last ask, so a waiter
        over many keys moves what changed, not every row. :class:`UnknownKeyError` names the keys never declared (and
        no watch starts). A watch ends with :meth:`unwatch`, when all its keys settled, or after
        :data:`WATCH_IDLE` seconds without an ask; at most :data:`MAX_WATCHES` run (the oldest is dropped)."""
        rows, unknown = self.reconciler.rows_of(keys)
        _refuse_unknown(unknown)
        self._expire_watches()
        watch_id = secrets.token_hex(8)
        pending = {r.key: None for r in rows if not self._key_settled(r.key, until)}
        self._watches[watch_id] = _Watch(until, pending, time.monotonic())
        return watch_id, [r.key for r in rows if r.key not in pending]

    async def settled_since(self, watch_id: str) -> list[str] | None:
        """The watched keys that settled since the last ask (they are not asked about again); None if there is no
        such watch (it ended, or this actor restarted: watch again)."""
        self._expire_watches()
        watch = self._watches.get(watch_id)
        if watch is None:
            return None
        watch.asked = time.monotonic()
        done = [key for key in watch.pending if self._key_settled(key, watch.until)]
        for key in done:
            del watch.pending[key]
        if not watch.pending:
            del self._watches[watch_id]
        return done

    async def unwatch(self, watch_id: str) -> None:
        self._watches.pop(watch_id, None)

    def _key_settled(self, key: str, until: Until) -> bool:
        """:func:`settled` for a key, read from the reconciler's state (without building its row)."""
        try:
            desired, progress = self.reconciler.desired(key), self.reconciler.progress(key)
        except KeyError:  # forgotten meanwhile: nothing more to wait for
            return True
        if progress.permanent_error:
            return True
        if until == "collected":
            return progress.manifest is not None and progress.purged
        return progress.state in TERMINAL_STATES or (desired.phase is Phase.CANCELLED and progress.job_id is None)

    def _expire_watches(self) -> None:
        idle = time.monotonic() - WATCH_IDLE
        for watch_id in [w for w, watch in self._watches.items() if watch.asked < idle]:
            del self._watches[watch_id]
        while len(self._watches) >= MAX_WATCHES:
            del self._watches[next(iter(self._watches))]

    async def counts(self) -> list[tuple[str, str | None, str, int]]:
        """How many keys per (CE, state, wanted phase), as ``(ce, state or None, phase, count)`` sorted: what a
        summary needs, whatever the number of keys."""
        counted = self.reconciler.counts()
        return sorted(((ce, state.value if state else None, phase.value, n)
                       for (ce, state, phase), n in counted.items()), key=lambda c: (c[0], c[1] or "", c[2]))

    async def ce_health(self) -> list[CEHealth]:
        """Every CE actor's health, asked concurrently; :class:`TimeoutError` if one does not answer in time."""
        health: list[CEHealth] = await asyncio.gather(*(self._seam.call(h, "health") for h in self._ces.values()))
        return health

    async def recent_actions(self, limit: int = 200) -> list[ActionRecord]:
        return list(self._actions)[-limit:]

    async def stats(self) -> dict[str, Any]:
        """The loop's figures, and per CE what it holds of ours against its limits (``ce_load``)."""
        return {"ticks": self.ticks, "tick_errors": self.tick_errors, "last_tick_seconds": self.last_tick_seconds,
                "last_error": self.last_error, "keys": self.reconciler.key_count(), "resyncs": self.resyncs,
                "ce_load": {c.name: self._ce_load(c.name) for c in self.settings.ce},
                "in_flight": self.reconciler.in_flight, "rss_bytes": _rss_bytes()}

    def _ce_load(self, ce: str) -> dict[str, Any]:
        load, limits = self.reconciler.load(ce), self.reconciler.limits(ce)
        return {"queued": load.queued, "total": load.total, "max_queued": limits.max_queued,
                "max_total": limits.max_total, "in_downtime": limits.in_downtime(time.time())}


def ce_limits(config: CEConfigBase) -> CELimits:
    """The reconciler's limits for a CE, from its configuration (a job unknown longer than ``grace`` is lost)."""
    downtime: bool | tuple[tuple[float, float], ...] = (
        config.downtime if isinstance(config.downtime, bool) else tuple(w.epoch() for w in config.downtime))
    return CELimits(max_queued=config.max_queued, max_total=config.max_total, submit_rate=config.submit_rate,
                    submit_burst=config.submit_burst, downtime=downtime, max_waiting=config.max_waiting,
                    max_held=config.max_held, lost_after=config.grace)


def limits_only_change(running: Settings, wanted: Settings) -> bool:
    """Whether ``wanted`` differs from ``running`` in CE limits only (same CEs, kinds and every other field)."""
    if running.model_copy(update={"ce": []}) != wanted.model_copy(update={"ce": []}):
        return False
    if [c.name for c in running.ce] != [c.name for c in wanted.ce]:
        return False
    for have, want in zip(running.ce, wanted.ce, strict=True):
        if type(have) is not type(want):
            return False
        if have.model_copy(update=dict.fromkeys(LIMIT_FIELDS)) != want.model_copy(update=dict.fromkeys(LIMIT_FIELDS)):
            return False
    return True


Until = Literal["terminal", "collected"]
TERMINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.ABORTED})


def settled(row: KeyRow, until: Until) -> bool:
    """Whether a row (of :meth:`ReconcilerActor.rows`) has got where :meth:`Intercede.wait` waits for: terminal (or
    cancelled before it had a job), or collected; a key with a permanent error counts as settled."""
    if row.permanent_error:
        return True
    if until == "collected":
        return row.collected
    return row.state in TERMINAL_STATES or (row.phase is Phase.CANCELLED and row.job_id is None)


@dataclass(slots=True)
class _Watch:
    until: Until
    pending: dict[str, None]  # ordered, for stable answers
    asked: float  # monotonic time of the last ask


def _rss_bytes() -> int:
    """This process's resident memory (Linux; 0 where /proc is missing): what the keys cost the actor."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _refuse_unknown(unknown: Sequence[str]) -> None:
    if unknown:
        raise UnknownKeyError(f"never declared: {sorted(unknown)[:10]}" +
                              (f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""))
