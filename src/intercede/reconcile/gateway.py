"""``CEGateway``: what the reconciler needs from one Computing Element, and nothing more.

Defined here, not in ``backends``, so the reconciler stays free of backend imports; the real gateway (in ``actors``)
forwards each call to the CE actor that owns the backend, and unit tests use an in-memory fake.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from intercede.model import JobSpec, Outcome, OutputManifest, SubmitResult

__all__ = ["CEGateway"]


@runtime_checkable
class CEGateway(Protocol):
    """One CE, as the reconciler sees it. Same contract as the backend capabilities it forwards to:

    * ``submit`` answers per copy (the reconciler always sends one copy, tagged with the job key); a refused copy is a
      failed :class:`~intercede.model.Submission` with ``temporary`` set when retrying may help.
    * ``find_by_tag`` returns ``{tag: [job ids]}`` for every tag asked (empty list if none), and must see every job
      the CE has accepted: the reconciler submits again when it finds nothing.
    * ``cancel`` and ``purge`` answer one :class:`~intercede.model.Outcome` per id; ``purge`` is idempotent.
    * ``fetch`` writes a terminal job's outputs under ``destination`` and returns their manifest.

    A call raises only when it failed as a whole: :class:`~intercede.errors.ConnectivityError` or
    :class:`~intercede.errors.TimeoutError` (the reconciler backs off and retries) or a permanent error such as
    :class:`~intercede.errors.InvalidSpecError` or :class:`~intercede.errors.AuthenticationError` (surfaced).
    """

    async def submit(self, spec: JobSpec) -> SubmitResult: ...

    async def find_by_tag(self, tags: Sequence[str]) -> dict[str, list[str]]: ...

    async def cancel(self, job_ids: Sequence[str]) -> list[Outcome]: ...

    async def fetch(self, job_id: str, spec: JobSpec, destination: Path) -> OutputManifest: ...

    async def purge(self, job_ids: Sequence[str]) -> list[Outcome]: ...
