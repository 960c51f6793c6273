"""The in-memory working set of a reconciler, built so that a tick costs in proportion to churn, not to jobs.

:class:`ReconcileState` keeps desired state, progress and reachability in dicts, plus

* a *dirty set*: keys whose declaration, progress or observation changed since they were last diffed;
* a heap of wake-up times (:func:`~intercede.reconcile.diff.wake_at`): keys whose plan changes only because time
  passes (a backoff ends, a cancel is due again) are re-diffed when that time comes, and not before;
* indexes by CE and by (CE, job id), so status reports and polling lists need no scan.

A tick diffs ``due(now)`` = dirty keys + keys whose wake-up passed. Keys skipped because their CE is unreachable lose
their dirtiness, which is safe because :meth:`set_reachable` marks every key of a CE dirty when it comes back.
Not thread-safe: one owner (an asyncio task or a Ray actor) mutates it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet

from intercede.reconcile.diff import NO_PROGRESS, Plan, plan, wake_at
from intercede.reconcile.policy import RetryPolicy
from intercede.reconcile.state import Desired, Progress

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

    # ---- reading

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
        desired = self._desired.pop(key, None)
        progress = self._progress.pop(key, None)
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
        :meth:`touch`-es them when it has ended); keys deferred by a submit budget stay dirty for the next tick,
        unless ``requeue_deferred`` is False (the caller keeps them and marks them dirty when there is room)."""
        keys = self.due(now)
        if busy:
            keys -= busy
        result = plan(keys, self._desired, self._progress, self._reachable, now, self.policy, budget)
        if requeue_deferred:
            self._dirty.update(result.deferred)
        return result

    # ---- internals

    def _set_progress(self, key: str, progress: Progress) -> None:
        ce = self._desired[key].ce
        old = self._progress.get(key, NO_PROGRESS)
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

    def _changed(self, key: str) -> None:
        self._dirty.add(key)
        at = wake_at(self._desired[key], self._progress.get(key, NO_PROGRESS), self.policy)
        if at is None:
            self._wake_at.pop(key, None)
        elif self._wake_at.get(key) != at:
            self._wake_at[key] = at
            heapq.heappush(self._wakeups, (at, key))
