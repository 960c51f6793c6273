"""``diff``: desired phase vs recorded progress -> the actions to take now. Pure and level-triggered.

For one key the plan follows a fixed progression (each step is planned only once the previous one is recorded)::

    RUNNING     Submit | Adopt                                   (until a job id is known)
    CANCELLED   Adopt (an intent without a job id)  -> Cancel while not terminal (resent after cancel_resend_after)
                -> Purge, purge_cancelled_after the cancel was sent (at once if the job ended before any cancel)
                                                                 (no job ever: nothing)
    COLLECTED   Submit | Adopt -> (wait for terminal) -> Fetch -> Purge
    FORGOTTEN   Adopt -> Cancel while not terminal -> Purge -> Forget     (no job ever: Forget at once)

Per-CE limits (:mod:`intercede.reconcile.limits`) add three things. A Submit is planned only while the CE has room
(queued and total counts, the submit rate, no downtime); a key held back is *deferred*, never failed, with the reason
in :attr:`Plan.held_back`. A RUNNING or COLLECTED key whose job waited (or was held) longer than the CE allows gets a
Cancel carrying that reason. A key whose job stays unknown past the grace gets :class:`DeclareLost`.

Nothing is planned for a key whose CE is unreachable, whose step is backing off (``now < next_attempt_at``), or that
carries a permanent error, with one exception: a FORGOTTEN key with nothing left at the resource (no job and no
submit intent, e.g. its submit was refused; or its job purged) is forgotten even with a permanent error, else it could
be neither dropped nor declared again. A key with a submit intent and no job id is only ever adopted:
:class:`Submit` is planned solely for keys whose progress has no intent, which is what makes a submit happen at most
once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from intercede.model import OutputManifest
from intercede.reconcile.limits import UNLIMITED, CELimits, CELoad, TokenBucket, lost, overdue, submit_room
from intercede.reconcile.policy import RetryPolicy
from intercede.reconcile.state import (
    Action,
    Adopt,
    Cancel,
    DeclareLost,
    Desired,
    Fetch,
    Forget,
    Phase,
    Progress,
    Purge,
    Reachability,
    Submit,
)

__all__ = ["NO_PROGRESS", "Plan", "apply_success", "decide", "diff", "plan", "wake_at"]

NO_PROGRESS = Progress()
"""The progress of a key nothing was done for yet."""


@dataclass(frozen=True, slots=True)
class Plan:
    """The actions of one diff, and the keys that wanted a Submit but found their CE without room (they must be
    diffed again next tick): ``held_back`` maps each of them to the reason ("CE full: 20/20 queued")."""

    actions: tuple[Action, ...]
    deferred: tuple[str, ...]
    held_back: Mapping[str, str] = field(default_factory=dict)

    def submits(self) -> int:
        return sum(isinstance(a, Submit) for a in self.actions)


def _cancel_due(progress: Progress, now: float, policy: RetryPolicy) -> bool:
    return progress.cancel_sent_at is None or now >= progress.cancel_sent_at + policy.cancel_resend_after


def _forgettable_anyway(desired: Desired, progress: Progress) -> bool:
    """A FORGOTTEN key with nothing at the resource (no job and no intent, or its job purged): dropping it is safe
    whatever error it carries."""
    nothing_left = progress.purged or (progress.job_id is None and not progress.submit_intent)
    return desired.phase is Phase.FORGOTTEN and nothing_left


def decide(desired: Desired, progress: Progress, now: float, policy: RetryPolicy,
           limits: CELimits = UNLIMITED) -> Action | None:
    """The one next action for a key, ignoring reachability and budgets (see the module docstring)."""
    if progress.next_attempt_at is not None and now < progress.next_attempt_at:
        return None
    if progress.permanent_error is not None:
        return Forget(desired.key) if _forgettable_anyway(desired, progress) else None
    key, job_id, phase = desired.key, progress.job_id, desired.phase
    if job_id is None:
        if progress.submit_intent:
            # A submit may have reached the CE: find it before anything else, whatever the phase.
            return Adopt(key)
        if phase is Phase.RUNNING or phase is Phase.COLLECTED:
            return Submit(key)
        if phase is Phase.FORGOTTEN:
            return Forget(key)
        return None  # CANCELLED before any submit: nothing to do, ever.
    if limits.lost_after is not None:
        lost_at, why = lost(progress, limits)
        if lost_at is not None and now >= lost_at:
            return DeclareLost(key, why)
    if phase is Phase.RUNNING or (phase is Phase.COLLECTED and not progress.terminal):
        if limits.max_waiting is not None or limits.max_held is not None:
            due_at, why = overdue(progress, limits)
            if due_at is not None and now >= due_at and _cancel_due(progress, now, policy):
                return Cancel(key, job_id, why)
        return None  # a COLLECTED key waits for the job to finish
    if not progress.terminal:
        return Cancel(key, job_id) if _cancel_due(progress, now, policy) else None
    if phase is Phase.COLLECTED:
        if progress.manifest is None:
            assert desired.destination is not None  # Desired guarantees it for COLLECTED
            return Fetch(key, job_id, desired.destination)
        return None if progress.purged else Purge(key, job_id)
    if phase is Phase.FORGOTTEN:
        return Forget(key) if progress.purged else Purge(key, job_id)
    # CANCELLED and terminal: nothing may run any more. Its files are kept a while (a collect may still want them),
    # then purged: left alone they would stay at the resource forever.
    if progress.purged or now < _purge_cancelled_at(progress, policy):
        return None
    return Purge(key, job_id)


def _purge_cancelled_at(progress: Progress, policy: RetryPolicy) -> float:
    if progress.cancel_sent_at is None:
        return float("-inf")  # it ended before any cancel was sent: nothing to wait for
    return progress.cancel_sent_at + policy.purge_cancelled_after


def wake_at(desired: Desired, progress: Progress, policy: RetryPolicy,
            limits: CELimits = UNLIMITED) -> float | None:
    """The time from which :func:`decide` may plan something only because time passed (a backoff ends, a cancel is
    due again, a cancelled job's files are due for purging, a job waited too long or stayed unknown past the grace),
    or None if time alone never changes the plan. Lets a caller re-diff a key only when it is due."""
    if progress.permanent_error is not None:
        return progress.next_attempt_at if _forgettable_anyway(desired, progress) else None
    gates: list[float] = []
    if progress.next_attempt_at is not None:
        gates.append(progress.next_attempt_at)
    if (progress.cancel_sent_at is not None and progress.job_id is not None and not progress.terminal
            and desired.phase in (Phase.CANCELLED, Phase.FORGOTTEN)):
        gates.append(progress.cancel_sent_at + policy.cancel_resend_after)
    if (progress.cancel_sent_at is not None and progress.job_id is not None and progress.terminal
            and not progress.purged and desired.phase is Phase.CANCELLED):
        gates.append(_purge_cancelled_at(progress, policy))
    if limits.has_timeouts and progress.job_id is not None and not progress.terminal:
        lost_at, _ = lost(progress, limits)
        due_at, _ = overdue(progress, limits) if desired.phase in (Phase.RUNNING, Phase.COLLECTED) else (None, "")
        if due_at is not None and progress.cancel_sent_at is not None:
            due_at = max(due_at, progress.cancel_sent_at + policy.cancel_resend_after)  # a timeout's cancel resent
        timeouts = [at for at in (lost_at, due_at) if at is not None]
        if timeouts:
            gates.append(min(timeouts))
    # Every gate must be open for a resend, so the latest one is when it can happen.
    return max(gates) if gates else None


def plan(
    keys: Iterable[str],
    desired: Mapping[str, Desired],
    progress: Mapping[str, Progress],
    reachable: Reachability,
    now: float,
    policy: RetryPolicy,
    budget: Mapping[str, int] | None = None,
    limits: Mapping[str, CELimits] | None = None,
    load: Mapping[str, CELoad] | None = None,
    buckets: Mapping[str, TokenBucket] | None = None,
) -> Plan:
    """Plan the actions for ``keys`` (the dirty ones; unknown keys are ignored).

    Keys are visited in sorted order, so the same inputs always give the same plan whatever order ``keys`` came in.
    At most ``budget[ce]`` (default ``policy.submits_per_tick``) Submits are planned per CE, fewer when the CE's
    ``limits`` leave less room given its ``load`` (what it holds of ours before this plan) and its submit-rate
    ``buckets`` (see :func:`~intercede.reconcile.limits.submit_room`); the keys left over are returned as
    ``deferred``, each with its reason in ``held_back``. No action is planned for a CE mapped to False in
    ``reachable``.
    """
    budget, limits, load, buckets = budget or {}, limits or {}, load or {}, buckets or {}
    remaining: dict[str, tuple[int, str]] = {}
    actions: list[Action] = []
    deferred: list[str] = []
    held_back: dict[str, str] = {}
    for key in sorted(set(keys)):
        wanted = desired.get(key)
        if wanted is None or not reachable.get(wanted.ce, True):
            continue
        ce_limits = limits.get(wanted.ce, UNLIMITED)
        action = decide(wanted, progress.get(key, NO_PROGRESS), now, policy, ce_limits)
        if action is None:
            continue
        if isinstance(action, Submit):
            left = remaining.get(wanted.ce)
            if left is None:
                left = submit_room(ce_limits, load.get(wanted.ce, CELoad()), buckets.get(wanted.ce), now,
                                   budget.get(wanted.ce, policy.submits_per_tick))
            room, reason = left
            if room <= 0:
                deferred.append(key)
                held_back[key] = reason
                continue
            remaining[wanted.ce] = (room - 1, reason)
        actions.append(action)
    return Plan(tuple(actions), tuple(deferred), held_back)


def diff(
    keys: Iterable[str],
    desired: Mapping[str, Desired],
    progress: Mapping[str, Progress],
    reachable: Reachability,
    now: float,
    policy: RetryPolicy,
    budget: Mapping[str, int] | None = None,
    limits: Mapping[str, CELimits] | None = None,
    load: Mapping[str, CELoad] | None = None,
    buckets: Mapping[str, TokenBucket] | None = None,
) -> list[Action]:
    """The actions of :func:`plan` (for callers that do not track deferred keys)."""
    return list(plan(keys, desired, progress, reachable, now, policy, budget, limits, load, buckets).actions)


def apply_success(progress: Progress | None, action: Action, now: float) -> Progress | None:
    """Model of what a *successful* action records (None: the key is forgotten). Used by tests and benchmarks.

    Submit and Adopt record the job id ``job-<key>`` (Adopt modelled as finding exactly one job); Fetch records an
    empty manifest for its destination.
    """
    current = progress or NO_PROGRESS
    match action:
        case Submit(key) | Adopt(key):
            return current.with_submit_intent().with_job_id(f"job-{key}")
        case Cancel(_, _, reason):
            return current.with_cancel_sent(now, reason)
        case DeclareLost(_, reason):
            return current.with_lost(reason, now)
        case Fetch(_, job_id, destination):
            return current.with_manifest(OutputManifest(job_id=job_id, destination=destination))
        case Purge():
            return current.with_purged()
        case Forget():
            return None
    raise TypeError(f"not an action: {action!r}")  # pragma: no cover - exhaustive above
