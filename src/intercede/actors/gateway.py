"""The reconciler's view of a CE actor: :class:`~intercede.reconcile.gateway.CEGateway` calls sent through the seam."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from intercede.actors.seam import Seam
from intercede.model import JobSpec, Outcome, OutputManifest, SubmitResult
from intercede.reconcile.gateway import TaggedJobs

__all__ = ["ActorGateway"]


class ActorGateway:
    """Forwards every gateway call to the CE actor ``handle``."""

    def __init__(self, seam: Seam, handle: Any) -> None:
        self._seam, self._handle = seam, handle

    async def submit(self, spec: JobSpec) -> SubmitResult:
        # Not idempotent: a submit interrupted by the CE actor's death is adopted by its tag, never re-run.
        return cast(SubmitResult, await self._seam.call_once(self._handle, "submit", spec))

    async def find_attempts(self, tags: Sequence[str]) -> TaggedJobs:
        return cast(TaggedJobs, await self._seam.call(self._handle, "find_attempts", list(tags)))

    async def fence(self, attempts: Sequence[str]) -> dict[str, bool] | None:
        return cast(dict[str, bool] | None, await self._seam.call(self._handle, "fence", list(attempts)))

    async def discard_attempts(self, attempts: Sequence[str]) -> None:
        await self._seam.call(self._handle, "discard_attempts", list(attempts))

    async def cancel(self, job_ids: Sequence[str]) -> list[Outcome]:
        return cast(list[Outcome], await self._seam.call(self._handle, "cancel", list(job_ids)))

    async def fetch(self, job_id: str, spec: JobSpec, destination: Path) -> OutputManifest:
        return cast(OutputManifest, await self._seam.call(self._handle, "fetch", job_id, spec, destination))

    async def purge(self, job_ids: Sequence[str]) -> list[Outcome]:
        return cast(list[Outcome], await self._seam.call(self._handle, "purge", list(job_ids)))
