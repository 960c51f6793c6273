"""The backend contract: small runtime-checkable capability Protocols.

A backend implements :class:`JobBackend` and whichever other capabilities its resource really has; callers narrow with
``isinstance(backend, LoadReporter)``. Every operation is async and bulk (lists of ids) and answers per id. An operation
raises only when it failed as a whole (transport down: :class:`~intercede.errors.ConnectivityError`, credentials
rejected: :class:`~intercede.errors.AuthenticationError`, deadline: :class:`~intercede.errors.TimeoutError`).

Backends are async context managers; constructing one does no I/O and ``aclose`` is idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from pydantic import BaseModel, ConfigDict

from intercede.model import JobSpec, JobStatus, Outcome, OutputBounds, OutputManifest, SubmitResult

__all__ = [
    "AttemptTaggable",
    "Cancellable",
    "Diagnosable",
    "Fenceable",
    "JobBackend",
    "LoadReport",
    "LoadReporter",
    "OutputRetriever",
    "Purgeable",
    "Taggable",
]


class LoadReport(BaseModel):
    """How busy a resource is. ``free_cores`` is None where the resource cannot say."""

    model_config = ConfigDict(frozen=True)

    total_cores: int | None
    free_cores: int | None
    running: int
    queued: int


@runtime_checkable
class JobBackend(Protocol):
    """Submit jobs and report their status.

    ``submit`` answers per copy (a refused copy is a failed :class:`~intercede.model.Submission`, not an exception).
    ``status`` answers one :class:`~intercede.model.JobStatus` per id, in order; an id the resource does not know is
    reported UNKNOWN with a reason, never dropped. A job that left the queue is looked up in the resource's history.
    """

    name: str

    async def submit(self, spec: JobSpec) -> SubmitResult: ...

    async def status(self, job_ids: Sequence[str]) -> list[JobStatus]: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Cancellable(Protocol):
    """Cancel jobs. A job already finished or unknown is reported per id (``ok`` False with a detail)."""

    async def cancel(self, job_ids: Sequence[str]) -> list[Outcome]: ...


@runtime_checkable
class OutputRetriever(Protocol):
    """Fetch a finished job's outputs (stdout, stderr, declared files) into ``destination``.

    Returns the manifest of files written; never holds contents in memory. Bounded by ``bounds`` and contained in
    ``destination`` (absolute paths, ``..`` and escaping symlinks raise :class:`~intercede.errors.OutputBoundError`).
    ``fetch_is_destructive`` declares whether a second fetch of the same job can succeed.
    """

    fetch_is_destructive: bool

    async def fetch(
        self, job_id: str, spec: JobSpec, destination: Path, bounds: OutputBounds | None = None
    ) -> OutputManifest: ...


@runtime_checkable
class Purgeable(Protocol):
    """Remove everything the job left on the resource (working directory, queue entry). Idempotent per id."""

    async def purge(self, job_ids: Sequence[str]) -> list[Outcome]: ...


@runtime_checkable
class LoadReporter(Protocol):
    """Report free and used capacity. Absent where the resource cannot say (e.g. an HTCondor-CE)."""

    async def load(self) -> LoadReport: ...


@runtime_checkable
class Diagnosable(Protocol):
    """Peek at a running job's files: the names in its working directory and the tail of one of them."""

    async def peek(self, job_id: str, name: str, max_bytes: int = 65536) -> bytes: ...


@runtime_checkable
class Taggable(Protocol):
    """Find jobs by the client's idempotency tag: ``{tag: [job ids]}`` for every tag asked (empty list if none)."""

    async def find_by_tag(self, tags: Sequence[str]) -> dict[str, list[str]]: ...


@runtime_checkable
class AttemptTaggable(Protocol):
    """Find jobs by tag *and* say which submit attempt made each: ``{tag: {job id: attempt id}}`` for every tag asked
    (the ``attempt`` of the :class:`~intercede.model.JobSpec` that submitted the job; None if it carried none).
    A job's attempt comes from something only the submit set (its working directory's name, a job attribute), so a
    caller can tell its own jobs from one that merely renamed itself to the tag."""

    async def find_attempts(self, tags: Sequence[str]) -> dict[str, dict[str, str | None]]: ...


@runtime_checkable
class Fenceable(Protocol):
    """Fence submit attempts at the resource, so that a submit that lands late (an orphaned ``sbatch`` still
    retrying after its connection dropped) can never run its payload.

    ``fence`` answers per attempt id: True if the attempt is fenced (by this call or an earlier one) — a job of it
    that starts later exits before its payload; False if a job of the attempt already claimed it (its payload runs).
    ``discard_attempts`` removes what the attempts left at the resource (staged or fenced working directories); it is
    idempotent and leaves any later job of those attempts unable to run its payload too."""

    async def fence(self, attempts: Sequence[str]) -> dict[str, bool]: ...

    async def discard_attempts(self, attempts: Sequence[str]) -> None: ...
