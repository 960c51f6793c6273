"""An in-memory CE for unit tests of the reconciler logic (not a backend: contract tests use real stacks).

:class:`FakeResource` is "the world": it outlives reconciler crashes and counts every job ever created per tag.
It models attempt ids and the fence as BatchBackend does: a job claims its attempt when it starts (its payload runs,
``ran``), unless the attempt was fenced first (then it fails without running, as the job script's ``exit 97``).
:class:`FakeGateway` speaks the ``CEGateway`` Protocol to it and can be told to crash (raise :class:`Crash`, a
``BaseException`` the reconciler does not catch, like a process dying) just before or just after each side effect.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from intercede.errors import ConnectivityError, TransferError
from intercede.model import (
    JobSpec,
    JobState,
    JobStatus,
    ManifestEntry,
    Outcome,
    OutputManifest,
    Submission,
    SubmitResult,
)
from intercede.reconcile.gateway import TaggedJobs


class Crash(BaseException):
    """The reconciler's process died here."""


@dataclass
class FakeJob:
    job_id: str
    tag: str | None
    spec: JobSpec
    state: JobState = JobState.WAITING
    purged: bool = False
    attempt: str | None = None
    ran: bool = False  # the payload started (the job claimed its attempt)
    hidden: bool = False  # not found by its tag (a payload that renamed its job)


class FakeResource:
    """Jobs go WAITING -> RUNNING -> DONE, one step per :meth:`advance`. Purged jobs are kept (flagged) so a test can
    count every job ever created for a tag."""

    def __init__(self) -> None:
        self.jobs: dict[str, FakeJob] = {}
        self._next = 1000
        self.claims: dict[str, str] = {}  # attempt -> "job" | "fenced"
        self.orphans: list[JobSpec] = []  # submits that will land later (see FakeGateway.orphan_next_submit)
        self.discarded: set[str] = set()

    def create(self, spec: JobSpec) -> FakeJob:
        self._next += 1
        job = FakeJob(str(self._next), spec.tag, spec, attempt=spec.attempt)
        self.jobs[job.job_id] = job
        return job

    def land_orphans(self) -> list[FakeJob]:
        landed = [self.create(spec) for spec in self.orphans]
        self.orphans.clear()
        return landed

    def _start(self, job: FakeJob) -> None:
        if job.attempt is not None and self.claims.setdefault(job.attempt, "job") != "job":
            job.state = JobState.FAILED  # fenced: exit 97 before the payload
            return
        job.state, job.ran = JobState.RUNNING, True

    def advance(self) -> None:
        for job in self.jobs.values():
            if job.state is JobState.WAITING:
                self._start(job)
            elif job.state is JobState.RUNNING:
                job.state = JobState.DONE

    def runs(self, tag: str) -> int:
        """How often the payload of ``tag`` ran (the ledger)."""
        return sum(1 for job in self.ever_tagged(tag) if job.ran)

    def ever_tagged(self, tag: str) -> list[FakeJob]:
        return [job for job in self.jobs.values() if job.tag == tag]

    def statuses(self, job_ids: Sequence[str]) -> list[JobStatus]:
        out = []
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            if job is None or job.purged:
                out.append(JobStatus(job_id=job_id, state=JobState.UNKNOWN, reason="not found"))
            else:
                out.append(JobStatus(job_id=job_id, state=job.state, native_state=job.state.value.upper(),
                                     exit_code=0 if job.state is JobState.DONE else None))
        return out


def output_text(tag: str | None) -> bytes:
    return f"output of {tag}\n".encode()


class Crasher:
    """Decides, per side effect, whether the process dies just before or just after it. After a crash it stays
    disarmed until :meth:`rearm` (the restart): a process dies once."""

    def __init__(self, rng: random.Random, probability: float) -> None:
        self.rng = rng
        self.probability = probability
        self.crashes = 0
        self.points: list[str] = []
        self.armed = True

    def rearm(self) -> None:
        self.armed = True

    def maybe(self, op: str, when: str) -> None:
        if self.armed and self.probability and self.rng.random() < self.probability:
            self.armed = False
            self.crashes += 1
            self.points.append(f"{when} {op}")
            raise Crash(f"{when} {op}")


class FakeGateway:
    """The ``CEGateway`` of one :class:`FakeResource`. ``down`` makes every call raise ConnectivityError; ``refuse``
    makes submits come back refused (``refuse_temporary`` says whether retrying may help)."""

    def __init__(self, resource: FakeResource, crasher: Crasher | None = None) -> None:
        self.resource = resource
        self.crasher = crasher
        self.down = False
        self.refuse: str | None = None
        self.refuse_temporary = False
        self.submit_error: BaseException | None = None
        self.orphan_next_submit = 0  # the next N submits raise ConnectivityError and land only at land_orphans()
        self.in_flight_tags: set[str] = set()  # what the CE actor reports as still being submitted
        self.can_fence = True
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def _enter(self, op: str, args: Sequence[str]) -> None:
        self.calls.append((op, tuple(args)))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # let concurrent calls overlap, and a cancellation land before the effect
        finally:
            self.in_flight -= 1
        if self.down:
            raise ConnectivityError("connection refused")
        if self.crasher is not None:
            self.crasher.maybe(op, "before")

    def _leave(self, op: str) -> None:
        if self.crasher is not None:
            self.crasher.maybe(op, "after")

    def count(self, op: str) -> int:
        return sum(1 for name, _ in self.calls if name == op)

    async def submit(self, spec: JobSpec) -> SubmitResult:
        await self._enter("submit", [spec.tag or ""])
        if self.submit_error is not None:
            raise self.submit_error
        if self.orphan_next_submit:
            self.orphan_next_submit -= 1
            self.resource.orphans.append(spec)
            raise ConnectivityError("connection dropped mid-submit")
        if self.refuse is not None:
            return SubmitResult(submissions=[Submission(copy_index=0, tag=spec.tag, error=self.refuse,
                                                        temporary=self.refuse_temporary)])
        job = self.resource.create(spec)
        self._leave("submit")
        return SubmitResult(submissions=[Submission(copy_index=0, tag=spec.tag, job_id=job.job_id)])

    async def find_attempts(self, tags: Sequence[str]) -> TaggedJobs:
        await self._enter("find_attempts", tags)
        found = {tag: {j.job_id: j.attempt for j in self.resource.ever_tagged(tag) if not j.purged and not j.hidden}
                 for tag in tags}
        self._leave("find_attempts")
        return TaggedJobs(jobs=found, in_flight=frozenset(t for t in tags if t in self.in_flight_tags))

    async def fence(self, attempts: Sequence[str]) -> dict[str, bool] | None:
        await self._enter("fence", attempts)
        if not self.can_fence:
            return None
        result = {a: self.resource.claims.setdefault(a, "fenced") == "fenced" for a in attempts}
        self._leave("fence")
        return result

    async def discard_attempts(self, attempts: Sequence[str]) -> None:
        await self._enter("discard_attempts", attempts)
        self.resource.discarded.update(attempts)
        self._leave("discard_attempts")

    async def cancel(self, job_ids: Sequence[str]) -> list[Outcome]:
        await self._enter("cancel", job_ids)
        outcomes = []
        for job_id in job_ids:
            job = self.resource.jobs.get(job_id)
            if job is None or job.purged:
                outcomes.append(Outcome(job_id=job_id, ok=False, detail="unknown job"))
            elif job.state.is_terminal:
                outcomes.append(Outcome(job_id=job_id, ok=False, detail="already finished"))
            else:
                job.state = JobState.ABORTED
                outcomes.append(Outcome(job_id=job_id, ok=True))
        self._leave("cancel")
        return outcomes

    async def fetch(self, job_id: str, spec: JobSpec, destination: Path) -> OutputManifest:
        await self._enter("fetch", [job_id])
        job = self.resource.jobs.get(job_id)
        if job is None or job.purged:
            raise TransferError(f"job {job_id} has no outputs any more")
        data = output_text(job.tag)
        destination.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - the gateway makes it (the CE actor does)
        (destination / spec.stdout).write_bytes(data)
        self._leave("fetch")
        return OutputManifest(job_id=job_id, destination=destination, files=[
            ManifestEntry(name=spec.stdout, size=len(data), sha256=hashlib.sha256(data).hexdigest())])

    async def purge(self, job_ids: Sequence[str]) -> list[Outcome]:
        await self._enter("purge", job_ids)
        for job_id in job_ids:
            if job_id in self.resource.jobs:
                self.resource.jobs[job_id].purged = True
        self._leave("purge")
        return [Outcome(job_id=job_id, ok=True) for job_id in job_ids]
