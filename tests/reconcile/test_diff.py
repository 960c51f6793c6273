"""``diff`` by example: one test per step of each phase's progression."""

from __future__ import annotations

from pathlib import Path

import pytest

from intercede.model import JobSpec, JobState, OutputManifest
from intercede.reconcile import (
    Adopt,
    Cancel,
    Desired,
    Fetch,
    Forget,
    Phase,
    Progress,
    Purge,
    RetryPolicy,
    Submit,
    decide,
    diff,
    plan,
    wake_at,
)

pytestmark = pytest.mark.actors

SPEC = JobSpec(executable="/bin/true")
POLICY = RetryPolicy(cancel_resend_after=60.0, submits_per_tick=2)
NOW = 1000.0
DEST = Path("/out/k")
JOB = Progress(job_id="7", submit_intent=True)
MANIFEST = OutputManifest(job_id="7", destination=DEST)


def want(phase: Phase = Phase.RUNNING, ce: str = "ce") -> Desired:
    return Desired("k", ce, SPEC, phase, DEST)


def step(phase: Phase, progress: Progress, now: float = NOW) -> object:
    return decide(want(phase), progress, now, POLICY)


def test_running_submits_once_then_waits() -> None:
    assert step(Phase.RUNNING, Progress()) == Submit("k")
    assert step(Phase.RUNNING, JOB) is None
    assert step(Phase.RUNNING, Progress(job_id="7", state=JobState.DONE)) is None


@pytest.mark.parametrize("phase", list(Phase))
def test_an_intent_without_a_job_id_is_adopted_never_submitted(phase: Phase) -> None:
    assert step(phase, Progress(submit_intent=True)) == Adopt("k")


def test_cancelled_cancels_a_live_job_and_resends_only_after_the_delay() -> None:
    assert step(Phase.CANCELLED, Progress()) is None  # never submitted: nothing, ever
    assert step(Phase.CANCELLED, JOB) == Cancel("k", "7")
    sent = Progress(job_id="7", cancel_sent_at=NOW - 59)
    assert step(Phase.CANCELLED, sent) is None
    assert step(Phase.CANCELLED, sent, NOW + 1) == Cancel("k", "7")
    assert step(Phase.CANCELLED, Progress(job_id="7", state=JobState.ABORTED)) == Purge("k", "7")


def test_collected_waits_for_the_end_then_fetches_then_purges_then_rests() -> None:
    assert step(Phase.COLLECTED, Progress()) == Submit("k")
    assert step(Phase.COLLECTED, Progress(job_id="7", state=JobState.RUNNING)) is None
    done = Progress(job_id="7", state=JobState.DONE)
    assert step(Phase.COLLECTED, done) == Fetch("k", "7", DEST)
    assert step(Phase.COLLECTED, done.with_manifest(MANIFEST)) == Purge("k", "7")
    assert step(Phase.COLLECTED, done.with_manifest(MANIFEST).with_purged()) is None


def test_forgotten_cancels_then_purges_then_forgets() -> None:
    assert step(Phase.FORGOTTEN, Progress()) == Forget("k")
    assert step(Phase.FORGOTTEN, JOB) == Cancel("k", "7")
    dead = Progress(job_id="7", state=JobState.FAILED)
    assert step(Phase.FORGOTTEN, dead) == Purge("k", "7")
    assert step(Phase.FORGOTTEN, dead.with_purged()) == Forget("k")


def test_backoff_and_permanent_errors_hold_every_action() -> None:
    backing_off = Progress(next_attempt_at=NOW + 1)
    assert step(Phase.RUNNING, backing_off) is None
    assert step(Phase.RUNNING, backing_off, NOW + 1) == Submit("k")
    assert step(Phase.FORGOTTEN, Progress(job_id="7", permanent_error="refused")) is None


def test_a_cancelled_key_whose_job_ended_is_purged_once_its_files_were_kept_long_enough() -> None:
    keep = POLICY.purge_cancelled_after
    for state in (JobState.ABORTED, JobState.DONE, JobState.FAILED):
        ended = Progress(job_id="7", submit_intent=True, state=state, cancel_sent_at=NOW - 1)
        assert step(Phase.CANCELLED, ended) is None  # a collect may still fetch its outputs
        assert wake_at(want(Phase.CANCELLED), ended, POLICY) == NOW - 1 + keep
        assert step(Phase.CANCELLED, ended, NOW - 1 + keep) == Purge("k", "7")
        assert step(Phase.CANCELLED, ended.with_purged(), NOW + keep) is None
        assert wake_at(want(Phase.CANCELLED), ended.with_purged(), POLICY) is None
    ended_before_any_cancel = Progress(job_id="7", state=JobState.DONE)
    assert step(Phase.CANCELLED, ended_before_any_cancel) == Purge("k", "7")
    assert step(Phase.CANCELLED, Progress(job_id="7", state=JobState.RUNNING, cancel_sent_at=NOW - 1), NOW + keep) \
        == Cancel("k", "7")  # a job still running is cancelled again, never purged


def test_forgetting_a_key_with_nothing_at_the_resource_completes_despite_a_permanent_error() -> None:
    refused = Progress(permanent_error="submit refused: no container runtime", attempts=1)  # intent cleared
    assert step(Phase.FORGOTTEN, refused) == Forget("k")
    assert step(Phase.FORGOTTEN, Progress(job_id="7", purged=True, permanent_error="x")) == Forget("k")
    # A job may exist (an intent, or a job not purged): the permanent error still holds every action.
    assert step(Phase.FORGOTTEN, Progress(submit_intent=True, permanent_error="adopt: denied")) is None
    assert step(Phase.FORGOTTEN, Progress(job_id="7", permanent_error="purge refused")) is None
    for phase in (Phase.RUNNING, Phase.CANCELLED, Phase.COLLECTED):
        assert step(phase, refused) is None


def test_an_unreachable_ce_gets_nothing_and_others_carry_on() -> None:
    desired = {"a": Desired("a", "down", SPEC), "b": Desired("b", "up", SPEC)}
    assert diff(desired, desired, {}, {"down": False}, NOW, POLICY) == [Submit("b")]


def test_submits_beyond_the_budget_are_deferred_in_key_order() -> None:
    desired = {k: Desired(k, "ce", SPEC) for k in ["d", "a", "c", "b"]}
    result = plan(desired, desired, {}, {}, NOW, POLICY)
    assert result.actions == (Submit("a"), Submit("b"))
    assert result.deferred == ("c", "d")
    assert plan(desired, desired, {}, {}, NOW, POLICY, {"ce": 0}).actions == ()


def test_a_cancel_budget_does_not_exist_only_submits_are_limited() -> None:
    desired = {k: Desired(k, "ce", SPEC, Phase.CANCELLED) for k in "abcde"}
    progress = {k: Progress(job_id=k) for k in "abcde"}
    assert len(diff(desired, desired, progress, {}, NOW, POLICY)) == 5


def test_wake_at_is_when_time_alone_unblocks_a_key() -> None:
    assert wake_at(want(), Progress(), POLICY) is None
    assert wake_at(want(), Progress(next_attempt_at=5.0), POLICY) == 5.0
    sent = Progress(job_id="7", cancel_sent_at=100.0, next_attempt_at=120.0)
    assert wake_at(want(Phase.CANCELLED), sent, POLICY) == 160.0
    assert wake_at(want(Phase.RUNNING), sent, POLICY) == 120.0
    assert wake_at(want(), Progress(next_attempt_at=5.0, permanent_error="x"), POLICY) is None
