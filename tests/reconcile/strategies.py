"""Hypothesis strategies for reconciler states: any mix of phases, progress, reachability, budgets and time."""

from __future__ import annotations

from pathlib import Path

from hypothesis import strategies as st

from intercede.model import JobSpec, JobState, OutputManifest
from intercede.reconcile import Desired, Phase, Progress

SPEC = JobSpec(executable="/bin/true")
KEYS = [f"k{i}" for i in range(12)]
CES = ["ce0", "ce1", "ce2"]
NOW = 1_000.0

times = st.one_of(st.none(), st.floats(min_value=900.0, max_value=1100.0))


@st.composite
def desired_for(draw: st.DrawFn, key: str) -> Desired:
    phase = draw(st.sampled_from(list(Phase)))
    # Every key gets a destination, so any phase can become COLLECTED later.
    return Desired(key, draw(st.sampled_from(CES)), SPEC, phase, Path("/out") / key)


@st.composite
def progress_for(draw: st.DrawFn, key: str) -> Progress:
    has_job = draw(st.booleans())
    job_id = f"j-{key}" if has_job else None
    state = draw(st.one_of(st.none(), st.sampled_from(list(JobState))))
    return Progress(
        job_id=job_id,
        submit_intent=True if has_job else draw(st.booleans()),
        state=state,
        cancel_sent_at=draw(times),
        manifest=OutputManifest(job_id=job_id, destination=Path("/out") / key) if has_job and draw(st.booleans())
        else None,
        purged=has_job and draw(st.booleans()),
        attempts=draw(st.integers(0, 5)),
        next_attempt_at=draw(times),
        permanent_error=draw(st.sampled_from([None, None, None, "refused"])),
    )


@st.composite
def worlds(draw: st.DrawFn) -> tuple[dict[str, Desired], dict[str, Progress], dict[str, bool], dict[str, int]]:
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=len(KEYS)))
    desired = {key: draw(desired_for(key)) for key in keys}
    progress = {key: draw(progress_for(key)) for key in keys if draw(st.booleans())}
    reachable = draw(st.dictionaries(st.sampled_from(CES), st.booleans()))
    budget = draw(st.dictionaries(st.sampled_from(CES), st.integers(0, 4)))
    return desired, progress, reachable, budget
