"""HTCondorBackend: a remote HTCondor schedd driven through the ``htcondor2`` bindings, authenticated by IDTOKENS.

Capabilities: JobBackend, Cancellable, OutputRetriever, Purgeable, Taggable, LoadReporter.

* **Submit** spools each copy (a cluster of its own) with its inputs; the job runs a generated wrapper
  (:mod:`._sandbox`), so arguments, environment and file names reach it byte for byte, and only the declared outputs
  come back (``transfer_output_files`` allow-list; ``max_output_mb`` also bounds them at the schedd, which holds a
  job whose outputs exceed it).
* **Status** reads the queue, then the schedd's history for jobs that left it; a job in neither is reported with its
  last seen state for ``grace`` seconds, then UNKNOWN. The state map is in :mod:`._htcondor`.
* **Fetch** retrieves the spooled outputs into the copy's local sandbox under ``staging`` and moves them to the
  destination, bounded (count and bytes checked before anything is moved; ``transfer_timeout`` bounds the
  retrieval). It is **not destructive** (``fetch_is_destructive = False``): intercede submits with a
  ``leave_in_queue`` that keeps a completed job in the queue until :meth:`purge` (or ``keep_seconds``); see
  docs/htcondor.md for why and for what HTCondor does without it.
* **Purge** marks jobs purged (they then leave the queue as *completed*, so the history keeps their exit code),
  removes unfinished ones, and deletes their local sandboxes. **Cancel** removes waiting, running and held jobs.
* Every bindings call runs in a worker process of this backend (:mod:`._client`): its credentials never leak into
  another backend, and the event loop never blocks.

Errors: see :class:`~intercede.backends.htcondor._client.CondorClient` (missing, expired or refused token:
:class:`~intercede.errors.AuthenticationError`; schedd or collector down: :class:`~intercede.errors.ConnectivityError`).
"""

from __future__ import annotations

import asyncio
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from intercede.backends.capabilities import LoadReport
from intercede.backends.credentials import Credential, CredentialNeed
from intercede.backends.htcondor import _ops
from intercede.backends.htcondor._client import CondorClient
from intercede.model import JobSpec, JobStatus, Outcome, OutputBounds, OutputManifest, SubmitResult

__all__ = ["HTCondorBackend", "default_staging"]


def default_staging(name: str) -> Path:
    """Where a backend named ``name`` keeps its local sandboxes unless told otherwise (stable across restarts)."""
    return Path(tempfile.gettempdir()) / "intercede-htcondor" / name


class HTCondorBackend:
    """The schedd advertised by the collector ``pool`` (``host:port``; ``schedd`` names one if it has several).

    ``token_file`` is an IDTOKEN for the pool's trust domain; ``config`` adds ``_CONDOR_*`` knobs to the client's
    configuration. Construction does no I/O.
    """

    fetch_is_destructive = False

    def __init__(self, pool: str, *, token_file: Path | None, schedd: str | None = None, name: str | None = None,
                 staging: Path | None = None, grace: float = 120.0, keep_seconds: int = 10 * 86400,
                 max_output_mb: int | None = 1024, config: Mapping[str, str] | None = None, workers: int = 2,
                 call_timeout: float = 60.0) -> None:
        self.name = name or f"htcondor-{pool}"
        self.client = CondorClient(pool, schedd=schedd, token_file=token_file, config=config, workers=workers,
                                   call_timeout=call_timeout)
        self.options = _ops.Options(staging=(staging or default_staging(self.name)).expanduser(),
                                    keep_seconds=keep_seconds, max_output_mb=max_output_mb)
        self._tracker = _ops.Tracker(grace)
        self._fetching: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()

    def __repr__(self) -> str:
        return f"<HTCondorBackend {self.name} pool={self.client.pool}>"

    def credential_needs(self) -> list[CredentialNeed]:
        """The IDTOKEN, when one is configured (a :class:`~intercede.backends.credentials.CredentialConsumer`); the
        default provider reads ``token_file``. Without one the pool authenticates otherwise: nothing to keep."""
        if self.client.token_file is None:
            return []
        return [CredentialNeed("idtoken", "token", None, self.client.token_file)]

    async def use_credential(self, need: CredentialNeed, credential: Credential) -> None:
        await self.client.set_token(need.slot, credential.secret)

    async def version(self) -> str:
        """The schedd's ``$CondorVersion`` string."""
        return str(await self.client.call("version"))

    async def submit(self, spec: JobSpec) -> SubmitResult:
        return await _ops.submit(self.client, spec, self.options)

    async def status(self, job_ids: Sequence[str]) -> list[JobStatus]:
        return await _ops.status(self.client, self._tracker, job_ids)

    async def cancel(self, job_ids: Sequence[str]) -> list[Outcome]:
        return await _ops.cancel(self.client, job_ids)

    async def purge(self, job_ids: Sequence[str]) -> list[Outcome]:
        return await _ops.purge(self.client, self.options, job_ids)

    async def fetch(self, job_id: str, spec: JobSpec, destination: Path,
                    bounds: OutputBounds | None = None) -> OutputManifest:
        lock = self._fetching.setdefault(job_id, asyncio.Lock())  # one retrieval per job at a time
        async with lock:
            return await _ops.fetch(self.client, self.options, job_id, spec, destination, bounds)

    async def find_by_tag(self, tags: Sequence[str]) -> dict[str, list[str]]:
        return await _ops.find_by_tag(self.client, tags)

    async def find_attempts(self, tags: Sequence[str]) -> dict[str, dict[str, str | None]]:
        return await _ops.find_attempts(self.client, tags)

    async def load(self) -> LoadReport:
        return await _ops.load(self.client)
