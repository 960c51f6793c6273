"""Nothing is left behind at the resource or polled forever (issue 14, item 6), on real Ray and the local CE."""

from __future__ import annotations

from pathlib import Path

import pytest

from intercede.actors.reconciler import JobRequest
from intercede.errors import InvalidSpecError
from intercede.model import JobSpec
from tests.hostile.input_ray import Running, intercede_on_ray, until

__all__ = ["intercede_on_ray"]  # the fixture, imported for pytest

pytestmark = pytest.mark.actors


async def test_a_cancelled_jobs_directory_is_purged_once_the_job_has_ended(
        intercede_on_ray: Running, tmp_path: Path) -> None:
    run = intercede_on_ray
    jobs = [JobRequest("doomed", "local", JobSpec(executable="/bin/sleep", arguments=["60"])),
            JobRequest("ended-first", "local", JobSpec(executable="/bin/true"))]
    await run.ic.declare(jobs, progress=False)

    async def started() -> bool:
        return {r.key: r.state for r in await run.ic.rows()} == {"doomed": "Running", "ended-first": "Done"}

    await until(started, what="one job running, one done")
    assert len(list(run.jobs_root.iterdir())) == 2
    await run.ic.cancel(["doomed", "ended-first"])

    async def purged() -> bool:
        return not any(run.jobs_root.iterdir())

    await until(purged, what="the cancelled jobs' directories to be purged")
    states = {r.key: r.state for r in await run.ic.rows()}
    assert states == {"doomed": "Aborted", "ended-first": "Done"}
    with pytest.raises(InvalidSpecError, match="nothing left to collect"):
        await run.ic.collect(["doomed"], tmp_path / "out")


async def test_finished_jobs_nobody_collects_stop_being_polled(intercede_on_ray: Running) -> None:
    run = intercede_on_ray
    keys = [f"idle-{i:02d}" for i in range(40)]
    await run.ic.declare([JobRequest(k, "local", JobSpec(executable="/bin/true")) for k in keys], progress=False)
    rows = await run.ic.wait(keys, timeout=120, progress=False)
    assert {r.state for r in rows} == {"Done"}

    async def untracked() -> bool:
        return (await run.ce_health())["tracked"] == 0

    await until(untracked, timeout=30, what="the CE actor to stop tracking finished jobs")
    assert (await run.ce_health())["states"] == {}  # their cached statuses are dropped too
    # The CE actor still polls what can change: a new job is seen to its end.
    await run.ic.declare([JobRequest("late", "local", JobSpec(executable="/bin/sleep", arguments=["1"]))],
                         progress=False)
    (late,) = await run.ic.wait(["late"], timeout=60, progress=False)
    assert late.state == "Done"
    assert all(r.state == "Done" for r in await run.ic.rows())  # the untracked ones keep their recorded state
