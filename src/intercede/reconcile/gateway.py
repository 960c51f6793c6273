"""``CEGateway``: what the reconciler needs from one Computing Element, and nothing more.

Defined here, not in ``backends``, so the reconciler stays free of backend imports; the real gateway (in ``actors``)
forwards each call to the CE actor that owns the backend, and unit tests use an in-memory fake.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from intercede.model import JobSpec, Outcome, OutputManifest, SubmitResult

__all__ = ["CEGateway", "TaggedJobs"]


@dataclass(frozen=True, slots=True)
class TaggedJobs:
    """What a CE holds under some tags.

    ``jobs`` maps every tag asked to ``{job id: the attempt id the job carries}`` (None: the backend cannot say which
    attempt made the job). ``in_flight`` names the tags for which the CE actor is still running a submit (one issued
    by an earlier reconciler): a lookup that finds nothing for such a tag proves nothing yet.
    """

    jobs: Mapping[str, Mapping[str, str | None]]
    in_flight: frozenset[str] = field(default_factory=frozenset)


@runtime_checkable
class CEGateway(Protocol):
    """One CE, as the reconciler sees it. Same contract as the backend capabilities it forwards to:

    * ``submit`` answers per copy (the reconciler always sends one copy, tagged with the job key and carrying the
      attempt id it journaled); a refused copy is a failed :class:`~intercede.model.Submission` with ``temporary``
      set when retrying may help. A copy that *may* have reached the resource is never a refused copy: the call
      raises a temporary error instead.
    * ``find_attempts`` returns :class:`TaggedJobs` for every tag asked, and must see every job the CE has accepted.
    * ``fence`` makes each attempt id unable to ever run a payload: True per attempt fenced (now or before), False
      for an attempt a job already claimed (it runs). None: the CE cannot fence (see the executor's Adopt).
    * ``discard_attempts`` removes whatever the attempts left at the resource (staged or fenced directories);
      idempotent, a no-op where nothing is kept per attempt.
    * ``cancel`` and ``purge`` answer one :class:`~intercede.model.Outcome` per id; ``purge`` is idempotent.
    * ``fetch`` writes a terminal job's outputs under ``destination`` (on the CE side: the CE actor's node), verifies
      them there against what the resource listed (size, and sha256 where listed), and returns the verified
      manifest naming ``destination``; a mismatch raises
      :class:`~intercede.reconcile.verify.ManifestMismatchError` (temporary) or
      :class:`~intercede.reconcile.verify.ManifestConflictError` (permanent).

    A call raises only when it failed as a whole: :class:`~intercede.errors.ConnectivityError` or
    :class:`~intercede.errors.TimeoutError` (the reconciler backs off and retries) or a permanent error such as
    :class:`~intercede.errors.InvalidSpecError` or :class:`~intercede.errors.AuthenticationError` (surfaced).
    """

    async def submit(self, spec: JobSpec) -> SubmitResult: ...

    async def find_attempts(self, tags: Sequence[str]) -> TaggedJobs: ...

    async def fence(self, attempts: Sequence[str]) -> dict[str, bool] | None: ...

    async def discard_attempts(self, attempts: Sequence[str]) -> None: ...

    async def cancel(self, job_ids: Sequence[str]) -> list[Outcome]: ...

    async def fetch(self, job_id: str, spec: JobSpec, destination: Path) -> OutputManifest: ...

    async def purge(self, job_ids: Sequence[str]) -> list[Outcome]: ...
