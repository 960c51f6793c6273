"""The reconciler end to end over an in-memory CE: crash safety, errors, phases, restart."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from intercede.errors import AuthenticationError, InvalidSpecError, JournalError
from intercede.model import JobSpec, JobState, JobStatus, OutputManifest
from intercede.reconcile import (
    Adopt,
    Cancel,
    FakeClock,
    Fetch,
    Forget,
    Journal,
    ManifestMismatchError,
    Phase,
    Progress,
    Purge,
    Reconciler,
    RetryPolicy,
    Submit,
)
from tests.reconcile.fakes import Crash, Crasher, FakeGateway, FakeResource, output_text

pytestmark = pytest.mark.actors

SPEC = JobSpec(executable="/bin/echo", arguments=["hello"])
CE = "ce-a"


class World:
    """One fake CE and a journal path that outlive any number of reconciler crashes."""

    def __init__(self, tmp_path: Path, *, crasher: Crasher | None = None, policy: RetryPolicy | None = None,
                 concurrency: int = 8) -> None:
        self.path = tmp_path / "journal.db"
        self.resource = FakeResource()
        self.gateway = FakeGateway(self.resource, crasher)
        self.clock = FakeClock()
        self.policy = policy or RetryPolicy()
        self.concurrency = concurrency
        self.reconciler = self.start()
        self.restarts = 0

    def start(self) -> Reconciler:
        return Reconciler(Journal(self.path), {CE: self.gateway}, policy=self.policy, clock=self.clock,
                          concurrency=self.concurrency)

    def restart(self) -> Reconciler:
        # A dead process keeps nothing in memory; the OS drops its journal lock.
        self.reconciler.close()
        self.reconciler = self.start()
        self.restarts += 1
        if self.gateway.crasher is not None:
            self.gateway.crasher.rearm()
        return self.reconciler

    def poll(self) -> None:
        """What the CE actor does: report the tracked jobs' states."""
        rec = self.reconciler
        rec.observe(CE, self.resource.statuses(rec.tracked_job_ids(CE)))

    async def settle(self, rounds: int = 20, step: float = 5.0) -> None:
        for _ in range(rounds):
            await self.reconciler.tick()
            self.resource.advance()
            self.poll()
            self.clock.advance(step)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def assert_memory_matches_journal(rec: Reconciler, path: Path) -> None:
    """What a restart would load is what the running reconciler holds (apart from last_seen, kept in memory)."""
    rec.close()
    with Journal(path) as journal:
        desired, progress = journal.load()
    rows = {row.key: row for row in rec.snapshot()}
    assert set(desired) == set(rows)
    for key, p in progress.items():
        mine = rec.progress(key)
        assert (mine.job_id, mine.state, mine.manifest, mine.purged, mine.attempts, mine.permanent_error) == (
            p.job_id, p.state, p.manifest, p.purged, p.attempts, p.permanent_error)
        assert rec.desired(key) == desired[key]


# ---- crashes


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_crashes_submit_every_key_exactly_once_and_keep_every_collected_output(
        tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    crasher = Crasher(rng, probability=0.25)
    world = World(tmp_path, crasher=crasher, policy=RetryPolicy(submits_per_tick=6, cancel_resend_after=20),
                  concurrency=4)
    out = tmp_path / "out"
    keys = [f"wms.{i:03d}" for i in range(40)]
    running = keys[0::4]
    collect_declared = keys[1::4]
    collect_later = keys[2::4]
    forget_later = keys[3::4]
    for key in keys:
        if key in collect_declared:
            world.reconciler.declare(key, CE, SPEC, Phase.COLLECTED, out / key)
        else:
            world.reconciler.declare(key, CE, SPEC)

    for iteration in range(400):
        if crasher.crashes >= 60:
            crasher.probability = 0.0  # enough pain: let it finish
        try:
            if iteration == 3:
                for key in collect_later:
                    world.reconciler.collect(key, out / key)
            if iteration == 5:
                for key in forget_later:
                    world.reconciler.forget(key)
            await world.reconciler.tick()
            world.resource.advance()
            world.poll()
        except Crash:
            world.restart()
        world.clock.advance(5)
        rec = world.reconciler
        snapshot = {row.key: row for row in rec.snapshot()}
        done = (
            iteration > 5
            and all(snapshot[k].state is JobState.DONE for k in running)
            and all(rec.progress(k).purged for k in collect_declared + collect_later)
            and not any(k in snapshot for k in forget_later)
        )
        if done:
            break
    else:
        pytest.fail(f"did not converge; crashes at {crasher.points}")

    assert crasher.crashes >= 20
    # Both sides of the riskiest step were hit: between intent and submit, and between submit and its record.
    assert {"before submit", "after submit"} <= set(crasher.points)
    assert {"before fetch", "after fetch"} & set(crasher.points)  # which side of a fetch a seed hits varies
    assert world.restarts == crasher.crashes
    assert not any(row.permanent_error for row in world.reconciler.snapshot())
    for key in running + collect_declared + collect_later:
        assert len(world.resource.ever_tagged(key)) == 1, key
        assert world.reconciler.progress(key).job_id == world.resource.ever_tagged(key)[0].job_id
    for key in forget_later:
        assert len(world.resource.ever_tagged(key)) <= 1, key
        assert all(job.purged for job in world.resource.ever_tagged(key))
    for key in collect_declared + collect_later:
        assert (out / key / "stdout.txt").read_bytes() == output_text(key)
        manifest = world.reconciler.progress(key).manifest
        assert manifest is not None and [f.name for f in manifest.files] == ["stdout.txt"]
        assert world.resource.ever_tagged(key)[0].purged
    assert_memory_matches_journal(world.reconciler, world.path)


async def test_a_crash_between_intent_and_submit_is_adopted_as_nothing_then_submitted_once(
        tmp_path: Path) -> None:
    world = World(tmp_path)
    world.reconciler.declare("k1", CE, SPEC)
    world.gateway.crasher = Crasher(random.Random(0), probability=1.0)
    with pytest.raises(Crash, match="before submit"):
        await world.reconciler.tick()
    world.gateway.crasher = None
    rec = world.restart()
    assert rec.progress("k1").submit_intent and rec.progress("k1").job_id is None
    assert await rec.tick() == [Adopt("k1")]
    assert await rec.tick() == [Submit("k1")]
    assert len(world.resource.ever_tagged("k1")) == 1


async def test_a_crash_after_submit_before_recording_adopts_the_job_instead_of_resubmitting(
        tmp_path: Path) -> None:
    world = World(tmp_path)
    world.reconciler.declare("k1", CE, SPEC)
    crasher = Crasher(random.Random(0), probability=0.0)
    world.gateway.crasher = crasher

    def crash_after_submit(op: str, when: str) -> None:
        if (op, when) == ("submit", "after"):
            raise Crash("after submit")

    crasher.maybe = crash_after_submit  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await world.reconciler.tick()
    world.gateway.crasher = None
    rec = world.restart()
    assert await rec.tick() == [Adopt("k1")]
    (job,) = world.resource.ever_tagged("k1")
    assert rec.progress("k1").job_id == job.job_id
    assert await rec.tick() == []
    assert world.gateway.count("submit") == 1


async def test_adopting_several_jobs_keeps_the_first_and_cancels_and_purges_the_others(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    world = World(tmp_path)
    world.reconciler.declare("dup", CE, SPEC)
    world.reconciler.close()
    with Journal(world.path) as journal:
        journal.record_submit_intent("dup")
    tagged = SPEC.model_copy(update={"tag": "dup"})
    first, second = world.resource.create(tagged), world.resource.create(tagged)
    rec = world.start()
    assert await rec.tick() == [Adopt("dup")]
    assert rec.progress("dup").job_id == first.job_id
    assert second.state is JobState.ABORTED and second.purged
    assert not first.purged and first.state is not JobState.ABORTED
    assert "has 2 jobs" in caplog.text
    assert world.gateway.count("submit") == 0


# ---- errors


async def test_a_ce_refusing_the_spec_surfaces_a_permanent_error_and_is_not_retried(world: World) -> None:
    world.gateway.refuse = "sbatch: error: invalid partition specified: nope"
    world.reconciler.declare("bad", CE, SPEC)
    assert await world.reconciler.tick() == [Submit("bad")]
    for _ in range(5):
        world.clock.advance(1000)
        assert await world.reconciler.tick() == []
    (row,) = world.reconciler.snapshot()
    assert row.permanent_error is not None and "invalid partition specified: nope" in row.permanent_error
    assert row.state is None  # surfaced as an error, not as a failed job
    assert world.gateway.count("submit") == 1
    assert not world.reconciler.progress("bad").submit_intent  # the CE created nothing


@pytest.mark.parametrize("error", [AuthenticationError("key rejected"), InvalidSpecError("no such queue")])
async def test_permanent_exceptions_from_a_submit_are_surfaced_and_not_retried(
        world: World, error: Exception) -> None:
    world.gateway.submit_error = error
    world.reconciler.declare("bad", CE, SPEC)
    await world.reconciler.tick()
    world.clock.advance(1000)
    assert await world.reconciler.tick() == []
    assert str(error) in (world.reconciler.progress("bad").permanent_error or "")
    assert world.gateway.count("submit") == 1


async def test_a_temporary_refusal_backs_off_and_resubmits_without_adopting(world: World) -> None:
    world.gateway.refuse = "schedd busy"
    world.gateway.refuse_temporary = True
    world.reconciler.declare("k", CE, SPEC)
    assert await world.reconciler.tick() == [Submit("k")]
    assert world.reconciler.progress("k").permanent_error is None
    world.gateway.refuse = None
    world.clock.advance(1.0)
    assert await world.reconciler.tick() == [Submit("k")]
    assert len(world.resource.ever_tagged("k")) == 1


async def test_a_disappearing_ce_backs_off_exponentially_and_fails_no_job(world: World) -> None:
    rec = world.reconciler
    rec.declare("early", CE, SPEC)
    await rec.tick()
    world.poll()
    rec.declare("late", CE, SPEC)
    rec.cancel("early")
    world.gateway.down = True
    delays = []
    for _ in range(6):
        start = world.clock.now()
        assert await rec.tick() != []
        progress = rec.progress("late")
        assert progress.next_attempt_at is not None
        delays.append(progress.next_attempt_at - start)
        assert await rec.tick() == []  # backing off: nothing until the deadline
        world.clock.advance(progress.next_attempt_at - start)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    for row in rec.snapshot():
        assert row.permanent_error is None
        assert row.state is not JobState.FAILED
        assert row.last_error is not None and "ConnectivityError" in row.last_error
    world.gateway.down = False
    await world.settle(rounds=5, step=60)
    assert len(world.resource.ever_tagged("late")) == 1
    assert world.resource.ever_tagged("early")[0].state is JobState.ABORTED
    assert rec.progress("late").attempts == 0


async def test_backoff_is_capped(tmp_path: Path) -> None:
    world = World(tmp_path, policy=RetryPolicy(base=1, factor=10, cap=50))
    world.gateway.down = True
    world.reconciler.declare("k", CE, SPEC)
    for _ in range(5):
        await world.reconciler.tick()
        world.clock.advance(50)
    progress = world.reconciler.progress("k")
    assert progress.attempts == 5
    assert progress.next_attempt_at is not None
    assert progress.next_attempt_at - (world.clock.now() - 50) == 50


async def test_an_unreachable_ce_gets_no_action_until_it_is_back(world: World) -> None:
    world.reconciler.set_reachable(CE, False)
    world.reconciler.declare("k", CE, SPEC)
    assert await world.reconciler.tick() == []
    world.clock.advance(100)
    assert await world.reconciler.tick() == []
    world.reconciler.set_reachable(CE, True)
    assert await world.reconciler.tick() == [Submit("k")]


async def test_a_manifest_that_does_not_verify_is_not_recorded_and_the_job_not_purged(world: World) -> None:
    # The gateway (the CE actor) verifies where the files land and raises; the reconciler records nothing.
    rec = world.reconciler
    dest = world.path.parent / "dest"
    rec.declare("k", CE, SPEC, Phase.COLLECTED, dest)
    await rec.tick()
    world.resource.advance()
    world.resource.advance()
    world.poll()
    fetch = world.gateway.fetch

    async def failing_fetch(job_id: str, spec: JobSpec, destination: Path) -> OutputManifest:
        await fetch(job_id, spec, destination)
        raise ManifestMismatchError("'stdout.txt' has 9 bytes, the manifest says 14")

    world.gateway.fetch = failing_fetch  # type: ignore[method-assign]
    actions = await rec.tick()
    assert [type(a) for a in actions] == [Fetch]
    progress = rec.progress("k")
    assert progress.manifest is None and progress.permanent_error is None
    assert progress.last_error is not None and "ManifestMismatchError" in progress.last_error
    assert not world.resource.ever_tagged("k")[0].purged
    world.gateway.fetch = fetch  # type: ignore[method-assign]
    world.clock.advance(1)
    assert [type(a) for a in await rec.tick()] == [Fetch]
    assert [type(a) for a in await rec.tick()] == [Purge]
    assert (dest / "stdout.txt").read_bytes() == output_text("k")


async def test_a_manifest_for_another_job_or_destination_is_not_recorded(world: World) -> None:
    rec = world.reconciler
    dest = world.path.parent / "dest"
    rec.declare("k", CE, SPEC, Phase.COLLECTED, dest)
    await rec.tick()
    world.resource.advance()
    world.resource.advance()
    world.poll()
    fetch = world.gateway.fetch

    async def elsewhere(job_id: str, spec: JobSpec, destination: Path) -> OutputManifest:
        manifest = await fetch(job_id, spec, destination)
        return manifest.model_copy(update={"destination": destination / "other"})

    world.gateway.fetch = elsewhere  # type: ignore[method-assign]
    assert [type(a) for a in await rec.tick()] == [Fetch]
    progress = rec.progress("k")
    assert progress.manifest is None and progress.last_error and "destination" in progress.last_error
    assert not world.resource.ever_tagged("k")[0].purged


async def test_a_journal_that_cannot_be_written_stops_the_tick_before_any_submit(world: World) -> None:
    world.reconciler.declare("k", CE, SPEC)
    world.reconciler._journal._db.execute("PRAGMA query_only = ON")  # SQLITE_READONLY from now on
    with pytest.raises(JournalError, match="read-only"):
        await world.reconciler.tick()
    assert world.gateway.count("submit") == 0  # no intent on disk, so no job at the CE
    world.reconciler._journal._db.execute("PRAGMA query_only = OFF")
    rec = world.restart()
    assert await rec.tick() == [Submit("k")]
    assert len(world.resource.ever_tagged("k")) == 1


# ---- phases


async def test_cancel_is_sent_once_then_resent_only_after_the_backoff(tmp_path: Path) -> None:
    world = World(tmp_path, policy=RetryPolicy(cancel_resend_after=30))
    rec = world.reconciler
    rec.declare("k", CE, SPEC)
    await rec.tick()
    job_id = rec.progress("k").job_id
    assert job_id is not None
    rec.cancel("k")
    assert await rec.tick() == [Cancel("k", job_id)]
    world.clock.advance(29)
    assert await rec.tick() == []
    world.clock.advance(1)
    assert await rec.tick() == [Cancel("k", job_id)]
    rec.observe(CE, [JobStatus(job_id=job_id, state=JobState.ABORTED)])
    world.clock.advance(100)
    assert await rec.tick() == []


async def test_cancelling_a_key_never_submitted_submits_nothing(world: World) -> None:
    world.reconciler.declare("k", CE, SPEC, Phase.CANCELLED)
    assert await world.reconciler.tick() == []
    world.reconciler.declare("k2", CE, SPEC)
    world.reconciler.cancel("k2")
    assert await world.reconciler.tick() == []
    assert world.gateway.count("submit") == 0


async def test_forgetting_a_running_job_cancels_purges_then_drops_the_key(world: World) -> None:
    rec = world.reconciler
    rec.declare("k", CE, SPEC)
    await rec.tick()
    job_id = rec.progress("k").job_id
    assert job_id is not None
    rec.forget("k")
    assert await rec.tick() == [Cancel("k", job_id)]
    world.poll()
    assert await rec.tick() == [Purge("k", job_id)]
    assert await rec.tick() == [Forget("k")]
    assert rec.snapshot() == []
    assert rec.tracked_job_ids(CE) == []
    with pytest.raises(KeyError):
        rec.cancel("k")
    rec.close()
    with Journal(world.path) as journal:
        assert journal.load() == ({}, {})


async def test_a_forgotten_key_cannot_be_brought_back(world: World) -> None:
    world.reconciler.declare("k", CE, SPEC)
    world.reconciler.forget("k")
    with pytest.raises(InvalidSpecError, match="being forgotten"):
        world.reconciler.collect("k", world.path.parent / "out")


async def test_a_collected_job_is_fetched_after_it_ends_then_purged_then_left_alone(world: World) -> None:
    rec = world.reconciler
    dest = world.path.parent / "out" / "k"
    rec.declare("k", CE, SPEC)
    await rec.tick()
    rec.collect("k", dest)
    assert await rec.tick() == []  # still running
    world.resource.advance()
    world.resource.advance()
    world.poll()
    job_id = rec.progress("k").job_id
    assert job_id is not None
    assert await rec.tick() == [Fetch("k", job_id, dest)]
    assert await rec.tick() == [Purge("k", job_id)]
    world.clock.advance(10_000)
    assert await rec.tick() == []
    assert rec.tracked_job_ids(CE) == []


# ---- observations


async def test_observations_never_move_a_state_backwards(world: World) -> None:
    rec = world.reconciler
    rec.declare("k", CE, SPEC)
    await rec.tick()
    job_id = rec.progress("k").job_id
    assert job_id is not None
    rec.observe(CE, [JobStatus(job_id=job_id, state=JobState.RUNNING, native_state="R")])
    rec.observe(CE, [JobStatus(job_id=job_id, state=JobState.WAITING, native_state="PD")])
    assert (rec.progress("k").state, rec.progress("k").native_state) == (JobState.RUNNING, "R")
    rec.observe(CE, [JobStatus(job_id=job_id, state=JobState.DONE, native_state="CD", exit_code=0)])
    rec.observe(CE, [JobStatus(job_id=job_id, state=JobState.RUNNING, native_state="R")])
    (row,) = rec.snapshot()
    assert (row.state, row.native_state, row.exit_code) == (JobState.DONE, "CD", 0)
    assert rec.tracked_job_ids(CE) == []


async def test_quiet_polls_are_not_journaled_and_dirty_nothing(world: World) -> None:
    rec = world.reconciler
    rec.declare("k", CE, SPEC)
    await rec.tick()
    world.poll()
    await rec.tick()
    before = rec._journal.progress("k")
    world.clock.advance(7)
    world.poll()  # the same state again
    assert rec._journal.progress("k") == before
    assert rec.progress("k").last_seen == world.clock.now()
    assert rec._state.dirty == frozenset()


async def test_unknown_job_ids_in_a_status_report_are_ignored(world: World) -> None:
    world.reconciler.observe(CE, [JobStatus(job_id="nope", state=JobState.DONE)])
    assert world.reconciler.snapshot() == []


# ---- API and restart


async def test_declare_is_idempotent_and_refuses_a_different_spec_or_an_unknown_ce(world: World) -> None:
    rec = world.reconciler
    rec.declare("k", CE, SPEC)
    rec.cancel("k")
    assert rec.declare("k", CE, SPEC).phase is Phase.CANCELLED  # re-declaring does not undo the cancel
    with pytest.raises(InvalidSpecError, match="'k'"):
        rec.declare("k", CE, JobSpec(executable="/bin/false"))
    with pytest.raises(InvalidSpecError, match="unknown CE"):
        rec.declare("k2", "elsewhere", SPEC)
    with pytest.raises(InvalidSpecError, match="one copy"):
        rec.declare("k3", CE, SPEC.model_copy(update={"copies": [*SPEC.copies, *SPEC.copies]}))
    with pytest.raises(InvalidSpecError, match="job key"):
        rec.declare("bad key", CE, SPEC)


async def test_the_job_is_submitted_tagged_with_its_key(world: World) -> None:
    world.reconciler.declare("wms:42", CE, SPEC.model_copy(update={"tag": "other"}))
    await world.reconciler.tick()
    (job,) = world.resource.jobs.values()
    assert job.tag == "wms:42" and len(job.spec.copies) == 1


async def test_a_restarted_reconciler_resumes_exactly(world: World) -> None:
    rec = world.reconciler
    for i in range(6):
        rec.declare(f"k{i}", CE, SPEC)
    await rec.tick()
    world.resource.advance()
    world.poll()
    world.gateway.down = True
    rec.declare("down", CE, SPEC)
    await rec.tick()
    world.gateway.down = False
    before = [(r.key, r.phase, r.state, r.job_id, r.attempts, r.last_error) for r in rec.snapshot()]
    rec2 = world.restart()
    after = [(r.key, r.phase, r.state, r.job_id, r.attempts, r.last_error) for r in rec2.snapshot()]
    assert after == before
    assert sorted(rec2.tracked_job_ids(CE)) == sorted(rec.tracked_job_ids(CE))
    assert await rec2.tick() == []  # nothing was in flight, and "down" is still backing off
    world.clock.advance(2)
    assert await rec2.tick() == [Adopt("down")]


async def test_submits_per_ce_are_limited_per_tick(tmp_path: Path) -> None:
    world = World(tmp_path, policy=RetryPolicy(submits_per_tick=3))
    for i in range(7):
        world.reconciler.declare(f"k{i}", CE, SPEC)
    sizes = [len(await world.reconciler.tick()) for _ in range(4)]
    assert sizes == [3, 3, 1, 0]
    assert await world.reconciler.tick(budget={CE: 0}) == []


async def test_gateway_calls_are_bounded_in_concurrency(tmp_path: Path) -> None:
    world = World(tmp_path, concurrency=3)
    for i in range(20):
        world.reconciler.declare(f"k{i}", CE, SPEC)
    await world.reconciler.tick()
    assert world.gateway.count("submit") == 20
    assert 1 < world.gateway.max_in_flight <= 3


async def test_cancels_and_purges_are_one_bulk_call_per_ce(world: World) -> None:
    rec = world.reconciler
    for i in range(5):
        rec.declare(f"k{i}", CE, SPEC)
    await rec.tick()
    for i in range(5):
        rec.forget(f"k{i}")
    await rec.tick()
    assert world.gateway.count("cancel") == 1
    world.poll()
    await rec.tick()
    assert world.gateway.count("purge") == 1


async def test_a_journaled_ce_without_a_gateway_backs_off_instead_of_failing(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.reconciler.declare("k", CE, SPEC)
    world.reconciler.close()
    orphan = Reconciler(Journal(world.path), {}, clock=world.clock)
    assert await orphan.tick() == [Submit("k")]
    progress = orphan.progress("k")
    assert progress.permanent_error is None and "no gateway" in (progress.last_error or "")
    orphan.set_gateway(CE, world.gateway)
    world.clock.advance(1)
    # The gateway was missing before the intent was journaled: nothing can exist, so a plain submit.
    assert await orphan.tick() == [Submit("k")]
    assert len(world.resource.ever_tagged("k")) == 1
    orphan.close()


def test_progress_starts_empty() -> None:
    assert Progress().job_id is None and not Progress().submit_intent
