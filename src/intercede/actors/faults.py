"""Crash injection for the fault suite: kill the reconciler's process right before or after a gateway call.

A :class:`FaultPlan` is a JSON file ``{"before:submit": 3, "after:fetch": 2, ...}``: the next N calls of that
operation at that point end the process with ``os._exit`` (no cleanup, like a node dying). Each crash is consumed from
the file *before* dying, so the restarted actor goes on to the next one. Only used when a test asks for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from intercede.model import JobSpec, Outcome, OutputManifest, SubmitResult
from intercede.reconcile.gateway import CEGateway, TaggedJobs

__all__ = ["CrashingGateway", "crashes_left"]


def _consume(plan: Path, point: str) -> bool:
    """Whether to crash at ``point`` now (and if so, record that this crash happened)."""
    if not plan.exists():
        return False
    left: dict[str, int] = json.loads(plan.read_text())
    if left.get(point, 0) <= 0:
        return False
    left[point] -= 1
    tmp = plan.with_suffix(".tmp")
    tmp.write_text(json.dumps(left))
    with tmp.open() as f:
        os.fsync(f.fileno())
    os.replace(tmp, plan)
    return True


def crashes_left(plan: Path) -> int:
    return sum(json.loads(plan.read_text()).values()) if plan.exists() else 0


class CrashingGateway:
    """Wraps a gateway; dies at the points the plan file names."""

    def __init__(self, inner: CEGateway, plan: Path) -> None:
        self._inner, self._plan = inner, plan

    async def _around(self, op: str, call: Any) -> Any:
        if _consume(self._plan, f"before:{op}"):
            os._exit(17)
        result = await call
        if _consume(self._plan, f"after:{op}"):
            os._exit(17)
        return result

    async def submit(self, spec: JobSpec) -> SubmitResult:
        result: SubmitResult = await self._around("submit", self._inner.submit(spec))
        return result

    async def find_attempts(self, tags: Sequence[str]) -> TaggedJobs:
        result: TaggedJobs = await self._around("find_attempts", self._inner.find_attempts(tags))
        return result

    async def fence(self, attempts: Sequence[str]) -> dict[str, bool] | None:
        result: dict[str, bool] | None = await self._around("fence", self._inner.fence(attempts))
        return result

    async def discard_attempts(self, attempts: Sequence[str]) -> None:
        await self._around("discard_attempts", self._inner.discard_attempts(attempts))

    async def cancel(self, job_ids: Sequence[str]) -> list[Outcome]:
        result: list[Outcome] = await self._around("cancel", self._inner.cancel(job_ids))
        return result

    async def fetch(self, job_id: str, spec: JobSpec, destination: Path) -> OutputManifest:
        result: OutputManifest = await self._around("fetch", self._inner.fetch(job_id, spec, destination))
        return result

    async def purge(self, job_ids: Sequence[str]) -> list[Outcome]:
        result: list[Outcome] = await self._around("purge", self._inner.purge(job_ids))
        return result
