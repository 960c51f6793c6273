"""Bad requests through the public API (the ``Intercede`` facade on real Ray, the local CE): each is answered with a
typed error naming what is wrong, and changes nothing (issue 14, item 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from intercede.actors.reconciler import JobRequest
from intercede.errors import InvalidSpecError, UnknownKeyError
from intercede.model import JobSpec
from intercede.reconcile import Phase
from tests.hostile.input_ray import Running, intercede_on_ray, until

__all__ = ["intercede_on_ray"]  # the fixture, imported for pytest

pytestmark = pytest.mark.hostile

SLEEP = JobSpec(executable="/bin/sleep", arguments=["60"])
TRUE = JobSpec(executable="/bin/true")


async def _phases(run: Running) -> dict[str, str]:
    return {r.key: r.phase for r in await run.ic.rows()}


async def test_cancel_forget_and_collect_of_keys_never_declared_raise_unknown_key_error_and_change_nothing(
        intercede_on_ray: Running, tmp_path: Path) -> None:
    run = intercede_on_ray
    await run.ic.declare([JobRequest("known-1", "local", SLEEP)], progress=False)
    with pytest.raises(UnknownKeyError, match="ghost-1") as info:
        await run.ic.cancel(["known-1", "ghost-1"])
    assert "known-1" not in str(info.value).split("never declared")[-1]
    with pytest.raises(UnknownKeyError, match="ghost-2"):
        await run.ic.forget(["ghost-2", "known-1"])
    with pytest.raises(UnknownKeyError, match="ghost-3"):
        await run.ic.collect(["ghost-3"], tmp_path / "out")
    with pytest.raises(UnknownKeyError, match="ghost-4"):
        await run.ic.wait(["ghost-4"], timeout=5, progress=False)
    assert await _phases(run) == {"known-1": "running"}  # all or nothing: known-1 was neither cancelled nor forgotten


async def test_a_batch_declare_with_one_bad_entry_declares_nothing_and_names_the_bad_entries(
        intercede_on_ray: Running) -> None:
    run = intercede_on_ray
    jobs = [JobRequest(f"ok-{i}", "local", TRUE) for i in range(5)]
    jobs.insert(3, JobRequest("misplaced", "nowhere", TRUE))
    jobs.insert(5, JobRequest("bad key!", "local", TRUE))
    for batch in (500, 2):  # one actor call, and several (checked before the first is applied)
        with pytest.raises(InvalidSpecError, match="nowhere") as info:
            await run.ic.declare(jobs, batch=batch, progress=False)
        assert "bad key!" in str(info.value) and "2 of 7" in str(info.value)
        assert await run.ic.rows() == []
    await run.ic.declare([j for j in jobs if j.ce == "local" and " " not in j.key], progress=False)
    assert sorted(await _phases(run)) == [f"ok-{i}" for i in range(5)]


async def test_declaring_a_key_while_it_is_being_forgotten_is_refused_then_accepted_once_it_is_gone(
        intercede_on_ray: Running) -> None:
    run = intercede_on_ray
    await run.ic.declare([JobRequest("phoenix", "local", SLEEP)], progress=False)

    async def running() -> bool:
        return [r.state for r in await run.ic.rows()] == ["Running"]

    await until(running, what="the job running")
    await run.ic.forget(["phoenix"])
    # The forget has to cancel the job, see it end, purge it: it cannot be over yet.
    with pytest.raises(InvalidSpecError, match=r"phoenix.*being forgotten"):
        await run.ic.declare([JobRequest("phoenix", "local", SLEEP)], progress=False)

    async def gone() -> bool:
        return await run.ic.rows() == []

    await until(gone, what="the forget to complete")
    await run.ic.declare([JobRequest("phoenix", "local", TRUE)], progress=False)
    (row,) = await run.ic.wait(["phoenix"], timeout=60, progress=False)
    assert (row.phase, row.state) == ("running", "Done")


async def test_forgetting_a_key_whose_submit_was_refused_completes_and_the_key_can_be_declared_again(
        intercede_on_ray: Running) -> None:
    run = intercede_on_ray
    refused = JobSpec(executable="/bin/true", container="docker://debian:12")  # the local CE has no runtime
    await run.ic.declare([JobRequest("refused-1", "local", refused)], progress=False)
    (row,) = await run.ic.wait(["refused-1"], timeout=60, progress=False)
    assert row.permanent_error and row.job_id is None
    await run.ic.forget(["refused-1"])

    async def gone() -> bool:
        return await run.ic.rows() == []

    await until(gone, timeout=30, what="the forget of a refused key to complete")
    await run.ic.declare([JobRequest("refused-1", "local", TRUE, Phase.RUNNING)], progress=False)
    (row,) = await run.ic.wait(["refused-1"], timeout=60, progress=False)
    assert row.state == "Done" and not row.permanent_error
