"""Keys, declarations and progress transitions."""

from __future__ import annotations

from pathlib import Path

import pytest

from intercede.errors import InvalidSpecError
from intercede.model import Copy, JobSpec, JobState, JobStatus
from intercede.reconcile import Desired, Phase, Progress, validate_key

pytestmark = pytest.mark.actors

SPEC = JobSpec(executable="/bin/true")


@pytest.mark.parametrize("key", ["a", "wms:1234.5-x_y", "A" * 128])
def test_keys_that_can_be_tags_are_accepted(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize("key", ["", "A" * 129, "has space", "-leading", "semi;colon", "new\nline", "é"])
def test_keys_that_cannot_be_tags_are_refused_by_name(key: str) -> None:
    with pytest.raises(InvalidSpecError, match="job key"):
        validate_key(key)


def test_a_declaration_is_one_job_with_an_absolute_destination_when_collected() -> None:
    with pytest.raises(InvalidSpecError, match="one copy"):
        Desired("k", "ce", SPEC.model_copy(update={"copies": [Copy(), Copy()]}))
    with pytest.raises(InvalidSpecError, match="destination"):
        Desired("k", "ce", SPEC, Phase.COLLECTED)
    with pytest.raises(InvalidSpecError, match="absolute"):
        Desired("k", "ce", SPEC, Phase.COLLECTED, Path("relative"))
    with pytest.raises(InvalidSpecError, match="CE name"):
        Desired("k", "", SPEC)


def test_the_submitted_spec_is_tagged_with_the_key() -> None:
    assert Desired("wms.1", "ce", SPEC.model_copy(update={"tag": "other"})).submission().tag == "wms.1"


def test_success_clears_the_failure_count_but_losing_an_intent_does_not() -> None:
    failing = Progress(submit_intent=True).with_error("x", permanent=False, next_attempt_at=9.0, attempts=3)
    assert failing.without_submit_intent().attempts == 3
    assert failing.with_job_id("1") == Progress(job_id="1", submit_intent=True)


def test_a_permanent_error_has_no_retry_time() -> None:
    p = Progress().with_error("refused", permanent=True, next_attempt_at=9.0, attempts=1)
    assert (p.permanent_error, p.next_attempt_at) == ("refused", None)


def test_a_terminal_observation_is_final() -> None:
    done = Progress(job_id="1").with_observation(JobStatus(job_id="1", state=JobState.DONE, exit_code=0), 1.0)
    later = done.with_observation(JobStatus(job_id="1", state=JobState.UNKNOWN, reason="gone"), 2.0)
    assert (later.state, later.exit_code, later.reason, later.last_seen) == (JobState.DONE, 0, "", 2.0)


@pytest.mark.parametrize("state", [*JobState, None])
def test_progress_is_terminal_exactly_when_its_state_is(state: JobState | None) -> None:
    assert Progress(state=state).terminal == (state is not None and state.is_terminal)
