"""Per-CE limits, pure: the token bucket, the planner holding submits back (never failing them), per-state timeouts
and lost jobs. Properties over arbitrary loads and limits, then one example per reason shown to an operator."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intercede.model import JobSpec, JobState, JobStatus
from intercede.reconcile import (
    Cancel,
    CELimits,
    CELoad,
    DeclareLost,
    Desired,
    Phase,
    Progress,
    ReconcileState,
    RetryPolicy,
    Submit,
    TokenBucket,
    apply_success,
    decide,
    plan,
    wake_at,
)
from intercede.reconcile.limits import counts_as_queued, counts_in_total, is_held, submit_room

pytestmark = pytest.mark.policy

SPEC = JobSpec(executable="/bin/true")
POLICY = RetryPolicy(submits_per_tick=1000, cancel_resend_after=60.0)
NOW = 1_000_000.0


def declared(n: int, ce: str = "ce") -> dict[str, Desired]:
    return {f"k{i:04d}": Desired(f"k{i:04d}", ce, SPEC) for i in range(n)}


# ---- the token bucket


@given(rate=st.floats(0.01, 100), burst=st.integers(1, 50),
       steps=st.lists(st.tuples(st.floats(0, 10), st.integers(0, 60)), max_size=40))
@settings(max_examples=200, deadline=None)
def test_a_token_bucket_never_grants_more_than_its_burst_plus_rate_times_elapsed(
        rate: float, burst: int, steps: list[tuple[float, int]]) -> None:
    bucket = TokenBucket.full(rate, burst, NOW)
    now, granted = NOW, 0
    for wait, wanted in steps:
        now += wait
        grant = min(wanted, bucket.available(now))
        assert grant >= 0
        bucket = bucket.take(grant, now)
        granted += grant
        assert 0 <= bucket.tokens <= burst
        assert granted <= burst + rate * (now - NOW) + 1e-6


def test_a_token_bucket_refills_at_its_rate_and_caps_at_its_burst() -> None:
    bucket = TokenBucket.full(2.0, 3, NOW).take(3, NOW)
    assert bucket.available(NOW) == 0
    assert bucket.next_token_at(NOW) == pytest.approx(NOW + 0.5)
    assert bucket.available(NOW + 1.0) == 2
    assert bucket.available(NOW + 100.0) == 3
    assert bucket.available(NOW - 10.0) == 0  # a clock stepped back adds nothing


# ---- the planner


@given(n=st.integers(0, 60), max_queued=st.none() | st.integers(0, 30), max_total=st.none() | st.integers(0, 30),
       queued=st.integers(0, 40), running=st.integers(0, 40), downtime=st.booleans(),
       budget=st.integers(0, 100))
@settings(max_examples=300, deadline=None)
def test_the_plan_never_fills_a_ce_beyond_its_limits_and_holds_the_rest_back_with_a_reason(
        n: int, max_queued: int | None, max_total: int | None, queued: int, running: int, downtime: bool,
        budget: int) -> None:
    desired = declared(n)
    limits = CELimits(max_queued=max_queued, max_total=max_total, downtime=downtime)
    load = CELoad(queued=queued, total=queued + running)
    result = plan(desired, desired, {}, {}, NOW, POLICY, {"ce": budget}, {"ce": limits}, {"ce": load})
    submits = result.submits()
    assert submits + len(result.deferred) == n  # every key is submitted or held back: none is failed or dropped
    assert set(result.held_back) == set(result.deferred)
    assert all(result.held_back.values())
    assert submits <= budget
    if max_queued is not None:
        assert queued + submits <= max(max_queued, queued)
    if max_total is not None:
        assert queued + running + submits <= max(max_total, queued + running)
    if downtime:
        assert submits == 0 and all(r.startswith("CE in downtime") for r in result.held_back.values())


def test_a_full_ce_shows_why_each_held_back_key_waits() -> None:
    desired = declared(5)
    limits = {"ce": CELimits(max_queued=100)}
    result = plan(desired, desired, {}, {}, NOW, POLICY, None, limits, {"ce": CELoad(queued=100, total=130)})
    assert result.actions == ()
    assert set(result.held_back.values()) == {"CE full: 100/100 queued"}
    result = plan(desired, desired, {}, {}, NOW, POLICY, None, limits, {"ce": CELoad(queued=98, total=130)})
    assert result.submits() == 2 and set(result.held_back.values()) == {"CE full: 100/100 queued"}  # with its 2 submits


def test_a_rate_limited_ce_takes_what_its_bucket_holds() -> None:
    desired = declared(5)
    bucket = TokenBucket.full(2.0, 2, NOW)
    result = plan(desired, desired, {}, {}, NOW, POLICY, None, {"ce": CELimits(submit_rate=2.0, submit_burst=2)},
                  None, {"ce": bucket})
    assert result.submits() == 2
    assert set(result.held_back.values()) == {"submit rate 2/s (burst 2)"}


def test_a_downtime_window_stops_submits_inside_it_only() -> None:
    limits = CELimits(downtime=((NOW - 10, NOW + 10),))
    assert submit_room(limits, CELoad(), None, NOW, 5) == (0, f"CE in downtime (until {NOW + 10:.0f})")
    assert submit_room(limits, CELoad(), None, NOW + 10, 5)[0] == 5
    with pytest.raises(ValueError, match="end after it starts"):
        CELimits(downtime=((NOW, NOW),))


def test_downtime_stops_only_submits_cancels_and_fetches_go_on() -> None:
    down = CELimits(downtime=True)
    live = Progress(job_id="7", submit_intent=True, state=JobState.WAITING)
    assert decide(Desired("k", "ce", SPEC, Phase.CANCELLED), live, NOW, POLICY, down) == Cancel("k", "7")
    ended = Progress(job_id="7", submit_intent=True, state=JobState.DONE)
    collect = Desired("k", "ce", SPEC, Phase.COLLECTED, destination=Path("/out/k"))
    assert decide(collect, ended, NOW, POLICY, down) is not None  # the fetch


@pytest.mark.parametrize(("progress", "queued", "total"), [
    (Progress(), False, False),  # declared, nothing submitted
    (Progress(submit_intent=True), True, True),  # submitted, not seen yet
    (Progress(job_id="1", submit_intent=True, state=JobState.WAITING), True, True),
    (Progress(job_id="1", submit_intent=True, state=JobState.UNKNOWN), True, True),
    (Progress(job_id="1", submit_intent=True, state=JobState.RUNNING), False, True),
    (Progress(job_id="1", submit_intent=True, state=JobState.DONE), False, False),
    (Progress(job_id="1", submit_intent=True, purged=True), False, False),
])
def test_every_state_at_the_ce_that_is_not_running_counts_as_queued(progress: Progress, queued: bool,
                                                                    total: bool) -> None:
    assert counts_as_queued(progress) is queued and counts_in_total(progress) is total


def test_the_working_set_keeps_each_ce_load_and_releases_held_back_keys_as_room_appears() -> None:
    state = ReconcileState(POLICY)
    state.set_limits("ce", CELimits(max_queued=3))
    for d in declared(10).values():
        state.put(d)
    first = state.plan(NOW)
    assert first.submits() == 3 and state.load_of("ce") == CELoad(0, 0)
    for action in first.actions:  # the executor journals the intent: the job counts from then on
        state.put_progress(action.key, apply_success(None, action, NOW) or Progress())
    assert state.load_of("ce") == CELoad(3, 3)
    assert state.plan(NOW).submits() == 0
    assert state.held_back("k0009") == "CE full: 3/3 queued"
    running = JobStatus(job_id="job-k0000", state=JobState.RUNNING)
    state.put_progress("k0000", state.progress["k0000"].with_observation(running, NOW))
    assert state.load_of("ce") == CELoad(2, 3)
    again = state.plan(NOW)
    assert again.actions == (Submit("k0003"),)
    state.put_progress("k0003", apply_success(None, again.actions[0], NOW) or Progress())
    state.set_limits("ce", CELimits(max_queued=10))  # changed at run time: held-back keys go at once
    assert state.plan(NOW).submits() == 6
    assert state.held_back("k0009") is None


# ---- per-state timeouts and lost jobs


def waiting_since(at: float, native: str = "PENDING", reason: str = "") -> Progress:
    return Progress(job_id="7", submit_intent=True, state=JobState.WAITING, native_state=native, reason=reason,
                    state_since=at, last_seen=at)


def test_a_job_waiting_longer_than_max_waiting_is_cancelled_with_that_reason() -> None:
    limits = CELimits(max_waiting=600)
    desired = Desired("k", "ce", SPEC)
    assert decide(desired, waiting_since(NOW - 599), NOW, POLICY, limits) is None
    assert wake_at(desired, waiting_since(NOW - 599), POLICY, limits) == NOW + 1
    action = decide(desired, waiting_since(NOW - 600), NOW, POLICY, limits)
    assert action == Cancel("k", "7", "waiting longer than max_waiting (600 s)")
    sent = apply_success(waiting_since(NOW - 600), action, NOW)
    assert sent is not None and sent.policy_reason == "waiting longer than max_waiting (600 s)"
    assert decide(desired, sent, NOW + 59, POLICY, limits) is None  # resent only after cancel_resend_after
    assert wake_at(desired, sent, POLICY, limits) == NOW + 60


def test_a_held_job_uses_max_held() -> None:
    limits = CELimits(max_waiting=10_000, max_held=60)
    held = waiting_since(NOW - 61, native="Held", reason="held: submitted on hold (HoldReasonCode 15)")
    assert is_held(held) and not is_held(waiting_since(NOW))
    assert decide(Desired("k", "ce", SPEC), held, NOW, POLICY, limits) == \
        Cancel("k", "7", "held longer than max_held (60 s)")
    slurm_held = waiting_since(NOW - 61, reason="JobHeldUser")
    assert is_held(slurm_held)


def test_the_timeout_counts_from_when_the_state_was_first_seen_not_from_the_last_poll() -> None:
    progress = Progress(job_id="7", submit_intent=True)
    waiting = JobStatus(job_id="7", state=JobState.WAITING, native_state="PENDING")
    first = progress.with_observation(waiting, NOW)
    again = first.with_observation(waiting.model_copy(update={"reason": "Priority"}), NOW + 50)
    assert first.state_since == NOW and again.state_since == NOW
    running = again.with_observation(JobStatus(job_id="7", state=JobState.RUNNING), NOW + 60)
    assert running.state_since == NOW + 60


def test_a_job_unknown_past_the_grace_is_declared_lost_never_dropped() -> None:
    limits = CELimits(lost_after=120)
    unknown = Progress(job_id="7", submit_intent=True, state=JobState.UNKNOWN, reason="in neither queue nor history",
                       state_since=NOW - 121)
    for phase in (Phase.RUNNING, Phase.CANCELLED, Phase.FORGOTTEN):
        action = decide(Desired("k", "ce", SPEC, phase), unknown, NOW, POLICY, limits)
        assert isinstance(action, DeclareLost) and "grace (120 s)" in action.reason
    lost = apply_success(unknown, DeclareLost("k", "lost: ..."), NOW)
    assert lost is not None and lost.state is JobState.ABORTED and lost.native_state == "Lost"
    assert lost.terminal and lost.policy_reason == "lost: ..."
    assert decide(Desired("k", "ce", SPEC), unknown, NOW - 2, POLICY, limits) is None
