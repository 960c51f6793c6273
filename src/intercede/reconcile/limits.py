"""Per-CE limits of a pilot factory: how much a CE may hold, how fast it is fed, when it is closed. Pure.

A WMS fills each CE up to its limits and no further (DIRAC's SiteDirector): :class:`CELimits` says how far, and
:func:`submit_room` says how many submits a CE takes now and, when it takes none, why (the reason is shown per key).
Everything is computed from the reconciler's own record of each key (:class:`~intercede.reconcile.state.Progress`),
never from the CE's counts: a job the reconciler submitted counts from the moment its submit intent is journaled,
whether or not the CE lists it yet, and a held or unknown job counts as queued (DIRAC #8208, #2226: pre-batch and held
jobs left out of the count make submission never stop).

Per-state timeouts (Harvester/aCT ``maxtime<state>``) are here too: :func:`overdue` says when a waiting or held job has
waited too long (it is cancelled with that reason), :func:`lost` when a job reported unknown stays so past the grace
(it is declared lost: a final state with that reason, never silently dropped).

The submit rate is a token bucket (:class:`TokenBucket`), a value: time is passed in, so the same inputs always give
the same answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from intercede.model import JobState
from intercede.reconcile.state import Progress

__all__ = [
    "UNLIMITED",
    "CELimits",
    "CELoad",
    "TokenBucket",
    "counts_as_queued",
    "counts_in_total",
    "is_held",
    "lost",
    "overdue",
    "submit_room",
]


@dataclass(frozen=True, slots=True)
class CELimits:
    """One CE's limits (None: no limit). Raises ValueError for a negative or non-finite value.

    * ``max_queued``: jobs at the CE that are not running yet (submitted, waiting, held, unknown) at most.
    * ``max_total``: jobs at the CE that have not ended (queued or running) at most.
    * ``submit_rate`` (jobs per second) with ``submit_burst`` (the bucket's size): how fast new jobs are submitted.
    * ``downtime``: no new submits while ``True``, or while ``now`` is inside one of the ``(start, end)`` windows
      (epoch seconds, end excluded). Monitoring, cancels and fetches go on.
    * ``max_waiting`` / ``max_held``: seconds a job may stay waiting / held before it is cancelled.
    * ``lost_after``: seconds a job may stay unknown before it is declared lost.
    """

    max_queued: int | None = None
    max_total: int | None = None
    submit_rate: float | None = None
    submit_burst: int = 1
    downtime: bool | tuple[tuple[float, float], ...] = False
    max_waiting: float | None = None
    max_held: float | None = None
    lost_after: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_queued", "max_total", "submit_rate", "max_waiting", "max_held", "lost_after"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 or None, got {value!r}")
        if self.submit_burst < 1:
            raise ValueError(f"submit_burst must be at least 1, got {self.submit_burst}")
        if not isinstance(self.downtime, bool):
            for start, end in self.downtime:
                if not start < end:
                    raise ValueError(f"a downtime window must end after it starts, got ({start}, {end})")

    def in_downtime(self, now: float) -> bool:
        if isinstance(self.downtime, bool):
            return self.downtime
        return any(start <= now < end for start, end in self.downtime)

    def downtime_ends(self, now: float) -> float | None:
        """When the downtime window ``now`` is in ends (None: not in a window, or an open-ended downtime)."""
        if isinstance(self.downtime, bool):
            return None
        ends = [end for start, end in self.downtime if start <= now < end]
        return max(ends) if ends else None

    @property
    def has_timeouts(self) -> bool:
        return self.max_waiting is not None or self.max_held is not None or self.lost_after is not None


UNLIMITED = CELimits()
"""The limits of a CE nothing was configured for."""


@dataclass(frozen=True, slots=True)
class CELoad:
    """What one CE holds of ours, by the reconciler's record: ``queued`` (not running yet) and ``total`` (not ended)."""

    queued: int = 0
    total: int = 0


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """A token bucket as a value: ``rate`` tokens per second up to ``burst``, holding ``tokens`` at time ``at``.

    A new bucket is full. :meth:`available` is how many whole tokens there are at ``now``; :meth:`take` returns the
    bucket after spending some. Time going backwards (a wall clock stepped back) adds nothing and takes nothing away.
    """

    rate: float
    burst: int
    tokens: float
    at: float

    @classmethod
    def full(cls, rate: float, burst: int, now: float) -> TokenBucket:
        return cls(rate, burst, float(burst), now)

    def refilled(self, now: float) -> TokenBucket:
        if now <= self.at:
            return self
        return replace(self, tokens=min(float(self.burst), self.tokens + (now - self.at) * self.rate), at=now)

    def available(self, now: float) -> int:
        return math.floor(self.refilled(now).tokens + 1e-9)

    def take(self, count: int, now: float) -> TokenBucket:
        """The bucket after spending ``count`` tokens at ``now`` (at most what is there: never below zero)."""
        bucket = self.refilled(now)
        return replace(bucket, tokens=max(0.0, bucket.tokens - count))

    def next_token_at(self, now: float) -> float:
        """When the next whole token is there (``now`` if one is)."""
        bucket = self.refilled(now)
        if bucket.tokens + 1e-9 >= 1 or self.rate <= 0:
            return now
        return now + (1 - bucket.tokens) / self.rate

    def with_settings(self, rate: float, burst: int) -> TokenBucket:
        """The same bucket under a new rate and size (its tokens capped to the new size)."""
        return replace(self, rate=rate, burst=burst, tokens=min(self.tokens, float(burst)))


def counts_in_total(progress: Progress) -> bool:
    """Whether a key's job occupies the CE: it may exist there (a submit intent or a job id) and has not ended."""
    return (progress.submit_intent or progress.job_id is not None) and not progress.terminal and not progress.purged


def counts_as_queued(progress: Progress) -> bool:
    """Whether a key's job occupies a queue slot: at the CE (see :func:`counts_in_total`) and not seen running. A job
    submitted but not seen yet, waiting, held or unknown counts."""
    return counts_in_total(progress) and progress.state is not JobState.RUNNING


def submit_room(limits: CELimits, load: CELoad, bucket: TokenBucket | None, now: float,
                budget: int) -> tuple[int, str]:
    """How many submits the CE takes now (at most ``budget``), and why it takes no more (empty when ``budget`` is the
    bound). The first binding limit names the reason: downtime, then queued, total, rate, then the tick's budget."""
    if limits.in_downtime(now):
        ends = limits.downtime_ends(now)
        return 0, "CE in downtime" + (f" (until {ends:.0f})" if ends is not None else "")
    room, reason = budget, f"submit budget per tick ({budget}) spent"
    if limits.max_queued is not None and limits.max_queued - load.queued < room:
        # The reason speaks of the queue once this plan's submits are in it: the key it holds back sees it full.
        room = max(0, limits.max_queued - load.queued)
        reason = f"CE full: {max(load.queued, limits.max_queued)}/{limits.max_queued} queued"
    if limits.max_total is not None and limits.max_total - load.total < room:
        room = max(0, limits.max_total - load.total)
        reason = f"CE full: {max(load.total, limits.max_total)}/{limits.max_total} in total"
    if bucket is not None:
        tokens = bucket.available(now)
        if tokens < room:
            room, reason = tokens, f"submit rate {bucket.rate:g}/s (burst {bucket.burst})"
    return room, reason


_HELD_WORDS = ("held", "jobheld")


def is_held(progress: Progress) -> bool:
    """Whether a waiting job is held: the scheduler's state or reason says so (HTCondor's ``Held`` with a releasable
    code; Slurm's PENDING with reason ``JobHeldUser``/``JobHeldAdmin``, or a ``*_HOLD`` state)."""
    if progress.state is not JobState.WAITING:
        return False
    words = f"{progress.native_state} {progress.reason}".lower()
    return any(word in words for word in _HELD_WORDS) or "_hold" in words


def _since(progress: Progress) -> float | None:
    return progress.state_since if progress.state_since is not None else progress.last_seen


def overdue(progress: Progress, limits: CELimits) -> tuple[float | None, str]:
    """When a job's waiting (or held) time runs out under ``limits`` (None: never), and the reason a cancel for it
    carries. Only a job at the CE that has not ended, waiting or held, can be overdue."""
    since = _since(progress)
    if since is None or progress.job_id is None or progress.terminal or progress.state is not JobState.WAITING:
        return None, ""
    if is_held(progress) and limits.max_held is not None:
        return since + limits.max_held, f"held longer than max_held ({limits.max_held:g} s)"
    if limits.max_waiting is not None:
        return since + limits.max_waiting, f"waiting longer than max_waiting ({limits.max_waiting:g} s)"
    return None, ""


def lost(progress: Progress, limits: CELimits) -> tuple[float | None, str]:
    """When a job reported unknown is declared lost (None: never), and the reason it is then reported with."""
    since = _since(progress)
    if (since is None or limits.lost_after is None or progress.job_id is None or progress.purged
            or progress.state is not JobState.UNKNOWN):
        return None, ""
    return since + limits.lost_after, (f"lost: reported {progress.native_state or 'unknown'} "
                                       f"({progress.reason or 'no reason given'}) for longer than the grace "
                                       f"({limits.lost_after:g} s)")
