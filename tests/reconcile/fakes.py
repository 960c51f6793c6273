"""An in-memory CE for unit tests of the reconciler logic (not a backend: contract tests use real stacks).

:class:`FakeResource` is "the world": it outlives reconciler crashes and counts every job ever created per tag.
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


class Crash(BaseException):
    """The reconciler's process died here."""


@dataclass
class FakeJob:
    job_id: str
    tag: str | None
    spec: JobSpec
    state: JobState = JobState.WAITING
    purged: bool = False


class FakeResource:
    """Jobs go WAITING -> RUNNING -> DONE, one step per :meth:`advance`. Purged jobs are kept (flagged) so a test can
    count every job ever created for a tag."""

    def __init__(self) -> None:
        self.jobs: dict[str, FakeJob] = {}
        self._next = 1000

    def create(self, spec: JobSpec) -> FakeJob:
        self._next += 1
        job = FakeJob(str(self._next), spec.tag, spec)
        self.jobs[job.job_id] = job
        return job

    def advance(self) -> None:
        for job in self.jobs.values():
            if job.state is JobState.WAITING:
                job.state = JobState.RUNNING
            elif job.state is JobState.RUNNING:
                job.state = JobState.DONE

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
        if self.refuse is not None:
            return SubmitResult(submissions=[Submission(copy_index=0, tag=spec.tag, error=self.refuse,
                                                        temporary=self.refuse_temporary)])
        job = self.resource.create(spec)
        self._leave("submit")
        return SubmitResult(submissions=[Submission(copy_index=0, tag=spec.tag, job_id=job.job_id)])

    async def find_by_tag(self, tags: Sequence[str]) -> dict[str, list[str]]:
        await self._enter("find_by_tag", tags)
        found = {tag: [j.job_id for j in self.resource.ever_tagged(tag) if not j.purged] for tag in tags}
        self._leave("find_by_tag")
        return found

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
