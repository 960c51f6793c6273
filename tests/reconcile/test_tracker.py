"""The working set: dirty keys, wake-ups, indexes."""

from __future__ import annotations

import pytest

from intercede.model import JobSpec, JobState, JobStatus
from intercede.reconcile import Desired, Phase, Progress, ReconcileState, RetryPolicy, Submit

pytestmark = pytest.mark.actors

SPEC = JobSpec(executable="/bin/true")


def _state(*keys: str) -> ReconcileState:
    state = ReconcileState(RetryPolicy())
    for key in keys:
        state.put(Desired(key, "ce", SPEC))
    return state


def test_a_tick_takes_the_dirty_keys_once() -> None:
    state = _state("a", "b")
    assert state.due(0.0) == {"a", "b"}
    assert state.due(0.0) == set()
    state.put_progress("a", Progress(job_id="1"))
    assert state.due(0.0) == {"a"}


def test_a_key_backing_off_comes_back_when_its_time_comes_and_not_before() -> None:
    state = _state("a")
    state.due(0.0)
    state.put_progress("a", Progress(next_attempt_at=10.0))
    assert state.plan(5.0).actions == ()
    assert state.due(9.9) == set()
    assert state.plan(10.0).actions == (Submit("a"),)


def test_a_moved_wake_up_leaves_no_stale_wake_up() -> None:
    state = _state("a")
    state.put_progress("a", Progress(next_attempt_at=10.0))
    state.put_progress("a", Progress(next_attempt_at=20.0))
    state.due(0.0)
    assert state.due(15.0) == set()
    assert state.due(20.0) == {"a"}


def test_keys_deferred_by_the_budget_stay_dirty() -> None:
    state = ReconcileState(RetryPolicy(submits_per_tick=1))
    for key in "abc":
        state.put(Desired(key, "ce", SPEC))
    assert state.plan(0.0).actions == (Submit("a"),)
    assert state.dirty == {"b", "c"}


def test_a_ce_coming_back_dirties_all_its_keys_only() -> None:
    state = _state("a")
    state.put(Desired("z", "other", SPEC))
    state.set_reachable("ce", False)
    state.due(0.0)
    state.set_reachable("ce", False)
    assert state.dirty == set()
    state.set_reachable("ce", True)
    assert state.dirty == {"a"}


def test_jobs_are_indexed_and_polled_until_they_end() -> None:
    state = _state("a", "b")
    state.put_progress("a", Progress(job_id="1"))
    state.put_progress("b", Progress(job_id="2"))
    assert state.key_for_job("ce", "1") == "a" and state.key_for_job("other", "1") is None
    assert state.tracked_job_ids("ce") == ["1", "2"]
    done = state.progress["a"].with_observation(JobStatus(job_id="1", state=JobState.DONE), 1.0)
    state.put_progress("a", done)
    assert state.tracked_job_ids("ce") == ["2"]
    state.remove("b")
    assert state.tracked_job_ids("ce") == [] and state.key_for_job("ce", "2") is None
    assert "b" not in state and len(state) == 1


def test_a_phase_change_is_a_change() -> None:
    state = _state("a")
    state.due(0.0)
    state.put(state.desired["a"].with_phase(Phase.CANCELLED))
    assert state.due(0.0) == {"a"}
