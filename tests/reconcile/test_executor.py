"""The executor's units run in the background: steps never wait for them, their journal writes are grouped per step,
a busy key gets no second unit, a CE's concurrency budget bounds its submits, and memory never runs ahead of disk."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from intercede.errors import JournalError
from intercede.model import JobSpec, SubmitResult
from intercede.reconcile import FakeClock, Journal, Phase, Reconciler, RetryPolicy, Submit
from tests.reconcile.fakes import FakeGateway, FakeResource

pytestmark = pytest.mark.actors

SPEC = JobSpec(executable="/bin/echo", arguments=["hello"])


class BlockingGateway(FakeGateway):
    """A CE whose submits hang until ``release`` is set (a CE whose ``sbatch`` does not come back); each submit first
    reads the journal's file from another connection, as a crash right then would find it."""

    def __init__(self, resource: FakeResource, journal_path: Path) -> None:
        super().__init__(resource)
        self.release = asyncio.Event()
        self.arrived = asyncio.Semaphore(0)  # released once per submit that reached the CE
        self.journal_path = journal_path
        self.intents_on_disk: list[bool] = []

    async def submit(self, spec: JobSpec) -> SubmitResult:
        with sqlite3.connect(self.journal_path) as disk:
            row = disk.execute("SELECT submit_intent, submit_attempts FROM progress WHERE key = ?",
                               (spec.tag,)).fetchone()
        self.intents_on_disk.append(bool(row[0]) and spec.attempt in row[1])
        self.arrived.release()
        await self.release.wait()
        return await super().submit(spec)


def commits(journal: Journal) -> list[str]:
    """Records every COMMIT the journal's connection runs from now on (one per transaction, one fsync each)."""
    seen: list[str] = []
    journal._db.set_trace_callback(lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return seen


async def arrivals(gateway: BlockingGateway, count: int) -> None:
    async with asyncio.timeout(5):
        for _ in range(count):
            await gateway.arrived.acquire()


async def idle(rec: Reconciler) -> None:
    """Until no unit is in flight (each ended unit wakes the wait)."""
    async with asyncio.timeout(5):
        while rec.in_flight:
            await rec.wait_for_results(None)


def make(tmp_path: Path, **kwargs: object) -> tuple[Reconciler, BlockingGateway, FakeGateway, Journal]:
    path = tmp_path / "journal.db"
    journal = Journal(path)
    slow = BlockingGateway(FakeResource(), path)
    fast = FakeGateway(FakeResource())
    rec = Reconciler(journal, {"slow": slow, "fast": fast}, clock=FakeClock(), **kwargs)  # type: ignore[arg-type]
    return rec, slow, fast, journal


async def test_a_step_returns_with_its_submits_in_flight_and_their_intents_on_disk_in_one_transaction(
        tmp_path: Path) -> None:
    rec, slow, _, journal = make(tmp_path)
    keys = [f"k{i}" for i in range(5)]
    for key in keys:
        rec.declare(key, "slow", SPEC)
    seen = commits(journal)
    assert rec.start() == [Submit(k) for k in keys]  # returns while every submit hangs
    assert len(seen) == 1, "all five intents are one transaction"
    await arrivals(slow, 5)
    assert slow.intents_on_disk == [True] * 5, "each intent (with its attempt id) was on disk before its submit"
    assert rec.in_flight == 5
    assert all(rec.progress(k).submit_intent and rec.progress(k).job_id is None for k in keys)
    # A busy key gets no second unit, however often the reconciler steps.
    for _ in range(3):
        rec.fold()
        assert rec.start() == []
    assert len(slow.intents_on_disk) == 5

    slow.release.set()
    await idle(rec)
    assert all(rec.progress(k).job_id is None for k in keys), "results reach memory only with the fold"
    seen.clear()
    rec.fold()
    assert len(seen) == 1, "the five job ids are one transaction"
    assert all(rec.progress(k).job_id for k in keys)
    assert rec.start() == []  # nothing left to do for them until they are observed
    rec.close()
    with Journal(tmp_path / "journal.db") as disk:
        _, progress = disk.load()
    assert {k: progress[k].job_id for k in keys} == {k: rec.progress(k).job_id for k in keys}


async def test_a_ce_whose_submits_hang_holds_up_neither_observation_nor_the_other_ces(tmp_path: Path) -> None:
    rec, slow, fast, _ = make(tmp_path, max_in_flight={"slow": 2, "fast": 4}, concurrency=6)
    for i in range(6):
        rec.declare(f"slow{i}", "slow", SPEC)
        rec.declare(f"fast{i}", "fast", SPEC, Phase.COLLECTED, tmp_path / "out" / f"fast{i}")
    # Steps as the actor's loop takes them: fold, start, and on as soon as a unit ends.
    for _ in range(100):
        rec.fold()
        rec.start()
        fast.resource.advance()
        rec.observe("fast", fast.resource.statuses(rec.tracked_job_ids("fast")))
        if all(rec.progress(f"fast{i}").purged for i in range(6)):
            break
        await rec.wait_for_results(0.05)
    else:
        pytest.fail("the fast CE's keys were not collected while the slow CE hung")
    assert all(rec.progress(f"fast{i}").manifest is not None for i in range(6))
    # The slow CE got no more than its budget of units, and its other keys wait for room (not planned, not lost).
    assert len(slow.intents_on_disk) == 2
    assert sum(rec.progress(f"slow{i}").submit_intent for i in range(6)) == 2
    slow.release.set()
    for _ in range(100):
        rec.fold()
        rec.start()
        if all(rec.progress(f"slow{i}").job_id for i in range(6)):
            break
        await rec.wait_for_results(0.05)
    assert slow.count("submit") == 6
    assert all(len(slow.resource.ever_tagged(f"slow{i}")) == 1 for i in range(6))
    rec.close()


async def test_the_submit_budget_of_a_ce_is_its_room_for_more_units(tmp_path: Path) -> None:
    rec, slow, _, _ = make(tmp_path, max_in_flight={"slow": 3})
    for i in range(7):
        rec.declare(f"k{i}", "slow", SPEC)
    assert len(rec.start()) == 3
    assert rec.start() == []  # no room until one ends
    slow.release.set()
    await idle(rec)
    rec.fold()
    assert len(rec.start()) == 3
    rec.close()


async def test_a_failed_results_batch_leaves_memory_as_on_disk_and_is_written_by_the_next_fold(
        tmp_path: Path) -> None:
    rec, slow, _, journal = make(tmp_path)
    for i in range(3):
        rec.declare(f"k{i}", "slow", SPEC)
    rec.start()
    slow.release.set()
    await idle(rec)
    journal._db.execute("PRAGMA query_only = ON")  # SQLITE_READONLY from now on
    with pytest.raises(JournalError, match="read-only"):
        rec.fold()
    assert all(rec.progress(f"k{i}").job_id is None for i in range(3)), "memory is not ahead of the disk"
    assert all(journal.progress(f"k{i}").job_id is None for i in range(3))
    assert rec.start() == [], "the keys stay busy until their results are on disk"
    journal._db.execute("PRAGMA query_only = OFF")
    rec.fold()
    assert all(rec.progress(f"k{i}").job_id == journal.progress(f"k{i}").job_id is not None for i in range(3))
    assert slow.count("submit") == 3
    rec.close()


async def test_observations_and_results_of_a_step_are_one_transaction(tmp_path: Path) -> None:
    rec, _, fast, journal = make(tmp_path)
    for i in range(4):
        rec.declare(f"k{i}", "fast", SPEC)
    await rec.tick()  # submitted and recorded
    rec.declare("later", "fast", SPEC)
    rec.start()
    await idle(rec)
    fast.resource.advance()
    seen = commits(journal)
    unknown = rec.fold({"fast": fast.resource.statuses(rec.tracked_job_ids("fast"))})
    assert unknown == {"fast": []}
    assert len(seen) == 1
    assert rec.progress("later").job_id is not None
    assert all(rec.progress(f"k{i}").state is not None for i in range(4))
    rec.close()


async def test_the_journal_is_written_once_per_step_not_per_key(tmp_path: Path) -> None:
    """The old executor made four commits per collected key (intent, job id, manifest, purged)."""
    rec, _, fast, journal = make(tmp_path, policy=RetryPolicy())
    keys = [f"k{i}" for i in range(20)]
    for key in keys:
        rec.declare(key, "fast", SPEC, Phase.COLLECTED, tmp_path / "out" / key)
    seen = commits(journal)
    steps = 0
    for steps in range(1, 50):  # noqa: B007 - counted
        await rec.tick()
        fast.resource.advance()
        rec.observe("fast", fast.resource.statuses(rec.tracked_job_ids("fast")))
        if all(rec.progress(k).purged for k in keys):
            break
    assert all(rec.progress(k).manifest is not None for k in keys)
    # Per tick: the intents (one), the results (one), the observations (one).
    assert len(seen) <= 3 * steps < 4 * len(keys)
    rec.close()
