"""The in-memory working set of a reconciler, built so that a tick costs in proportion to churn, not to jobs.

:class:`ReconcileState` keeps desired state, progress and reachability in dicts, plus

* a *dirty set*: keys whose declaration, progress or observation changed since they were last diffed;
* a heap of wake-up times (:func:`~intercede.reconcile.diff.wake_at`): keys whose plan changes only because time
  passes (a backoff ends, a cancel is due again) are re-diffed when that time comes, and not before;
* indexes by CE and by (CE, job id), so status reports and polling lists need no scan;
* per CE, its :class:`~intercede.reconcile.limits.CELimits`, what it holds of ours (:class:`CELoad`, kept up to date
  on every progress change, so a tick never counts) and its submit-rate bucket; and per key held back by a limit, why.

A tick diffs ``due(now)`` = dirty keys + keys whose wake-up passed. Keys skipped because their CE is unreachable lose
their dirtiness, which is safe because :meth:`set_reachable` marks every key of a CE dirty when it comes back.
Not thread-safe: one owner (an asyncio task or a Ray actor) mutates it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet

from intercede.reconcile.diff import NO_PROGRESS, Plan, plan, wake_at
from intercede.reconcile.limits import UNLIMITED, CELimits, CELoad, TokenBucket, counts_as_queued, counts_in_total
from intercede.reconcile.policy import RetryPolicy
from intercede.reconcile.state import Desired, Progress, Submit

__all__ = ["ReconcileState"]


class ReconcileState:
    """Desired state, progress and reachability of every key, with the bookkeeping that makes ticks incremental."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self._desired: dict[str, Desired] = {}
        self._progress: dict[str, Progress] = {}
        self._reachable: dict[str, bool] = {}
        self._keys_by_ce: dict[str, set[str]] = {}
        self._key_by_job: dict[tuple[str, str], str] = {}
        # Per CE, the job ids worth polling (dict for insertion order: polls come out stable).
        self._tracked: dict[str, dict[str, None]] = {}
        self._dirty: set[str] = set()
        self._wakeups: list[tuple[float, str]] = []
        self._wake_at: dict[str, float] = {}
        self._limits: dict[str, CELimits] = {}
        self._queued: dict[str, int] = {}
        self._total: dict[str, int] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._held_back: dict[str, str] = {}

    # ---- reading

    def limits_of(self, ce: str) -> CELimits:
        return self._limits.get(ce, UNLIMITED)

    def load_of(self, ce: str) -> CELoad:
        """What ``ce`` holds of ours, by the record: jobs not running yet, and jobs not ended."""
        return CELoad(self._queued.get(ce, 0), self._total.get(ce, 0))

    def held_back(self, key: str) -> str | None:
        """Why the key's submit is held back by its CE's limits (None: it is not)."""
        return self._held_back.get(key)

    @property
    def desired(self) -> Mapping[str, Desired]:
        return self._desired

    @property
    def progress(self) -> Mapping[str, Progress]:
        return self._progress

    @property
    def reachable(self) -> Mapping[str, bool]:
        return self._reachable

    def __contains__(self, key: object) -> bool:
        return key in self._desired

    def __len__(self) -> int:
        return len(self._desired)

    def keys_of(self, ce: str) -> frozenset[str]:
        return frozenset(self._keys_by_ce.get(ce, ()))

    def key_for_job(self, ce: str, job_id: str) -> str | None:
        return self._key_by_job.get((ce, job_id))

    def tracked_job_ids(self, ce: str) -> list[str]:
        """Job ids on ``ce`` whose state can still change: known, not terminal, not purged."""
        return list(self._tracked.get(ce, ()))

    @property
    def dirty(self) -> frozenset[str]:
        return frozenset(self._dirty)

    # ---- writing

    def put(self, desired: Desired, progress: Progress | None = None) -> None:
        """Set a key's declaration (and progress, if given; a new key starts with none) and mark it dirty."""
        old = self._desired.get(desired.key)
        if old is not None and old.ce != desired.ce:
            self._keys_by_ce[old.ce].discard(desired.key)
        self._desired[desired.key] = desired
        self._keys_by_ce.setdefault(desired.ce, set()).add(desired.key)
        if progress is not None:
            self._set_progress(desired.key, progress)
        elif desired.key not in self._progress:
            self._set_progress(desired.key, NO_PROGRESS)
        self._changed(desired.key)

    def put_progress(self, key: str, progress: Progress, *, dirty: bool = True) -> None:
        """Replace a declared key's progress. ``dirty=False`` is for changes no plan depends on (``last_seen``)."""
        if key not in self._desired:
            raise KeyError(key)
        self._set_progress(key, progress)
        if dirty:
            self._changed(key)

    def remove(self, key: str) -> None:
        """Drop every trace of a key (it was forgotten)."""
        desired = self._desired.get(key)
        if desired is not None and key in self._progress:
            self._count(desired.ce, self._progress[key], -1)
        self._desired.pop(key, None)
        progress = self._progress.pop(key, None)
        self._held_back.pop(key, None)
        if desired is not None:
            self._keys_by_ce[desired.ce].discard(key)
            if progress is not None and progress.job_id is not None:
                self._key_by_job.pop((desired.ce, progress.job_id), None)
                self._tracked.get(desired.ce, {}).pop(progress.job_id, None)
        self._dirty.discard(key)
        self._wake_at.pop(key, None)  # its heap entry goes stale and is skipped when popped

    def mark_dirty(self, keys: Iterable[str]) -> None:
        self._dirty.update(k for k in keys if k in self._desired)

    def touch(self, keys: Iterable[str]) -> None:
        """Mark keys dirty and re-arm their wake-ups, as a change would: for keys that were left out of plans while
        busy (a unit of work in flight), whose due wake-up was then taken without a diff."""
        for key in keys:
            if key in self._desired:
                self._wake_at.pop(key, None)
                self._changed(key)

    def set_reachable(self, ce: str, reachable: bool) -> None:
        """Record a CE's reachability. Coming back marks all its keys dirty (they were skipped while it was away)."""
        was = self._reachable.get(ce, True)
        self._reachable[ce] = reachable
        if reachable and not was:
            self._dirty.update(self._keys_by_ce.get(ce, ()))

    def set_limits(self, ce: str, limits: CELimits) -> None:
        """Set a CE's limits (at run time too): its keys are re-planned (their wake-ups follow the new timeouts), and
        its submit-rate bucket keeps its tokens under a new rate."""
        if self._limits.get(ce, UNLIMITED) == limits:
            return
        self._limits[ce] = limits
        bucket = self._buckets.get(ce)
        if limits.submit_rate is None:
            self._buckets.pop(ce, None)
        elif bucket is not None:
            self._buckets[ce] = bucket.with_settings(limits.submit_rate, limits.submit_burst)
        for key in self._keys_by_ce.get(ce, ()):
            self._changed(key)

    # ---- ticking

    def due(self, now: float) -> set[str]:
        """Take the keys to diff now: the dirty ones and those whose wake-up time has come. Clears the dirty set."""
        while self._wakeups and self._wakeups[0][0] <= now:
            at, key = heapq.heappop(self._wakeups)
            if self._wake_at.get(key) == at:  # else a stale entry: the key's wake-up moved or it was removed
                del self._wake_at[key]
                self._dirty.add(key)
        keys, self._dirty = self._dirty, set()
        return keys

    def plan(self, now: float, budget: Mapping[str, int] | None = None,
             busy: AbstractSet[str] = frozenset(), *, requeue_deferred: bool = True) -> Plan:
        """Diff the due keys but the ``busy`` ones (a unit of work is in flight for them: their owner
        :meth:`touch`-es them when it has ended). Keys deferred by a submit budget or a CE's limits keep their reason
        and stay dirty for the next tick, unless ``requeue_deferred`` is False (the caller keeps them and marks them
        dirty when there is room); the submits planned are taken from each CE's rate bucket."""
        for ce, limits in self._limits.items():
            if limits.submit_rate is not None and ce not in self._buckets:
                self._buckets[ce] = TokenBucket.full(limits.submit_rate, limits.submit_burst, now)
        keys = self.due(now)
        if busy:
            keys -= busy
        loads = {ce: self.load_of(ce) for ce in self._limits}
        result = plan(keys, self._desired, self._progress, self._reachable, now, self.policy, budget,
                      self._limits, loads, self._buckets)
        if requeue_deferred:
            self._dirty.update(result.deferred)
        for key in keys:
            self._held_back.pop(key, None)
        self._held_back.update(result.held_back)
        submitted: dict[str, int] = {}
        for action in result.actions:
            if isinstance(action, Submit):
                ce = self._desired[action.key].ce
                submitted[ce] = submitted.get(ce, 0) + 1
        for ce, count in submitted.items():
            if ce in self._buckets:
                self._buckets[ce] = self._buckets[ce].take(count, now)
        return result

    # ---- internals

    def _set_progress(self, key: str, progress: Progress) -> None:
        ce = self._desired[key].ce
        old = self._progress.get(key)
        if old is not None:
            self._count(ce, old, -1)
        self._count(ce, progress, +1)
        old = old or NO_PROGRESS
        if old.job_id is not None and old.job_id != progress.job_id:
            self._key_by_job.pop((ce, old.job_id), None)
            self._tracked.get(ce, {}).pop(old.job_id, None)
        self._progress[key] = progress
        if progress.job_id is not None:
            self._key_by_job[(ce, progress.job_id)] = key
            tracked = self._tracked.setdefault(ce, {})
            if progress.purged or progress.terminal:
                tracked.pop(progress.job_id, None)
            else:
                tracked[progress.job_id] = None

    def _count(self, ce: str, progress: Progress, sign: int) -> None:
        if counts_in_total(progress):
            self._total[ce] = self._total.get(ce, 0) + sign
            if counts_as_queued(progress):
                self._queued[ce] = self._queued.get(ce, 0) + sign

    def _changed(self, key: str) -> None:
        self._dirty.add(key)
        desired = self._desired[key]
        limits = self._limits.get(desired.ce, UNLIMITED)
        at = wake_at(desired, self._progress.get(key, NO_PROGRESS), self.policy, limits)
        if at is None:
            self._wake_at.pop(key, None)
        elif self._wake_at.get(key) != at:
            self._wake_at[key] = at
            heapq.heappush(self._wakeups, (at, key))
