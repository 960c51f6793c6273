"""The operations every bindings-based HTCondor backend shares, as functions over a :class:`CondorClient`.

:class:`~intercede.backends.htcondor.schedd.HTCondorBackend` and
:class:`~intercede.backends.htcondor.ce.HTCondorCEBackend` are thin classes over these (shared functions, never a
common base class: their capabilities differ on purpose). Job ids are ``"<cluster>.<proc>"`` of the one schedd the
client talks to. The copies of a multi-copy submit are the procs of ONE cluster (per-copy values as item data), which
the schedd takes or refuses as a whole; a one-copy submit is a cluster of its own.

Spooled outputs come back into the copy's local sandbox folder (the job's ``initialdir``, recorded in the job as
``IntercedeSandbox``) and are then moved into the fetch's destination by :func:`_sandbox.materialise`.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from intercede.backends.capabilities import LoadReport
from intercede.backends.htcondor import _htcondor as core
from intercede.backends.htcondor import _sandbox
from intercede.backends.htcondor._client import CondorClient, SubmitRefused
from intercede.errors import (
    AuthenticationError,
    IntercedeError,
    InvalidSpecError,
    TransferError,
    UnsupportedError,
    is_temporary,
)
from intercede.model import (
    JobSpec,
    JobState,
    JobStatus,
    Outcome,
    OutputBounds,
    OutputManifest,
    Submission,
    SubmitResult,
)

__all__ = ["Options", "Tracker", "cancel", "fetch", "find_attempts", "find_by_tag", "load", "purge", "status",
           "submit"]

T = TypeVar("T")
_CHUNK = 200
_NOT_OURS = "not a job id of this backend (expected <cluster>.<proc>)"


@dataclass(frozen=True)
class Options:
    """Submit-side choices: where sandboxes live locally, how long completed jobs stay fetchable, CE attributes."""

    staging: Path
    keep_seconds: int = 10 * 86400
    ce: bool = False
    max_output_mb: int | None = 1024
    proxy: Path | None = None


@dataclass
class Tracker:
    """What one backend instance saw of each job, for the history fallback's grace period."""

    grace: float
    last_seen: dict[str, JobStatus] = field(default_factory=dict)
    missing_since: dict[str, float] = field(default_factory=dict)

    def resolve(self, job_id: str, ad: Mapping[str, Any] | None) -> JobStatus:
        if ad is not None:
            self.missing_since.pop(job_id, None)
            status = self.last_seen[job_id] = core.job_status(job_id, ad)
            return status
        since = self.missing_since.setdefault(job_id, time.monotonic())
        return core.missing_status(job_id, self.last_seen.get(job_id), time.monotonic() - since, self.grace)


def _chunks(items: Sequence[T]) -> list[Sequence[T]]:
    return [items[i:i + _CHUNK] for i in range(0, len(items), _CHUNK)]


async def _ads(client: CondorClient, ids: Sequence[tuple[int, int]], projection: list[str],
               history: bool = True) -> dict[tuple[int, int], dict[str, Any]]:
    """The queue ads of ``ids``; for those not queued, their history ads (if ``history``)."""
    found: dict[tuple[int, int], dict[str, Any]] = {}
    for chunk in _chunks(ids):
        for ad in await client.call("query", constraint=core.id_constraint(chunk), projection=projection):
            found[(ad["ClusterId"], ad["ProcId"])] = ad | {"_queued": True}
    gone = [i for i in ids if i not in found]
    for chunk in _chunks(gone) if history else []:
        ads = await client.call("history", constraint=core.id_constraint(chunk), projection=projection,
                                match=len(chunk))
        for ad in ads:
            found.setdefault((ad["ClusterId"], ad["ProcId"]), ad | {"_queued": False})
    return found


async def submit(client: CondorClient, spec: JobSpec, options: Options) -> SubmitResult:
    """Stage and spool every copy; per-copy results. Several copies are ONE cluster (one proc per copy, see
    :func:`_submit_cluster`); one copy is a cluster of its own. Raises only when credentials are refused, or the
    schedd cannot be reached and no copy got through."""
    if len(spec.copies) > 1:
        return await _submit_cluster(client, spec, options)
    results = await asyncio.gather(*(_submit_copy(client, spec, i, options) for i in range(len(spec.copies))),
                                   return_exceptions=True)
    submissions: list[Submission] = []
    for i, r in enumerate(results):
        if isinstance(r, Submission):
            submissions.append(r)
            continue
        assert isinstance(r, BaseException)
        if not isinstance(r, IntercedeError) or isinstance(r, AuthenticationError) or (
                is_temporary(r) and not any(isinstance(x, Submission) and x.ok for x in results)):
            raise r
        submissions.append(Submission(copy_index=i, tag=spec.copy_tag(i), error=str(r), temporary=is_temporary(r)))
    return SubmitResult(submissions=submissions)


async def _submit_copy(client: CondorClient, spec: JobSpec, index: int, options: Options) -> Submission:
    tag = spec.copy_tag(index)
    folder = options.staging / secrets.token_hex(8)
    try:
        staged = await asyncio.to_thread(_sandbox.stage, spec, spec.copies[index], folder)
        description = core.spooled_description(
            spec, executable=staged.executable, iwd=str(folder), inputs=staged.inputs,
            outputs=_sandbox.output_names(spec), tag=tag, keep_seconds=options.keep_seconds, ce=options.ce,
            max_output_mb=options.max_output_mb, proxy=str(options.proxy) if options.proxy else None)
        cluster = await client.call("submit", description=description)
    except (InvalidSpecError, SubmitRefused, TransferError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        return Submission(copy_index=index, tag=tag, error=str(exc))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        _sandbox.clear(folder)  # the spool step has uploaded them: no secret stays on this disk
    return Submission(copy_index=index, tag=tag, job_id=f"{cluster}.0")


async def _submit_cluster(client: CondorClient, spec: JobSpec, options: Options) -> SubmitResult:
    """Every copy as one proc of ONE cluster: each copy is staged into its own sandbox folder, and what differs
    between the copies' descriptions (wrapper, sandbox, inputs with the copy's secrets, tag) becomes per-proc item
    data (``queue ... from``). The schedd takes or refuses the cluster as a whole: a refusal fails every copy."""
    folders = [options.staging / secrets.token_hex(8) for _ in spec.copies]
    tags = [spec.copy_tag(i) for i in range(len(spec.copies))]
    try:
        try:
            staged = [await asyncio.to_thread(_sandbox.stage, spec, copy, folder)
                      for copy, folder in zip(spec.copies, folders, strict=True)]
            descriptions = [core.spooled_description(
                spec, executable=s.executable, iwd=str(folder), inputs=s.inputs, outputs=_sandbox.output_names(spec),
                tag=tag, keep_seconds=options.keep_seconds, ce=options.ce, max_output_mb=options.max_output_mb,
                proxy=str(options.proxy) if options.proxy else None)
                for s, folder, tag in zip(staged, folders, tags, strict=True)]
            common, items = core.per_proc(descriptions)
            cluster = await client.call("submit", description=common, items=items)
        except (InvalidSpecError, SubmitRefused, TransferError) as exc:
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
            return SubmitResult(submissions=[Submission(copy_index=i, tag=t, error=str(exc)) for i, t in
                                             enumerate(tags)])
        except BaseException:
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
            raise
    finally:
        for folder in folders:
            _sandbox.clear(folder)  # the spool step has uploaded them: no secret stays on this disk
    return SubmitResult(submissions=[Submission(copy_index=i, tag=t, job_id=f"{cluster}.{i}")
                                     for i, t in enumerate(tags)])


async def status(client: CondorClient, tracker: Tracker, job_ids: Sequence[str]) -> list[JobStatus]:
    """One status per id, in order: from the queue, else the history, else :func:`core.missing_status`."""
    parsed = {i: core.parse_job_id(i) for i in job_ids}
    ads = await _ads(client, list({p for p in parsed.values() if p}), [*core.STATUS_ATTRS, *core.USAGE_ATTRS])
    out = []
    for job_id in job_ids:
        key = parsed[job_id]
        if key is None:
            out.append(JobStatus(job_id=job_id, state=JobState.UNKNOWN, reason=_NOT_OURS))
        else:
            out.append(tracker.resolve(job_id, ads.get(key)))
    return out


async def cancel(client: CondorClient, job_ids: Sequence[str]) -> list[Outcome]:
    """Remove every id that is still waiting, running or held; the others are reported per id."""
    parsed = {i: core.parse_job_id(i) for i in job_ids}
    ads = await _ads(client, list({p for p in parsed.values() if p}), ["ClusterId", "ProcId", "JobStatus"])
    failed: dict[str, str] = {}
    removable = []
    for job_id, key in parsed.items():
        ad = ads.get(key) if key else None
        if key is None:
            failed[job_id] = _NOT_OURS
        elif ad is None:
            failed[job_id] = "no such job: the schedd knows it in neither its queue nor its history"
        elif ad["JobStatus"] in (3, 4):
            failed[job_id] = f"the job has already {'finished' if ad['JobStatus'] == 4 else 'been removed'}"
        else:
            removable.append(job_id)
    if removable:
        await client.call("act", action="Remove", ids=removable, reason="cancelled through intercede")
        after = await _ads(client, [k for i in removable if (k := parsed[i])], ["ClusterId", "ProcId", "JobStatus"])
        for job_id in removable:
            ad = after.get(parsed[job_id])  # type: ignore[arg-type]
            if ad is not None and ad["JobStatus"] not in (3, 4):
                failed[job_id] = f"the schedd did not remove it (JobStatus {ad['JobStatus']})"
    return [Outcome(job_id=i, ok=i not in failed, detail=failed.get(i, "")) for i in job_ids]


async def purge(client: CondorClient, options: Options, job_ids: Sequence[str]) -> list[Outcome]:
    """Let each job leave the queue (mark it purged; remove it first if it has not finished) and delete its local
    sandbox. Idempotent: a job already gone is purged."""
    parsed = {i: core.parse_job_id(i) for i in job_ids}
    keys = [p for p in parsed.values() if p]
    ads = await _ads(client, keys, ["ClusterId", "ProcId", "JobStatus", core.SANDBOX], history=False)
    queued = [f"{c}.{p}" for (c, p), ad in ads.items() if ad["JobStatus"] != 3]
    active = [f"{c}.{p}" for (c, p), ad in ads.items() if ad["JobStatus"] not in (3, 4)]
    if queued:
        await client.call("edit", ids=queued, attr=core.PURGED, value="true")
    if active:
        await client.call("act", action="Remove", ids=active, reason="purged through intercede")
    for ad in ads.values():
        folder = _sandbox_of(ad, options)
        if folder is not None:
            await asyncio.to_thread(shutil.rmtree, folder, True)
    return [Outcome(job_id=i, ok=parsed[i] is not None, detail="" if parsed[i] else _NOT_OURS) for i in job_ids]


def _sandbox_of(ad: Mapping[str, Any], options: Options) -> Path | None:
    """The job's local sandbox folder, if it is one of ours (under ``options.staging``)."""
    value = ad.get(core.SANDBOX)
    if not isinstance(value, str):
        return None
    folder = Path(value)
    return folder if folder.parent.resolve() == options.staging.resolve() else None


async def fetch(client: CondorClient, options: Options, job_id: str, spec: JobSpec, destination: Path,
                bounds: OutputBounds | None) -> OutputManifest:
    """Retrieve a completed job's spooled outputs and move them into ``destination``. Not destructive: the job stays
    in the queue (``leave_in_queue``) until :func:`purge`, so a fetch can be repeated."""
    bounds = bounds or OutputBounds()
    key = core.parse_job_id(job_id)
    if key is None:
        raise UnsupportedError(f"{job_id!r} is {_NOT_OURS}")
    ads = await _ads(client, [key], ["ClusterId", "ProcId", "JobStatus", core.PURGED, core.SANDBOX], history=False)
    ad = ads.get(key)
    if ad is None or ad.get(core.PURGED) is True:
        raise TransferError(f"the outputs of {job_id} are gone: the job is no longer in the schedd's queue "
                            "(purged, or removed by the site)")
    if ad["JobStatus"] != 4:
        native = core.STATES.get(ad["JobStatus"], (str(ad["JobStatus"]), None))[0]
        raise TransferError(f"{job_id} has not completed (it is {native}): only a completed job's outputs can be "
                            "fetched")
    folder = _sandbox_of(ad, options)
    if folder is None:
        raise TransferError(f"{job_id} was not submitted through intercede into {options.staging} "
                            f"(its sandbox is {ad.get(core.SANDBOX)!r})")
    await asyncio.to_thread(folder.mkdir, 0o700, True, True)
    await asyncio.to_thread(_sandbox.clear, folder)
    await client.call("retrieve", job_id=job_id, timeout=bounds.transfer_timeout)
    return await asyncio.to_thread(_sandbox.materialise, job_id, spec, folder, destination, bounds)


async def find_by_tag(client: CondorClient, tags: Sequence[str]) -> dict[str, list[str]]:
    """Every job carrying each tag, in the queue or in the history, in submission order."""
    return {tag: list(jobs) for tag, jobs in (await find_attempts(client, tags)).items()}


async def find_attempts(client: CondorClient, tags: Sequence[str]) -> dict[str, dict[str, str | None]]:
    """Every job carrying each tag, in submission order, with the attempt id the submit set on it (None if none).

    No fence here (these backends are not ``Fenceable``): a bindings submit is one schedd transaction over the
    CE actor's own connection, from a worker that dies with the actor's process; a transaction that is not committed
    when its connection closes is dropped by the schedd, so an interrupted submit either is in the queue by the time
    anyone can look again, or never will be. Nothing lands late, and a submit still running in a live actor is
    reported in flight by that actor."""
    found: dict[str, dict[tuple[int, int], str | None]] = {t: {} for t in tags}
    projection = ["ClusterId", "ProcId", core.TAG, core.ATTEMPT]
    for chunk in _chunks(list(tags)):
        constraint = core.tag_constraint(chunk)
        ads = [*await client.call("query", constraint=constraint, projection=projection),
               *await client.call("history", constraint=constraint, projection=projection, match=-1)]
        for ad in ads:
            if ad.get(core.TAG) in found:
                attempt = ad.get(core.ATTEMPT)
                found[ad[core.TAG]][(ad["ClusterId"], ad["ProcId"])] = attempt if isinstance(attempt, str) else None
    return {t: {f"{c}.{p}": jobs[(c, p)] for c, p in sorted(jobs)} for t, jobs in found.items()}


async def load(client: CondorClient) -> LoadReport:
    """Cores of the pool's execute slots (partitionable slots count their whole size) and the schedd's counts."""
    slots = await client.call("startds", projection=["Cpus", "TotalSlotCpus", "SlotType", "State"])
    schedd = await client.call("schedd_ad", projection=["TotalRunningJobs", "TotalIdleJobs"])
    total = free = 0
    for slot in slots:
        kind = slot.get("SlotType")
        if kind == "Partitionable":
            total += int(slot.get("TotalSlotCpus") or 0)
            free += int(slot.get("Cpus") or 0)
        elif kind != "Dynamic":
            total += int(slot.get("Cpus") or 0)
            free += int(slot.get("Cpus") or 0) if slot.get("State") == "Unclaimed" else 0
    return LoadReport(total_cores=total or None, free_cores=free if total else None,
                      running=int(schedd.get("TotalRunningJobs") or 0), queued=int(schedd.get("TotalIdleJobs") or 0))
