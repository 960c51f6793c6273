"""HTCondorCEBackend: an HTCondor-CE (a schedd + collector on port 9619 in front of a site's batch system).

Capabilities: JobBackend, Cancellable, OutputRetriever, Purgeable, Taggable — and deliberately **no** LoadReporter:
a CE does not expose its site's slots (DIRAC's ``getCEStatus`` is "not supported" for the same reason), so
``isinstance(backend, LoadReporter)`` is False and callers narrow on it.

It shares every operation with :class:`~intercede.backends.htcondor.schedd.HTCondorBackend` (module ``_ops``:
spooled submit, queue-then-history status, non-destructive fetch until purge, cancel, purge, tags); what differs is
how it authenticates and what the submit description carries:

* Channel authentication by token: a SciToken (``scitoken_file``, audience ``<ce>:<port>`` — the CE refuses a token
  issued for another audience) and/or an IDTOKEN (``token_file``), tried in that order; the token files are handed to
  a worker process of this backend through ``_CONDOR_*`` configuration, never process-wide. A SciToken travels over
  TLS: ``ca_file`` names the CA bundle that signs the CE's host certificate (``AUTH_SSL_CLIENT_CAFILE``).
* An X.509 ``proxy`` is materialised into the submit description (``x509userproxy``, ``use_x509userproxy = true``)
  and copied, not delegated (``DELEGATE_JOB_GSI_CREDENTIALS = false``, the HTCONDOR-2904 workaround): the site
  consumes it (VOMS attributes for accounting), it is not used to authenticate the channel.
* The routing attributes an HTCondor-CE's JobRouter reads are set from the resources: ``xcount`` (cores),
  ``maxMemory`` (MB), ``maxWallTime`` (minutes), ``queue``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from intercede.backends.credentials import Credential, CredentialNeed
from intercede.backends.htcondor import _ops
from intercede.backends.htcondor._client import CondorClient
from intercede.backends.htcondor.schedd import default_staging
from intercede.errors import InvalidSpecError
from intercede.model import JobSpec, JobStatus, Outcome, OutputBounds, OutputManifest, SubmitResult

__all__ = ["HTCondorCEBackend"]


class HTCondorCEBackend:
    """The HTCondor-CE ``ce`` (its host name) on ``port``. At least one of ``scitoken_file`` and ``token_file`` is
    required. Construction does no I/O."""

    fetch_is_destructive = False

    def __init__(self, ce: str, *, port: int = 9619, scitoken_file: Path | None = None,
                 token_file: Path | None = None, proxy: Path | None = None, ca_file: Path | None = None,
                 schedd: str | None = None,
                 name: str | None = None, staging: Path | None = None, grace: float = 120.0,
                 keep_seconds: int = 10 * 86400, max_output_mb: int | None = 1024,
                 config: Mapping[str, str] | None = None, workers: int = 2, call_timeout: float = 60.0) -> None:
        if scitoken_file is None and token_file is None:
            raise InvalidSpecError(f"HTCondor-CE {ce}: a SciToken or an IDTOKEN file is required")
        self.name = name or f"htcondor-ce-{ce}"
        self.audience = f"{ce}:{port}"
        methods = [m for m, f in (("SCITOKENS", scitoken_file), ("IDTOKENS", token_file)) if f is not None]
        knobs = {"DELEGATE_JOB_GSI_CREDENTIALS": "false"}
        if ca_file is not None:
            knobs["AUTH_SSL_CLIENT_CAFILE"] = str(Path(ca_file).expanduser().resolve())
        knobs |= dict(config or {})
        self.client = CondorClient(self.audience, schedd=schedd, token_file=token_file, scitoken_file=scitoken_file,
                                   methods=methods, config=knobs, workers=workers, call_timeout=call_timeout,
                                   audience=self.audience)
        self.options = _ops.Options(staging=(staging or default_staging(self.name)).expanduser(),
                                    keep_seconds=keep_seconds, ce=True, max_output_mb=max_output_mb,
                                    proxy=Path(proxy).expanduser().resolve() if proxy else None)
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
        return f"<HTCondorCEBackend {self.name} {self.audience}>"

    def credential_needs(self) -> list[CredentialNeed]:
        """The SciToken (for this CE's audience) and/or the IDTOKEN it was configured with (a
        :class:`~intercede.backends.credentials.CredentialConsumer`); the default provider reads their files."""
        needs = []
        if "SCITOKENS" in self.client.methods:
            needs.append(CredentialNeed("scitoken", "token", self.audience, self.client.scitoken_file))
        if "IDTOKENS" in self.client.methods:
            needs.append(CredentialNeed("idtoken", "token", None, self.client.token_file))
        return needs

    async def use_credential(self, need: CredentialNeed, credential: Credential) -> None:
        await self.client.set_token(need.slot, credential.secret)

    async def version(self) -> str:
        """The CE schedd's ``$CondorVersion`` string."""
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
