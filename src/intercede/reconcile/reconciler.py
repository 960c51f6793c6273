"""The reconciler: the WMS's API over the journal, and a tick that diffs what changed and carries the plan out.

The WMS declares keys and moves them between phases (:meth:`Reconciler.declare`, ``cancel``, ``collect``,
``forget``); CE actors report states (``observe``) and reachability. A step (:meth:`Reconciler.fold` then
:meth:`Reconciler.start`) folds in, in one journal transaction, the reports and every result the
:class:`~intercede.reconcile.executor.Executor`'s background units left since the last step, diffs only the keys that
changed or whose backoff ended (and have no unit in flight), and starts the plan's units without waiting for them
(journaling every submit intent first, in one transaction). :meth:`Reconciler.tick` is a step that waits for its plan
to be done and on disk. Every WMS call is journaled before it returns. A new :class:`Reconciler` over the same
journal resumes exactly where the last one stopped: keys with a submit intent and no job id are adopted, never
submitted again.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Iterable, KeysView, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from intercede.errors import InvalidSpecError, UnknownKeyError
from intercede.model import JobSpec, JobState, JobStatus, Usage
from intercede.reconcile.clock import Clock, SystemClock
from intercede.reconcile.executor import Executor
from intercede.reconcile.gateway import CEGateway
from intercede.reconcile.journal_rows import spec_to_json
from intercede.reconcile.journal_store import JournalStore
from intercede.reconcile.limits import CELimits, CELoad
from intercede.reconcile.policy import RetryPolicy
from intercede.reconcile.state import Action, Desired, Observation, Phase, Progress
from intercede.reconcile.tracker import ReconcileState

__all__ = ["Declaration", "KeyRow", "Reconciler"]

_LISTED = 10


def _listed(items: Sequence[str]) -> str:
    shown = "; ".join(items[:_LISTED])
    return shown + (f"; ... and {len(items) - _LISTED} more" if len(items) > _LISTED else "")


class Declaration(Protocol):
    """One key as the WMS declares it (validated into a :class:`Desired` by :meth:`Reconciler.declare_many`)."""

    @property
    def key(self) -> str: ...
    @property
    def ce(self) -> str: ...
    @property
    def spec(self) -> JobSpec: ...
    @property
    def phase(self) -> Phase: ...
    @property
    def destination(self) -> Path | None: ...


@dataclass(frozen=True, slots=True)
class _Declared:
    key: str
    ce: str
    spec: JobSpec
    phase: Phase
    destination: Path | None


@dataclass(frozen=True, slots=True)
class KeyRow:
    """One key as a query sees it: the typed record of :meth:`Reconciler.snapshot` and of the service's ``rows``,
    ``rows_of`` and ``wait`` (``from intercede import KeyRow``). ``phase`` and ``state`` are string enums (they
    compare equal to their values, e.g. ``row.state == "Done"``); ``state`` is None until a state was observed;
    ``outputs`` is the recorded manifest's destination, on the CE actor's node."""

    key: str
    ce: str
    phase: Phase
    state: JobState | None
    native_state: str
    exit_code: int | None
    job_id: str | None
    last_seen: float | None
    attempts: int
    last_error: str | None
    permanent_error: str | None
    collected: bool = False  # outputs fetched, verified and recorded, and the remote job purged
    outputs: Path | None = None
    waiting_reason: str | None = None  # why its submit is held back by the CE's limits ("CE full: 20/20 queued")
    policy_reason: str | None = None  # why intercede ended the job itself (a per-state timeout, lost)
    reason: str = ""  # the resource's reason for the state
    usage: Usage | None = None  # what the finished job used, as the resource reports it


class Reconciler:
    """Drives every declared key towards its wanted phase through the CEs' gateways.

    Not thread-safe: one asyncio task (a Ray actor) owns it. ``tick`` calls are serialised; the other methods may be
    called between or during ticks. ``concurrency`` bounds the units of work in flight in all, ``max_in_flight[ce]``
    those of one CE (unbounded for a CE not named; it is also that CE's submit budget: a plan submits at most as many
    keys as the CE has room for); ``chunk`` bounds the ids per bulk call (find_by_tag, cancel, purge).
    """

    def __init__(self, journal: JournalStore, gateways: Mapping[str, CEGateway], *, policy: RetryPolicy | None = None,
                 clock: Clock | None = None, concurrency: int = 32, chunk: int = 500,
                 max_in_flight: Mapping[str, int] | None = None) -> None:
        self._journal = journal
        self._gateways: dict[str, CEGateway] = dict(gateways)
        self._policy = policy or RetryPolicy()
        self._clock: Clock = clock or SystemClock()
        self._tick_lock = asyncio.Lock()
        self._state = ReconcileState(self._policy)
        # Per CE, the keys a submit budget deferred, in the order deferred (see _unpark).
        self._parked: dict[str, dict[str, None]] = {}
        self._executor = Executor(journal, self._state, self._gateways, self._policy, self._clock,
                                  concurrency=concurrency, chunk=chunk, max_in_flight=max_in_flight)
        desired, progress = journal.load()
        for key, wanted in desired.items():
            # Everything is dirty after a restart: the first tick re-plans every key from its journaled progress.
            self._state.put(wanted, progress.get(key, Progress()))

    # ---- the WMS's API

    @property
    def policy(self) -> RetryPolicy:
        return self._policy

    def declare(self, key: str, ce: str, spec: JobSpec, phase: Phase = Phase.RUNNING,
                destination: Path | None = None) -> Desired:
        """Declare one key; see :meth:`declare_many`."""
        return self.declare_many([_Declared(key, ce, spec, phase, destination)])[0]

    def declare_many(self, declarations: Sequence[Declaration]) -> list[Desired]:
        """Declare keys, all or nothing: every declaration is checked before any is journaled, and if one is refused
        none is applied. Idempotent for a key already declared with the same CE and spec (the stored declaration is
        returned; its phase may have moved on). Raises :class:`InvalidSpecError` naming every refused key: a bad key,
        an unknown CE, a multi-copy spec, a key already declared (or declared twice in the batch) with another CE or
        spec, or a key that is being forgotten (declare it again once it is gone from :meth:`snapshot`)."""
        checked, problems = self._check_declarations(declarations)
        if problems:
            raise InvalidSpecError(f"declare refused for {len(problems)} of {len(declarations)} declaration(s), "
                                   f"nothing was declared: {_listed(problems)}")
        # Checked in memory, where nothing can change before these synchronous writes; one transaction (one fsync)
        # for the whole batch, so a journal failure (JournalError: the disk) leaves none of it written or in memory.
        with self._journal.batch(f"declare {len(checked)} key(s)"):
            stored = [self._journal.declare(desired) for desired in checked]
        for desired in stored:
            if desired.key not in self._state:
                self._state.put(desired)
        self._executor.nudge()
        return stored

    def check_declarations(self, declarations: Sequence[Declaration]) -> list[str]:
        """What :meth:`declare_many` would refuse, one line per refused declaration (empty: it would accept all).
        Changes nothing."""
        return self._check_declarations(declarations)[1]

    def _check_declarations(self, declarations: Sequence[Declaration]) -> tuple[list[Desired], list[str]]:
        checked: list[Desired] = []
        problems: list[str] = []
        batch: dict[str, Desired] = {}
        for index, d in enumerate(declarations):
            try:
                if not isinstance(getattr(d, "spec", None), JobSpec):
                    raise InvalidSpecError(f"declaration #{index}: not a job request with a JobSpec "
                                           f"(got {type(d).__name__})")
                if d.ce not in self._gateways:
                    raise InvalidSpecError(f"job key {d.key!r}: unknown CE {d.ce!r} "
                                           f"(known: {', '.join(sorted(self._gateways))})")
                desired = Desired(d.key, d.ce, d.spec, Phase(d.phase), d.destination)
                self._check_against(self._state.desired.get(desired.key), desired, "already declared")
                self._check_against(batch.get(desired.key), desired, "declared twice in this batch")
            except (InvalidSpecError, AttributeError, TypeError, ValueError) as exc:
                problems.append(str(exc) if isinstance(exc, InvalidSpecError)
                                else f"declaration #{index}: {type(exc).__name__}: {exc}")
                continue
            batch[desired.key] = desired
            checked.append(desired)
        return checked, problems

    @staticmethod
    def _check_against(known: Desired | None, new: Desired, what: str) -> None:
        if known is None:
            return
        if known.phase is Phase.FORGOTTEN:
            raise InvalidSpecError(f"job key {new.key!r} is being forgotten; declare it again once the forget has "
                                   "completed (the key is gone from the rows)")
        if known.ce != new.ce:
            raise InvalidSpecError(f"job key {new.key!r} is {what} on CE {known.ce!r}, not {new.ce!r}")
        if known.spec is not new.spec and spec_to_json(known.spec) != spec_to_json(new.spec):
            raise InvalidSpecError(f"job key {new.key!r} is {what} with a different spec")

    def cancel(self, key: str) -> Desired:
        """Want the key's job cancelled (a key never submitted will not be); once it has ended, its remote files are
        purged ``policy.purge_cancelled_after`` seconds after the cancel (until then a collect still gets them)."""
        return self.set_phases([key], Phase.CANCELLED)[0]

    def collect(self, key: str, destination: Path) -> Desired:
        """Want the key's outputs in ``destination`` (absolute) once the job ends, then the remote job purged."""
        return self.set_phases([key], Phase.COLLECTED, {key: destination})[0]

    def forget(self, key: str) -> Desired:
        """Want nothing left of the key: cancel, purge, then drop it from the journal. Final."""
        return self.set_phases([key], Phase.FORGOTTEN)[0]

    def set_phases(self, keys: Sequence[str], phase: Phase,
                   destinations: Mapping[str, Path] | None = None) -> list[Desired]:
        """Move ``keys`` to ``phase`` (COLLECTED: each to its ``destinations[key]``), all or nothing: every key is
        checked first. Raises :class:`UnknownKeyError` naming the keys never declared (or already forgotten), and
        :class:`InvalidSpecError` naming the keys being forgotten (final), or, for COLLECTED, keys with a bad
        destination or whose job was purged without its outputs (a cancelled key: nothing is left to collect)."""
        destinations = destinations or {}
        unknown = sorted({str(key) for key in keys if key not in self._state})
        if unknown:
            raise UnknownKeyError(f"{len(unknown)} job key(s) never declared (or already forgotten): "
                                  f"{_listed([repr(k) for k in unknown])}; nothing was changed")
        problems: list[str] = []
        for key in dict.fromkeys(keys):
            current, done = self._state.desired[key], self._state.progress[key]
            try:
                if current.phase is Phase.FORGOTTEN and phase is not Phase.FORGOTTEN:
                    raise InvalidSpecError(f"job key {key!r} is being forgotten; it cannot be {phase.value} any more")
                if phase is Phase.COLLECTED and done.purged and done.manifest is None:
                    raise InvalidSpecError(f"job key {key!r}: its job was purged at the CE without its outputs "
                                           "(it was cancelled); there is nothing left to collect")
                current.with_phase(phase, destinations.get(key))
            except InvalidSpecError as exc:
                problems.append(str(exc))
        if problems:
            raise InvalidSpecError(f"{phase.value} refused for {len(problems)} of {len(keys)} key(s), nothing was "
                                   f"changed: {_listed(problems)}")
        updated = []
        for key in dict.fromkeys(keys):
            new = self._journal.set_phase(key, phase, destinations.get(key))
            self._state.put(new)
            updated.append(new)
        self._executor.nudge()
        return updated

    def observe(self, ce: str, statuses: Iterable[JobStatus]) -> list[JobStatus]:
        """Fold a CE's status reports in; a state never moves backwards. Only reports that change something are
        journaled (in one transaction) and make keys dirty, so polling a million quiet jobs costs no disk write and
        no diff. Returns the reports of job ids it does not know (yet): after a restart a CE reports jobs that are
        only adopted later, and the caller offers those reports again then."""
        changed, unknown = self._changed_observations(ce, statuses)
        if changed:
            for key, progress in self._journal.record_observations(changed, self._clock.now()).items():
                self._state.put_progress(key, progress)
        return unknown

    def _changed_observations(self, ce: str, statuses: Iterable[JobStatus]) -> tuple[list[Observation],
                                                                                     list[JobStatus]]:
        """The reports that change a key's progress, and those of unknown job ids; the others' ``last_seen`` is
        kept in memory at once."""
        now = self._clock.now()
        changed: list[Observation] = []
        unknown: list[JobStatus] = []
        for status in statuses:
            key = self._state.key_for_job(ce, status.job_id)
            if key is None:
                unknown.append(status)
                continue
            old = self._state.progress[key]
            new = old.with_observation(status, now)
            if new.same_observation(old):
                self._state.put_progress(key, new, dirty=False)  # last_seen only: kept in memory
            else:
                changed.append(Observation(key, status))
        return changed, unknown

    def set_reachable(self, ce: str, reachable: bool) -> None:
        """Mark a CE (un)reachable: an unreachable CE's keys get no action and none of its jobs is failed."""
        self._state.set_reachable(ce, reachable)

    def set_limits(self, ce: str, limits: CELimits) -> None:
        """Set a CE's limits, at run time too: held-back keys are re-planned against them on the next tick."""
        self._state.set_limits(ce, limits)

    def limits(self, ce: str) -> CELimits:
        return self._state.limits_of(ce)

    def load(self, ce: str) -> CELoad:
        """What ``ce`` holds of ours by the journal's record (jobs not running yet, jobs not ended)."""
        return self._state.load_of(ce)

    def set_gateway(self, ce: str, gateway: CEGateway) -> None:
        """Add or replace a CE's gateway; its keys are re-planned on the next tick."""
        self._gateways[ce] = gateway
        self._state.mark_dirty(self._state.keys_of(ce))

    def tracked_job_ids(self, ce: str) -> list[str]:
        """The job ids a CE actor should poll for this reconciler: known, not terminal, not purged."""
        return self._state.tracked_job_ids(ce)

    def desired(self, key: str) -> Desired:
        return self._state.desired[key]

    def progress(self, key: str) -> Progress:
        return self._state.progress[key]

    def snapshot(self) -> list[KeyRow]:
        """One row per key, sorted by key."""
        return [self._row(key) for key in sorted(self._state.desired)]

    def rows_of(self, keys: Iterable[str]) -> tuple[list[KeyRow], list[str]]:
        """The rows of ``keys`` (in their order, each once) and the keys never declared: costs follow the keys asked
        for, not the keys declared."""
        rows, unknown = [], []
        for key in dict.fromkeys(keys):
            if key in self._state.desired:
                rows.append(self._row(key))
            else:
                unknown.append(key)
        return rows, unknown

    def key_count(self) -> int:
        return len(self._state.desired)

    def keys(self) -> KeysView[str]:
        """Every declared key (a live view, in no order)."""
        return self._state.desired.keys()

    def counts(self) -> Counter[tuple[str, JobState | None, Phase]]:
        """How many keys there are per (CE, state, wanted phase); state None: no state observed yet."""
        desired, progress = self._state.desired, self._state.progress
        return Counter((d.ce, progress[key].state, d.phase) for key, d in desired.items())

    def _row(self, key: str) -> KeyRow:
        d, p = self._state.desired[key], self._state.progress[key]
        return KeyRow(key, d.ce, d.phase, p.state, p.native_state, p.exit_code, p.job_id, p.last_seen, p.attempts,
                      p.last_error, p.permanent_error, collected=p.manifest is not None and p.purged,
                      outputs=p.manifest.destination if p.manifest else None,
                      waiting_reason=self._state.held_back(key), policy_reason=p.policy_reason, reason=p.reason,
                      usage=p.usage)

    def close(self) -> None:
        """Cancel the units in flight (their results are not written) and close the journal."""
        self._executor.cancel_all()
        self._journal.close()

    # ---- the tick

    def fold(self, reports: Mapping[str, Iterable[JobStatus]] | None = None) -> dict[str, list[JobStatus]]:
        """Fold in, in ONE journal transaction, the CEs' status ``reports`` (as :meth:`observe`) and every result
        the background units left since the last fold; memory follows only once it is on disk. Returns, per CE, the
        reports of job ids not known (yet). Raises :class:`JournalError` with nothing of it in memory (the units'
        results stay pending; the caller offers the reports again), or the failure of a unit that died."""
        changed: list[Observation] = []
        unknown: dict[str, list[JobStatus]] = {}
        for ce, statuses in (reports or {}).items():
            mine, unknown[ce] = self._changed_observations(ce, statuses)
            changed += mine
        if not changed:
            self._executor.fold()
            return unknown
        with self._journal.batch(f"record {len(changed)} observation(s) and the results of a step"):
            observed = self._journal.record_observations(changed, self._clock.now())
            written = self._executor.write_pending()
        for key, progress in observed.items():
            self._state.put_progress(key, progress)
        self._executor.apply(written)
        self._executor.raise_failures()
        return unknown

    def start(self, budget: Mapping[str, int] | None = None) -> list[Action]:
        """Diff the keys that changed (or whose backoff ended) and have no unit in flight, and start the plan in
        the background (every submit intent journaled first, in one transaction); returns the plan.

        A CE's submits are capped by ``budget`` (default ``policy.submits_per_tick``) and by its room for more units
        (``max_in_flight`` less its units in flight). Raises :class:`JournalError` (nothing started) if the intents
        cannot be written."""
        room = self._executor.room()
        if room:
            wanted = dict(budget or {})
            budget = wanted | {ce: min(wanted.get(ce, self._policy.submits_per_tick), free)
                               for ce, free in room.items()}
        self._unpark(room)
        plan = self._state.plan(self._clock.now(), budget, self._executor.busy(), requeue_deferred=False)
        for key in plan.deferred:
            self._parked.setdefault(self._state.desired[key].ce, {})[key] = None
        self._executor.start(plan.actions)
        return list(plan.actions)

    def _unpark(self, room: Mapping[str, int]) -> None:
        """Mark dirty the keys a submit budget deferred, first deferred first: for a CE with a concurrency budget
        only as many as it has room for (re-diffing ten thousand waiting keys at every step would cost what they
        are, not what changed), for the others all of them."""
        for ce, parked in self._parked.items():
            take = len(parked) if ce not in room else min(room[ce], len(parked))
            keys = list(itertools.islice(parked, take))
            for key in keys:
                del parked[key]
            self._state.mark_dirty(keys)

    def hungry(self) -> bool:
        """Whether a CE has keys waiting for room to submit and half its ``max_in_flight`` or more free: its work
        runs low, so the next step should come at once and refill it, not after a pause to gather results."""
        return self._executor.running_low(ce for ce, parked in self._parked.items() if parked)

    def nudge(self) -> None:
        """Wake :meth:`wait_for_results` (something new came for the next step to fold or plan)."""
        self._executor.nudge()

    async def wait_for_results(self, timeout: float | None) -> bool:
        """Wait until a background unit ends, or the WMS changed something, at most ``timeout`` seconds; whether
        either happened."""
        return await self._executor.wait_for_any(timeout)

    @property
    def in_flight(self) -> int:
        """Units of work running in the background."""
        return self._executor.in_flight

    async def tick(self, budget: Mapping[str, int] | None = None) -> list[Action]:
        """A step that waits for its plan: fold what is pending, start the plan (:meth:`start`), then fold the
        units' results in as they end until none is in flight (:meth:`Executor.settle`); returns the plan.

        Raises :class:`JournalError` if the journal cannot be written; any other failure is recorded against its
        keys (a ``BaseException`` of a unit, the process going down, cancels the others and is raised).
        """
        async with self._tick_lock:
            self._executor.fold()
            actions = self.start(budget)
            await self._executor.settle()
            return actions
