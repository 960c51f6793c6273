"""The reconciler: the WMS's API over the journal, and a tick that diffs what changed and carries the plan out.

The WMS declares keys and moves them between phases (:meth:`Reconciler.declare`, ``cancel``, ``collect``,
``forget``); CE actors report states (``observe``) and reachability; each ``tick`` diffs only the keys that changed
or whose backoff ended and hands the plan to the :class:`~intercede.reconcile.executor.Executor`, which journals
before acting. Every WMS call is journaled before it returns. A new :class:`Reconciler` over the same journal resumes
exactly where the last one stopped: keys with a submit intent and no job id are adopted, never submitted again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from intercede.errors import InvalidSpecError
from intercede.model import JobSpec, JobState, JobStatus
from intercede.reconcile.clock import Clock, SystemClock
from intercede.reconcile.executor import Executor
from intercede.reconcile.gateway import CEGateway
from intercede.reconcile.journal import Journal
from intercede.reconcile.policy import RetryPolicy
from intercede.reconcile.state import Action, Desired, Observation, Phase, Progress
from intercede.reconcile.tracker import ReconcileState

__all__ = ["KeyRow", "Reconciler"]


@dataclass(frozen=True, slots=True)
class KeyRow:
    """One key as a query sees it (a row of :meth:`Reconciler.snapshot`)."""

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


class Reconciler:
    """Drives every declared key towards its wanted phase through the CEs' gateways.

    Not thread-safe: one asyncio task (a Ray actor) owns it. ``tick`` calls are serialised; the other methods may be
    called between or during ticks. ``concurrency`` bounds the gateway calls in flight; ``chunk`` bounds the ids per
    bulk call (find_by_tag, cancel, purge).
    """

    def __init__(self, journal: Journal, gateways: Mapping[str, CEGateway], *, policy: RetryPolicy | None = None,
                 clock: Clock | None = None, concurrency: int = 32, chunk: int = 500) -> None:
        self._journal = journal
        self._gateways: dict[str, CEGateway] = dict(gateways)
        self._policy = policy or RetryPolicy()
        self._clock: Clock = clock or SystemClock()
        self._tick_lock = asyncio.Lock()
        self._state = ReconcileState(self._policy)
        self._executor = Executor(journal, self._state, self._gateways, self._policy, self._clock,
                                  concurrency=concurrency, chunk=chunk)
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
        """Declare a key (idempotent for the same CE and spec; returns the stored declaration, whose phase may have
        moved on). Raises :class:`InvalidSpecError` for a bad key, an unknown CE, a multi-copy spec, or a key already
        declared with another CE or spec."""
        if ce not in self._gateways:
            raise InvalidSpecError(f"job key {key!r}: unknown CE {ce!r} (known: {', '.join(sorted(self._gateways))})")
        stored = self._journal.declare(Desired(key, ce, spec, phase, destination))
        if key not in self._state:
            self._state.put(stored)
        return stored

    def cancel(self, key: str) -> Desired:
        """Want the key's job cancelled (a key never submitted will not be)."""
        return self._set_phase(key, Phase.CANCELLED)

    def collect(self, key: str, destination: Path) -> Desired:
        """Want the key's outputs in ``destination`` (absolute) once the job ends, then the remote job purged."""
        return self._set_phase(key, Phase.COLLECTED, destination)

    def forget(self, key: str) -> Desired:
        """Want nothing left of the key: cancel, purge, then drop it from the journal. Final."""
        return self._set_phase(key, Phase.FORGOTTEN)

    def _set_phase(self, key: str, phase: Phase, destination: Path | None = None) -> Desired:
        current = self._state.desired.get(key)
        if current is None:
            raise KeyError(key)
        if current.phase is Phase.FORGOTTEN and phase is not Phase.FORGOTTEN:
            raise InvalidSpecError(f"job key {key!r} is being forgotten; it cannot be {phase.value} any more")
        updated = self._journal.set_phase(key, phase, destination)
        self._state.put(updated)
        return updated

    def observe(self, ce: str, statuses: Iterable[JobStatus]) -> list[JobStatus]:
        """Fold a CE's status reports in; a state never moves backwards. Only reports that change something are
        journaled (in one transaction) and make keys dirty, so polling a million quiet jobs costs no disk write and
        no diff. Returns the reports of job ids it does not know (yet): after a restart a CE reports jobs that are
        only adopted later, and the caller offers those reports again then."""
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
        if changed:
            for key, progress in self._journal.record_observations(changed, now).items():
                self._state.put_progress(key, progress)
        return unknown

    def set_reachable(self, ce: str, reachable: bool) -> None:
        """Mark a CE (un)reachable: an unreachable CE's keys get no action and none of its jobs is failed."""
        self._state.set_reachable(ce, reachable)

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
        rows = []
        for key in sorted(self._state.desired):
            d, p = self._state.desired[key], self._state.progress[key]
            rows.append(KeyRow(key, d.ce, d.phase, p.state, p.native_state, p.exit_code, p.job_id, p.last_seen,
                               p.attempts, p.last_error, p.permanent_error,
                               collected=p.manifest is not None and p.purged,
                               outputs=p.manifest.destination if p.manifest else None))
        return rows

    def close(self) -> None:
        self._journal.close()

    # ---- the tick

    async def tick(self, budget: Mapping[str, int] | None = None) -> list[Action]:
        """Diff the keys that changed (or whose backoff ended) and carry the plan out; returns the plan.

        ``budget`` caps the submits per CE for this tick (default ``policy.submits_per_tick``). Raises
        :class:`JournalError` if the journal cannot be written; any other failure is recorded against its keys.
        """
        async with self._tick_lock:
            plan = self._state.plan(self._clock.now(), budget)
            await self._executor.execute(plan.actions)
            return list(plan.actions)
