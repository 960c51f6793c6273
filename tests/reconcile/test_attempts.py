"""Attempt ids, the fence and the sweep: a submit that lands late never runs a payload twice (issue 14, item 1).

Over the in-memory CE (:mod:`tests.reconcile.fakes`), which models BatchBackend's fence: a job claims its attempt
when it starts, unless the attempt was fenced first (then it fails without running its payload).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from intercede.model import Copy, JobSpec, JobState
from intercede.reconcile import Adopt, Fetch, Forget, Journal, Phase, Purge, RetryPolicy, Submit
from tests.reconcile.test_reconciler import CE, SPEC, World

pytestmark = pytest.mark.actors

_ATTEMPT = re.compile(r"[0-9a-f]{16}\Z")


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


async def _collect(world: World, key: str, out: Path, rounds: int = 12) -> None:
    world.reconciler.collect(key, out / key)
    await world.settle(rounds)


async def test_every_submit_carries_a_new_attempt_id_journaled_before_it(world: World, tmp_path: Path) -> None:
    world.gateway.orphan_next_submit = 1
    world.reconciler.declare("k", CE, SPEC)
    assert await world.reconciler.tick() == [Submit("k")]
    (first,) = world.reconciler.progress("k").submit_attempts
    assert _ATTEMPT.match(first) and world.resource.orphans[0].attempt == first
    world.clock.advance(10)
    assert await world.reconciler.tick() == [Adopt("k")]
    assert await world.reconciler.tick() == [Submit("k")]
    attempts = world.reconciler.progress("k").submit_attempts
    assert attempts[0] == first and len(attempts) == 2 and attempts[1] != first
    assert world.resource.ever_tagged("k")[0].attempt == attempts[1]
    world.reconciler.close()
    with Journal(world.path) as journal:
        assert journal.progress("k").submit_attempts == attempts


async def test_an_orphaned_submit_that_lands_after_the_resubmit_never_runs_its_payload(
        world: World, tmp_path: Path) -> None:
    world.gateway.orphan_next_submit = 1  # the connection drops; the remote sbatch goes on retrying
    world.reconciler.declare("k", CE, SPEC)
    await world.reconciler.tick()
    world.clock.advance(10)
    assert await world.reconciler.tick() == [Adopt("k")]  # nothing found yet: the first attempt is fenced
    assert world.gateway.count("fence") == 1
    assert await world.reconciler.tick() == [Submit("k")]
    (orphan,) = world.resource.land_orphans()  # ... and then the orphan lands too
    await _collect(world, "k", tmp_path / "out")
    assert world.resource.runs("k") == 1, "the payload ran once: the orphan exited at its fence"
    assert orphan.purged, "the orphan was found at the last purge and removed"
    assert set(world.reconciler.progress("k").submit_attempts) - {orphan.attempt} <= world.resource.discarded | {
        world.resource.jobs[world.reconciler.progress("k").job_id or ""].attempt}
    assert orphan.attempt in world.resource.discarded
    assert world.reconciler.progress("k").purged


async def test_an_orphan_found_by_the_adopt_is_adopted_and_never_resubmitted(world: World) -> None:
    world.gateway.orphan_next_submit = 1
    world.reconciler.declare("k", CE, SPEC)
    await world.reconciler.tick()
    (orphan,) = world.resource.land_orphans()
    world.clock.advance(10)
    assert await world.reconciler.tick() == [Adopt("k")]
    assert world.reconciler.progress("k").job_id == orphan.job_id
    assert world.gateway.count("fence") == 0 and world.gateway.count("submit") == 1


async def test_a_job_of_another_key_renamed_to_this_tag_is_never_adopted_cancelled_or_purged(
        world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    world.gateway.orphan_next_submit = 1
    world.reconciler.declare("victim", CE, SPEC)
    await world.reconciler.tick()
    world.resource.orphans.clear()  # that submit never landed
    # Another key's payload renames its own job (its attempt is not the victim's) to the victim's tag.
    impostor = world.resource.create(SPEC.model_copy(update={"tag": "victim", "attempt": "0123456789abcdef"}))
    world.clock.advance(10)
    assert await world.reconciler.tick() == [Adopt("victim")]
    assert "carry none of its attempt ids" in caplog.text
    assert await world.reconciler.tick() == [Submit("victim")]
    await _collect(world, "victim", tmp_path / "out")
    progress = world.reconciler.progress("victim")
    assert progress.job_id != impostor.job_id and progress.purged
    assert not impostor.purged and impostor.state is not world.resource.jobs[progress.job_id or ""].state.ABORTED


async def test_an_attempt_claimed_by_a_job_its_tag_does_not_find_is_never_resubmitted(world: World) -> None:
    world.reconciler.close()
    world.policy = RetryPolicy(live_attempt_tries=3)
    world.reconciler = world.start()
    world.gateway.orphan_next_submit = 1
    world.reconciler.declare("k", CE, SPEC)
    await world.reconciler.tick()
    (orphan,) = world.resource.land_orphans()
    orphan.hidden = True  # its payload renamed it: the tag lookup cannot see it
    world.resource.advance()  # it starts and claims its attempt
    for _ in range(10):
        world.clock.advance(1000)
        await world.reconciler.tick()
    progress = world.reconciler.progress("k")
    assert world.gateway.count("submit") == 1, "never a second submit while an earlier attempt runs"
    assert world.gateway.count("fence") == 2  # the failed submit was the first of the 3 consecutive failures
    assert progress.permanent_error is not None and "refusing to resubmit" in progress.permanent_error
    assert progress.submit_intent and progress.job_id is None


async def test_no_lookup_is_trusted_while_the_ce_actor_still_submits_the_key(world: World) -> None:
    world.gateway.orphan_next_submit = 1
    world.reconciler.declare("k", CE, SPEC)
    await world.reconciler.tick()
    world.gateway.in_flight_tags = {"k"}  # the old reconciler's submit still runs in the surviving CE actor
    for _ in range(3):
        world.clock.advance(1000)
        assert await world.reconciler.tick() == [Adopt("k")]
    assert world.gateway.count("fence") == 0 and world.gateway.count("submit") == 1
    assert "still running" in (world.reconciler.progress("k").last_error or "")
    (orphan,) = world.resource.land_orphans()  # that submit ends: its job is there
    world.gateway.in_flight_tags = set()
    world.clock.advance(1000)
    assert await world.reconciler.tick() == [Adopt("k")]
    assert world.reconciler.progress("k").job_id == orphan.job_id


async def test_two_attempts_that_both_land_late_keep_the_latest_whose_payload_runs(
        world: World, tmp_path: Path) -> None:
    world.gateway.orphan_next_submit = 2  # the first submit and its resubmit are both cut short, both land later
    world.reconciler.declare("k", CE, SPEC)
    await world.reconciler.tick()
    world.clock.advance(10)
    assert await world.reconciler.tick() == [Adopt("k")]  # the first attempt is fenced
    assert await world.reconciler.tick() == [Submit("k")]
    first, second = world.resource.land_orphans()
    world.clock.advance(10)
    assert await world.reconciler.tick() == [Adopt("k")]
    assert world.reconciler.progress("k").job_id == second.job_id, "the fenced first attempt is never the keeper"
    assert first.purged and not second.purged
    await _collect(world, "k", tmp_path / "out")
    assert world.resource.runs("k") == 1 and world.reconciler.progress("k").purged


async def test_a_forgotten_key_that_never_got_a_job_discards_its_fenced_attempts(world: World) -> None:
    world.gateway.orphan_next_submit = 1
    world.reconciler.declare("k", CE, SPEC)
    await world.reconciler.tick()
    (attempt,) = world.reconciler.progress("k").submit_attempts
    world.clock.advance(10)
    assert await world.reconciler.tick() == [Adopt("k")]  # fenced; the intent is cleared
    world.reconciler.forget("k")
    (orphan,) = world.resource.land_orphans()
    await world.settle(3)
    assert "k" not in {row.key for row in world.reconciler.snapshot()}
    assert attempt in world.resource.discarded and orphan.purged and world.resource.runs("k") == 0


async def test_a_key_submitted_once_is_purged_without_a_second_lookup(world: World, tmp_path: Path) -> None:
    world.reconciler.declare("k", CE, SPEC)
    await _collect(world, "k", tmp_path / "out")
    assert Purge("k", world.reconciler.progress("k").job_id or "") and world.reconciler.progress("k").purged
    assert world.gateway.count("find_attempts") == 0 and world.gateway.count("discard_attempts") == 0


async def test_a_late_job_still_queued_at_the_last_purge_is_cancelled_and_purged_once_it_ended(
        world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    world.gateway.orphan_next_submit = 1
    world.reconciler.declare("k", CE, SPEC, Phase.COLLECTED, tmp_path / "out" / "k")
    await world.reconciler.tick()
    world.clock.advance(10)
    assert await world.reconciler.tick() == [Adopt("k")]
    assert await world.reconciler.tick() == [Submit("k")]
    for _ in range(2):  # the resubmitted job runs to its end
        world.resource.advance()
        world.poll()
    assert isinstance((await world.reconciler.tick())[0], Fetch)
    (orphan,) = world.resource.land_orphans()  # lands just now, still queued
    job_id = world.reconciler.progress("k").job_id or ""
    assert await world.reconciler.tick() == [Purge("k", job_id)]
    assert orphan.state is JobState.ABORTED and not orphan.purged, "cancelled first, not purged under its feet"
    assert not world.reconciler.progress("k").purged and "once it has ended" in caplog.text
    world.clock.advance(10)
    assert await world.reconciler.tick() == [Purge("k", job_id)]
    assert orphan.purged and world.reconciler.progress("k").purged and world.resource.runs("k") == 1


async def test_the_reconciler_leaves_no_secret_in_its_journal_files_once_the_job_runs_or_is_forgotten(
        world: World) -> None:
    def journal_bytes() -> bytes:
        return b"".join(p.read_bytes() for p in world.path.parent.glob(world.path.name + "*") if p.is_file())

    def spec(secret: str) -> JobSpec:
        return SPEC.model_copy(update={"copies": [Copy(secrets={"TOKEN": SecretStr(secret)})]})

    world.gateway.down = True
    world.reconciler.declare("runs", CE, spec("first-secret-123"))
    world.reconciler.declare("dropped", CE, spec("second-secret-456"))
    await world.reconciler.tick()
    assert b"first-secret-123" in journal_bytes() and b"second-secret-456" in journal_bytes()
    world.gateway.down = False
    world.clock.advance(100)
    world.reconciler.forget("dropped")
    assert await world.reconciler.tick() == [Adopt("dropped"), Adopt("runs")]  # nothing there: fenced, cleared
    assert await world.reconciler.tick() == [Forget("dropped"), Submit("runs")]
    assert world.reconciler.progress("runs").job_id is not None
    assert world.resource.ever_tagged("runs")[0].spec.copies[0].secrets["TOKEN"].get_secret_value() == \
        "first-secret-123", "the job got its secret"
    raw = journal_bytes()
    assert b"first-secret-123" not in raw and b"second-secret-456" not in raw
