"""Properties of ``diff`` over arbitrary states, and of the journal-first protocol built on it.

The progression property proved here (``test_applying_a_plan_and_rediffing_only_ever_moves_each_key_forward``):
with observations and time frozen, apply every planned action's success and diff again. Then every key's action in
the new plan is *strictly later* than its action in any previous round, in the order
Submit|Adopt < Cancel < Fetch < Purge < Forget. Hence no action is ever planned twice, and after at most five rounds
(plus one per key held back by a submit budget) the plan is empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intercede.model import JobState, JobStatus
from intercede.reconcile import (
    Action,
    Adopt,
    Cancel,
    Desired,
    Fetch,
    Forget,
    Phase,
    Progress,
    Purge,
    ReconcileState,
    RetryPolicy,
    Submit,
    apply_success,
    diff,
    plan,
)
from tests.reconcile.strategies import CES, NOW, worlds

pytestmark = pytest.mark.actors

POLICY = RetryPolicy(submits_per_tick=3, cancel_resend_after=50.0)
EMPTY = Progress()
RANK = {Submit: 0, Adopt: 0, Cancel: 1, Fetch: 2, Purge: 3, Forget: 4}

World = tuple[dict[str, Desired], dict[str, Progress], dict[str, bool], dict[str, int]]


def _diff_all(world: World, now: float = NOW) -> list[Action]:
    desired, progress, reachable, budget = world
    return diff(desired, desired, progress, reachable, now, POLICY, budget)


@given(worlds(), st.randoms(use_true_random=False))
def test_diff_is_deterministic_whatever_the_order_of_the_keys(world: World, rng: object) -> None:
    desired, progress, reachable, budget = world
    keys = [*list(desired), "not-declared"]
    shuffled = list(keys)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    first = diff(keys, desired, progress, reachable, NOW, POLICY, budget)
    assert diff(shuffled, desired, progress, reachable, NOW, POLICY, budget) == first
    assert diff(keys, desired, progress, reachable, NOW, POLICY, budget) == first


@given(worlds())
def test_no_action_for_unreachable_ces_backing_off_or_permanently_failed_keys(world: World) -> None:
    desired, progress, reachable, _ = world
    for action in _diff_all(world):
        wanted, done = desired[action.key], progress.get(action.key, EMPTY)
        assert reachable.get(wanted.ce, True)
        # The one exception: a forgotten key with nothing left at the resource is dropped whatever went wrong.
        nothing_left = done.purged or (done.job_id is None and not done.submit_intent)
        assert done.permanent_error is None or (isinstance(action, Forget) and nothing_left)
        assert done.next_attempt_at is None or done.next_attempt_at <= NOW


@given(worlds())
def test_submits_respect_the_per_ce_budget_and_never_follow_an_intent(world: World) -> None:
    desired, progress, _, budget = world
    submits = [a for a in _diff_all(world) if isinstance(a, Submit)]
    for ce in CES:
        assert sum(desired[a.key].ce == ce for a in submits) <= budget.get(ce, POLICY.submits_per_tick)
    for action in submits:
        done = progress.get(action.key, EMPTY)
        assert not done.submit_intent and done.job_id is None
    assert len({a.key for a in _diff_all(world)}) == len(_diff_all(world))  # one action per key


@given(worlds())
def test_finished_keys_get_no_action(world: World) -> None:
    desired, progress, _, _ = world
    planned = {a.key for a in _diff_all(world)}
    for key, wanted in desired.items():
        done = progress.get(key, EMPTY)
        if not done.terminal or done.job_id is None:
            continue
        collected = wanted.phase is Phase.COLLECTED and done.manifest is not None and done.purged
        if wanted.phase is Phase.RUNNING or (wanted.phase is Phase.CANCELLED and done.purged) or collected:
            assert key not in planned
        elif wanted.phase is Phase.CANCELLED and done.permanent_error is None and key in planned:
            assert [a for a in _diff_all(world) if a.key == key] == [Purge(key, done.job_id)]  # ended: purged


@given(worlds())
def test_a_cancel_is_resent_only_after_the_resend_delay(world: World) -> None:
    _, progress, _, _ = world
    for action in _diff_all(world):
        if isinstance(action, Cancel):
            sent = progress[action.key].cancel_sent_at
            assert sent is None or sent + POLICY.cancel_resend_after <= NOW


@given(worlds())
@settings(max_examples=300)
def test_applying_a_plan_and_rediffing_only_ever_moves_each_key_forward(world: World) -> None:
    desired, progress, reachable, budget = dict(world[0]), dict(world[1]), world[2], world[3]
    last_rank: dict[str, int] = {}
    max_rounds = 5 + len(desired)
    for _ in range(max_rounds + 1):
        actions = diff(desired, desired, progress, reachable, NOW, POLICY, budget)
        if not actions:
            break
        for action in actions:
            rank = RANK[type(action)]
            assert rank > last_rank.get(action.key, -1), (action, last_rank)
            last_rank[action.key] = rank
            after = apply_success(progress.get(action.key), action, NOW)
            if after is None:
                del desired[action.key]
                progress.pop(action.key, None)
            else:
                progress[action.key] = after
    else:
        pytest.fail("the plan never emptied")
    # At the fixpoint, every key that could act has reached the end of its phase's progression.
    for key, wanted in desired.items():
        done = progress.get(key, EMPTY)
        blocked = (not reachable.get(wanted.ce, True) or done.permanent_error is not None
                   or (done.next_attempt_at is not None and done.next_attempt_at > NOW))
        if blocked:
            continue
        assert not (done.submit_intent and done.job_id is None)  # every intent was adopted
        may_submit = budget.get(wanted.ce, POLICY.submits_per_tick) > 0
        if wanted.phase in (Phase.RUNNING, Phase.COLLECTED) and may_submit:
            assert done.job_id is not None
        if wanted.phase is Phase.COLLECTED and done.terminal and done.job_id is not None:
            assert done.manifest is not None and done.purged
        kept_until = (done.cancel_sent_at or -float("inf")) + POLICY.purge_cancelled_after
        if wanted.phase is Phase.CANCELLED and done.terminal and done.job_id is not None and kept_until <= NOW:
            assert done.purged  # a cancelled job leaves nothing at the resource once it was kept long enough


# ---- never two submits, across crashes


@dataclass
class ProtocolModel:
    """The journal-first protocol over ``diff``: ``journal`` survives crashes; ``resource`` is the real world."""

    desired: dict[str, Desired]
    reachable: dict[str, bool] = field(default_factory=dict)
    journal: dict[str, Progress] = field(default_factory=dict)
    resource: dict[str, list[str]] = field(default_factory=dict)
    purged: set[str] = field(default_factory=set)
    now: float = NOW
    serial: int = 0

    def tick(self, crash_at: int | None, after_effect: bool) -> None:
        """Carry out one plan; the process dies at the ``crash_at``-th side effect (before or after it)."""
        actions = diff(self.desired, self.desired, self.journal, self.reachable, self.now, POLICY)
        for index, action in enumerate(actions):
            crash_here = index == crash_at
            key = action.key
            p = self.journal.get(key, EMPTY)
            if isinstance(action, Submit):
                self.journal[key] = p = p.with_submit_intent()  # journaled before the side effect
            if crash_here and not after_effect:
                return
            found: list[str] = []
            match action:  # the side effect at the resource
                case Submit():
                    self.serial += 1
                    self.resource.setdefault(key, []).append(f"job{self.serial}")
                case Adopt():
                    found = [j for j in self.resource.get(key, []) if j not in self.purged]
                case Purge(_, job_id):
                    self.purged.add(job_id)
            if crash_here:
                return
            match action:  # journaled after the side effect
                case Submit():
                    self.journal[key] = p.with_job_id(self.resource[key][-1])
                case Adopt():
                    self.journal[key] = p.with_job_id(found[0]) if found else p.without_submit_intent()
                case Cancel() | Fetch() | Purge():
                    after = apply_success(p, action, self.now)
                    assert after is not None
                    self.journal[key] = after
                case Forget():
                    self.journal.pop(key, None)
                    del self.desired[key]

    def observe(self, key: str, state: JobState) -> None:
        p = self.journal.get(key, EMPTY)
        if key in self.desired and p.job_id is not None:
            self.journal[key] = p.with_observation(JobStatus(job_id=p.job_id, state=state), self.now)

    def fail(self, key: str) -> None:
        """A temporary failure of the key's step (the intent, if any, stays)."""
        if key in self.desired:
            p = self.journal.get(key, EMPTY)
            self.journal[key] = p.with_error("boom", permanent=False, next_attempt_at=self.now + 5,
                                             attempts=p.attempts + 1)


operations = st.lists(st.one_of(
    st.tuples(st.just("tick"), st.one_of(st.none(), st.integers(0, 6)), st.booleans()),
    st.tuples(st.just("observe"), st.integers(0, 11), st.sampled_from(list(JobState))),
    st.tuples(st.just("phase"), st.integers(0, 11), st.sampled_from(list(Phase))),
    st.tuples(st.just("time"), st.floats(0, 100)),
    st.tuples(st.just("reach"), st.sampled_from(CES), st.booleans()),
    st.tuples(st.just("fail"), st.integers(0, 11)),
), max_size=60)


@given(worlds(), operations)
@settings(max_examples=300)
def test_no_key_is_ever_submitted_twice_across_crashes_and_none_is_lost(
        world: World, ops: list[tuple[Any, ...]]) -> None:
    model = ProtocolModel(desired=dict(world[0]))
    keys = sorted(model.desired)
    for op in ops:
        match op:
            case ("tick", crash_at, after_effect):
                model.tick(crash_at, after_effect)
            case ("observe", index, state) if keys:
                model.observe(keys[index % len(keys)], state)
            case ("phase", index, phase) if keys:
                key = keys[index % len(keys)]
                if key in model.desired and model.desired[key].phase is not Phase.FORGOTTEN:
                    model.desired[key] = model.desired[key].with_phase(phase)
            case ("time", seconds):
                model.now += seconds
            case ("reach", ce, flag):
                model.reachable[ce] = flag
            case ("fail", index) if keys:
                model.fail(keys[index % len(keys)])
        assert all(len(jobs) <= 1 for jobs in model.resource.values()), model.resource
    # Then the system settles with no crash, every CE up and every backoff over: nothing is lost.
    model.reachable = {}
    for _ in range(30):
        model.now += 1000
        model.tick(None, False)
    assert all(len(jobs) <= 1 for jobs in model.resource.values())
    for key, wanted in model.desired.items():
        done = model.journal.get(key, EMPTY)
        if wanted.phase in (Phase.RUNNING, Phase.COLLECTED):
            assert model.resource.get(key) == [done.job_id], (key, done)


# ---- the incremental working set plans exactly what a full diff would


incremental_ops = st.lists(st.one_of(
    st.tuples(st.just("tick")),
    st.tuples(st.just("observe"), st.integers(0, 11), st.sampled_from(list(JobState))),
    st.tuples(st.just("phase"), st.integers(0, 11), st.sampled_from(list(Phase))),
    st.tuples(st.just("time"), st.floats(0, 120)),
    st.tuples(st.just("reach"), st.sampled_from(CES), st.booleans()),
    st.tuples(st.just("fail"), st.integers(0, 11), st.floats(0, 100)),
), max_size=50)


@given(worlds(), incremental_ops)
@settings(max_examples=300)
def test_diffing_only_dirty_and_due_keys_plans_exactly_what_diffing_every_key_plans(
        world: World, ops: list[tuple[Any, ...]]) -> None:
    desired, progress, reachable, budget = world
    state = ReconcileState(POLICY)
    for key, wanted in desired.items():
        state.put(wanted, progress.get(key))
    for ce, flag in reachable.items():
        state.set_reachable(ce, flag)
    keys = sorted(desired)
    now = NOW
    for op in [*ops, ("tick",)]:
        match op:
            case ("tick",):
                full = plan(state.desired, state.desired, state.progress, state.reachable, now, POLICY, budget)
                incremental = state.plan(now, budget)
                assert incremental.actions == full.actions
                for action in incremental.actions:
                    after = apply_success(state.progress[action.key], action, now)
                    if after is None:
                        state.remove(action.key)
                    else:
                        state.put_progress(action.key, after)
            case ("observe", index, job_state) if keys:
                key = keys[index % len(keys)]
                p = state.progress.get(key)
                if p is not None and p.job_id is not None:
                    state.put_progress(key, p.with_observation(JobStatus(job_id=p.job_id, state=job_state), now))
            case ("phase", index, phase) if keys:
                key = keys[index % len(keys)]
                if key in state and state.desired[key].phase is not Phase.FORGOTTEN:
                    state.put(state.desired[key].with_phase(phase))
            case ("time", seconds):
                now += seconds
            case ("reach", ce, flag):
                state.set_reachable(ce, flag)
            case ("fail", index, delay) if keys:
                key = keys[index % len(keys)]
                p = state.progress.get(key)
                if p is not None:
                    state.put_progress(key, p.with_error("boom", permanent=False, next_attempt_at=now + delay,
                                                         attempts=p.attempts + 1))
