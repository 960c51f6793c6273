"""BatchBackend: any Transport composed with any Scheduler. It owns all the I/O of a composed resource.

Each job copy gets its own working directory ``<root>/<uid>`` (see :mod:`intercede.backends.jobscript`); the job id
intercede hands out is ``<native id>@<uid>``, so every operation can find the directory again without any local state.
The uid is the spec's ``attempt`` when it has one (a reconciler's journaled attempt id), a random one otherwise; so
:meth:`BatchBackend.find_attempts` can say which attempt made each job it finds by tag, and
:meth:`BatchBackend.fence` can fence an attempt whose job has not landed: it claims the directory's ``.claim`` first,
and the job script exits before its payload when it cannot claim it (:mod:`intercede.backends.jobscript`).

A submit is either *refused* (the scheduler answered and submitted nothing: a failed copy, directory removed) or it
*may have run*: the connection dropped, the submit command ran past its deadline (it is wrapped in ``timeout`` on the
resource, so no orphaned submit outlives it), or the scheduler lost contact with its controller mid-way. Those raise a
temporary error and keep the directory, for the job a tag lookup may find (or the fence).
Outputs are fetched by :mod:`intercede.backends.outputs`; fetching is not destructive (files stay until ``purge``).

Status of a job the scheduler no longer lists comes from its history (``sacct``, ...); a job missing from both is
reported with the last state this backend saw (SUBMITTED if none) for ``grace`` seconds (a scheduler can be briefly
inconsistent right after a submit) and UNKNOWN afterwards. A job this backend has seen in a final state (terminal,
with its exit code) is answered from that without another query: states never move backwards.

Several copies of one spec are one native bulk submission where the scheduler has one (:class:`BulkScheduler`: a
Slurm job array, one HTCondor cluster, one Direct command), staged and submitted in the same command; each copy still
has its own id ``<native>@<uid>`` (a Slurm array task's native id is ``<array>_<index>``) and directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from intercede.backends import outputs, staging
from intercede.backends.capabilities import LoadReport
from intercede.backends.credentials import Credential, CredentialConsumer, CredentialNeed
from intercede.backends.jobscript import CLAIM, SCRIPT, render
from intercede.backends.schedulers.base import (
    BatchJob,
    BulkRequest,
    BulkScheduler,
    NativeStatus,
    PurgingScheduler,
    Scheduler,
    SubmitRequest,
    TagFileScheduler,
    UsageScheduler,
)
from intercede.backends.staging import StagedDir
from intercede.backends.transports.base import CommandResult, Transport, chunks_within, quoted_size
from intercede.errors import (
    AuthenticationError,
    CommandError,
    ConnectivityError,
    IntercedeError,
    TimeoutError,
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
    Usage,
)

__all__ = ["BatchBackend"]

log = logging.getLogger(__name__)

_MAX_USAGE = 100_000  # usage records kept per backend for re-polled finished jobs

_UID = re.compile(r"[0-9a-f]{16}\Z")
# One claim per attempt, made atomically by whoever comes first: the job script (``job``) or a fence (``fenced``).
_FENCE = f"""umask 077; root=$1; shift
for a; do d=$root/$a; mkdir -p -- "$d" 2>/dev/null
  if ln -s fenced "$d/{CLAIM}" 2>/dev/null || [ "$(readlink "$d/{CLAIM}" 2>/dev/null)" = fenced ]
  then echo "$a fenced"; else echo "$a claimed"; fi
done
"""
# Exit statuses of coreutils ``timeout``: the command ran past its deadline and was killed (TERM, then KILL).
_TIMED_OUT = (124, 137)
_KILL_AFTER = 5


class _AttemptUsed(Exception):
    """A copy's directory exists already: an earlier use of the same attempt id (perhaps fenced), never reused."""


class BatchBackend:
    """A resource reached through ``transport`` and driven by ``scheduler``; job directories live under ``root``.

    ``container`` is the runtime prefix for specs that name a container (e.g. ``("apptainer", "exec")``); without it
    such specs are refused per copy. ``chunk`` bounds the ids per status/cancel command, ``concurrency`` the copies
    staged at once.
    """

    fetch_is_destructive = False

    def __init__(self, transport: Transport, scheduler: Scheduler, root: str, *, name: str | None = None,
                 container: Sequence[str] = (), grace: float = 120.0, chunk: int = 500, concurrency: int = 8,
                 command_timeout: float = 120.0) -> None:
        if not root.startswith("/"):
            raise ValueError(f"root must be an absolute path on the resource, got {root!r}")
        self.transport = transport
        self.scheduler = scheduler
        self.root = root.rstrip("/")
        self.name = name or f"{scheduler.name}+{transport.name}"
        self.container = tuple(container)
        self.grace = grace
        self.chunk = chunk
        self.command_timeout = command_timeout
        self._limit = asyncio.Semaphore(concurrency)
        self._missing_since: dict[str, float] = {}
        self._last_seen: dict[str, NativeStatus] = {}
        self._usage: dict[str, Usage] = {}  # job id -> what it used, once accounting answered (bounded below)
        self._purged: set[str] = set()
        # Ids this backend cancelled: Slurm keeps no record at all of a *pending* array task that is cancelled (it
        # leaves squeue at once and sacct never lists it), so such an id, gone from queue and history, was aborted.
        self._cancelled: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()

    def credential_needs(self) -> list[CredentialNeed]:
        """The transport's (an SSH transport's client keys; none for a local one)."""
        return list(self.transport.credential_needs()) if isinstance(self.transport, CredentialConsumer) else []

    async def use_credential(self, need: CredentialNeed, credential: Credential) -> None:
        if isinstance(self.transport, CredentialConsumer):
            await self.transport.use_credential(need, credential)

    def __repr__(self) -> str:
        return f"<BatchBackend {self.name} root={self.root}>"

    # -- ids ---------------------------------------------------------------------------------------------------

    def _job(self, job_id: str) -> BatchJob | None:
        native, sep, uid = job_id.rpartition("@")
        if not sep or not native or not _UID.match(uid):
            return None
        return BatchJob(native, f"{self.root}/{uid}")

    @staticmethod
    def _id(job: BatchJob) -> str:
        return f"{job.native_id}@{job.workdir.rsplit('/', 1)[-1]}"

    # -- submit ------------------------------------------------------------------------------------------------

    async def submit(self, spec: JobSpec) -> SubmitResult:
        """Stage and submit every copy of ``spec``; per-copy results. Raises only if no copy could be attempted
        because the resource is unreachable or refuses our credentials.

        One copy: one command (staging folded into the submit). Several copies, on a :class:`BulkScheduler`: ONE
        native bulk submission per group of at most the scheduler's ``bulk_max`` copies (a Slurm job array, an
        HTCondor cluster, one Direct command), staging and submit again in one command; copies keep their own ids, tags
        (``<tag>.<i>``), working directories and outcomes. A refused bulk submission fails each of its copies."""
        indexed = list(enumerate(spec.copies))
        if spec.container and not self.container:
            error = f"{self.name} has no container runtime configured; cannot run {spec.container!r}"
            return SubmitResult(submissions=[Submission(copy_index=i, tag=spec.copy_tag(i), error=error)
                                             for i, _ in indexed])
        if len(indexed) > 1 and isinstance(self.scheduler, BulkScheduler):
            groups = [[i for i, _ in g] for g in chunks_within(indexed, lambda ic: 2 * quoted_size(
                f"{self.root}/{'0' * 16}/{SCRIPT}"), max_items=self.scheduler.bulk_max)]
            results: list[list[Submission] | BaseException] = list(await asyncio.gather(
                *(self._submit_bulk(spec, g) for g in groups), return_exceptions=True))
        else:
            groups = [[i] for i, _ in indexed]
            results = list(await asyncio.gather(*(self._submit_one(spec, i) for i, _ in indexed),
                                                return_exceptions=True))
        any_ok = any(isinstance(r, list) and any(x.ok for x in r) for r in results)
        submissions: list[Submission] = []
        for group, r in zip(groups, results, strict=True):
            if isinstance(r, list):
                submissions += r
                continue
            if isinstance(r, AuthenticationError) or (is_temporary(r) and not any_ok) or \
                    not isinstance(r, IntercedeError):
                raise r
            submissions += [Submission(copy_index=i, tag=spec.copy_tag(i), error=str(r), temporary=is_temporary(r))
                            for i in group]
        return SubmitResult(submissions=sorted(submissions, key=lambda x: x.copy_index))

    def _staged(self, spec: JobSpec, index: int, workdir: str) -> StagedDir:
        copy = spec.copies[index]
        # A tag file only for a scheduler that finds jobs by it (the others name their jobs with the tag); a job
        # without a tag gets an empty one there, so the finder sees every job it started.
        tag = (spec.copy_tag(index) or "") if isinstance(self.scheduler, TagFileScheduler) else None
        return StagedDir(workdir, render(spec, copy, workdir, self.container), tag,
                         {k: v.get_secret_value() for k, v in copy.secrets.items()})

    async def _submit_one(self, spec: JobSpec, index: int) -> list[Submission]:
        tag = spec.copy_tag(index)
        workdir = f"{self.root}/{spec.attempt or secrets.token_hex(8)}"
        request = SubmitRequest(f"{workdir}/{SCRIPT}", workdir, tag, spec.resources)
        async with self._limit:
            try:
                result = await self._stage_and_submit(spec, [self._staged(spec, index, workdir)],
                                                      self.scheduler.submit_argv(request), [workdir])
            except _AttemptUsed:
                return [Submission(copy_index=index, tag=tag,
                                   error=f"attempt {spec.attempt} was used before: {workdir} exists")]
            try:
                native = self.scheduler.parse_submit(result)
            except CommandError as exc:  # a refusal: the scheduler answered, and submitted nothing
                await self._discard([workdir])
                return [Submission(copy_index=index, tag=tag, error=str(exc))]
            # Any other error (lost contact mid-submit) means it may have submitted: the directory stays.
        return [Submission(copy_index=index, tag=tag, job_id=self._id(BatchJob(native, workdir)))]

    async def _submit_bulk(self, spec: JobSpec, indices: list[int]) -> list[Submission]:
        scheduler = self.scheduler
        assert isinstance(scheduler, BulkScheduler)
        prefix = secrets.token_hex(6)
        workdirs = tuple(f"{self.root}/{prefix}{k:04d}" for k in range(len(indices)))
        request = BulkRequest(self.root, prefix, indices[0], len(indices), spec.tag if len(spec.copies) > 1 else None,
                              spec.resources, workdirs, tuple(f"{w}/{SCRIPT}" for w in workdirs),
                              f"{self.root}/{prefix}ffff")
        launcher = scheduler.bulk_launcher(request)
        anchor = request.anchor if launcher is not None else None
        dirs = [self._staged(spec, i, w) for i, w in zip(indices, workdirs, strict=True)]
        everything = [*workdirs, *([anchor] if anchor else [])]
        async with self._limit:
            try:
                result = await self._stage_and_submit(spec, dirs, scheduler.submit_bulk_argv(request), everything,
                                                      anchor=anchor, launcher=launcher)
            except _AttemptUsed:  # random uids: a collision of 48 random bits, never an earlier attempt
                raise CommandError(f"{self.name}: a fresh job directory under {self.root} existed already") from None
            try:
                natives = scheduler.parse_submit_bulk(result, request)
            except CommandError as exc:  # refused as a whole: every copy fails with the reason
                await self._discard(everything)
                return [Submission(copy_index=i, tag=spec.copy_tag(i), error=str(exc)) for i in indices]
            if len(natives) != len(indices):
                raise CommandError(f"{self.name}: the bulk submission answered {len(natives)} ids for "
                                   f"{len(indices)} copies", argv=list(result.argv))
            # A copy the scheduler did not start (the others were): its own failure, temporary (the shell could not
            # fork, say); only its directory goes.
            if not_started := [w for n, w in zip(natives, workdirs, strict=True) if n is None]:
                await self._discard(not_started)
        why = result.stderr.decode("utf-8", "replace").strip()[-500:] or "no reason given"
        return [Submission(copy_index=i, tag=spec.copy_tag(i), job_id=self._id(BatchJob(n, w))) if n is not None
                else Submission(copy_index=i, tag=spec.copy_tag(i), temporary=True,
                                error=f"{self.name}: copy {i} of the bulk submission was not started (the others "
                                      f"were): {why}")
                for i, n, w in zip(indices, natives, workdirs, strict=True)]

    async def _stage_and_submit(self, spec: JobSpec, dirs: list[StagedDir], submit_argv: list[str],
                                workdirs: list[str], *, anchor: str | None = None,
                                launcher: str | None = None) -> CommandResult:
        """Stage ``dirs`` and run ``submit_argv`` in ONE command (two, plus the uploads, when the spec has input
        files: they must land before the submit). Raises :class:`_AttemptUsed`, a :class:`CommandError` when staging
        failed (directories removed), :class:`TimeoutError` when the command ran past its deadline; a connection
        lost mid-way propagates with the directories kept (the job may have been submitted)."""
        text = staging.script(self.root, dirs, anchor=anchor, launcher=launcher).encode()
        inputs = bool(spec.input_files)
        argv = ["sh", "-s", "--"] if inputs else self._bounded(["sh", "-s", "--", *submit_argv])
        try:
            result = await self.transport.run(argv, stdin=text, timeout=self.command_timeout + _KILL_AFTER + 5)
            self._staging_outcome(result, workdirs)
            if inputs:
                await asyncio.gather(*(self._put_input(f.source, f"{d.workdir}/{f.name}")
                                       for d in dirs for f in spec.input_files))
        except _AttemptUsed:
            raise
        except CommandError:
            await self._discard(workdirs)
            raise
        except Exception:
            if inputs:  # nothing was submitted yet
                await self._discard(workdirs)
            raise
        if inputs:
            result = await self.transport.run(self._bounded(submit_argv),
                                              timeout=self.command_timeout + _KILL_AFTER + 5)
        if result.exit_status in _TIMED_OUT:
            raise TimeoutError(f"{self.name}: the submit command ran past {self.command_timeout:.0f} s on the "
                               "resource and was killed; it may have submitted the job")
        if result.exit_status < 0:  # died of a signal (SIGPIPE when the SSH channel dropped): its answer was lost
            raise ConnectivityError(f"{self.name}: the submit command died of signal {-result.exit_status}; it may "
                                    "have submitted the job")
        return result

    def _staging_outcome(self, result: CommandResult, workdirs: list[str]) -> None:
        """Raise when the staging part of ``result`` failed (see :mod:`intercede.backends.staging`)."""
        if result.exit_status not in (staging.ATTEMPT_USED, staging.STAGE_FAILED):
            return
        err = result.stderr.decode("utf-8", "replace")
        if staging.MARK not in err:
            return  # the submit command's own exit status
        if result.exit_status == staging.ATTEMPT_USED:
            raise _AttemptUsed()
        raise CommandError(f"{self.name}: staging the job directories failed: {err.strip()[-2000:]}",
                           argv=list(result.argv), exit_status=result.exit_status, stderr=err)

    def _bounded(self, argv: list[str]) -> list[str]:
        """``argv`` under coreutils ``timeout`` on the resource: a submit orphaned by a dropped connection (a
        ``sbatch`` retrying against a dead controller) is killed there instead of landing at any later time."""
        return ["timeout", f"--kill-after={_KILL_AFTER}", f"{max(1, math.ceil(self.command_timeout))}", *argv]

    async def _discard(self, workdirs: list[str]) -> None:
        """Best effort: remove directories no job will use (the resource may be unreachable right now)."""
        with contextlib.suppress(IntercedeError):
            for chunk in chunks_within(workdirs, quoted_size):
                await self._run(["rm", "-rf", "--", *chunk])

    async def _put_input(self, source: Path, remote: str) -> None:
        parent = remote.rsplit("/", 1)[0]
        await self._run(["mkdir", "-p", "--", parent])
        await self.transport.put(source, remote, timeout=self.command_timeout)

    async def _run(self, argv: list[str], stdin: bytes | None = None) -> None:
        (await self.transport.run(argv, stdin=stdin, timeout=self.command_timeout)).check()

    # -- status ------------------------------------------------------------------------------------------------

    async def status(self, job_ids: Sequence[str]) -> list[JobStatus]:
        """One status per id, in order; see the module docstring for jobs that left the queue."""
        jobs = {i: j for i in job_ids if (j := self._job(i)) is not None}
        found: dict[str, NativeStatus] = {}
        # A final state (terminal, its exit code known) never changes: such ids are answered without asking again.
        for job_id, job in list(jobs.items()):
            last = self._last_seen.get(job_id)
            if last is not None and last.state.is_terminal and last.exit_code is not None and \
                    job_id not in self._purged:
                found[job.native_id] = last
                del jobs[job_id]
        for chunk in self._chunks(jobs.values()):
            result = await self.transport.run(self.scheduler.status_argv(chunk), timeout=self.command_timeout)
            found.update(self.scheduler.parse_status(result, chunk))
        # Terminal jobs without an exit code, and jobs gone from the queue, are looked up in history.
        unresolved = [j for j in jobs.values() if j.native_id not in found
                      or (found[j.native_id].state.is_terminal and found[j.native_id].exit_code is None)]
        for chunk in self._chunks(unresolved):
            argv = self.scheduler.history_argv(chunk)
            if argv is not None:
                result = await self.transport.run(argv, timeout=self.command_timeout)
                found.update(self.scheduler.parse_history(result, chunk))
        known = {i: j for i in job_ids if (j := self._job(i)) is not None}  # final ones included (not re-asked)
        statuses = [self._status(i, known.get(i), found) for i in job_ids]
        if isinstance(self.scheduler, UsageScheduler):
            statuses = await self._with_usage(statuses, known)
        return statuses

    async def _with_usage(self, statuses: list[JobStatus], jobs: Mapping[str, BatchJob]) -> list[JobStatus]:
        """``statuses`` with the usage of the terminal ones, asked once per job (then cached). Best effort: usage is
        accounting, so a failed query is logged and the statuses go out without it (asked again next poll)."""
        assert isinstance(self.scheduler, UsageScheduler)
        wanted = [jobs[s.job_id] for s in statuses
                  if s.state.is_terminal and s.job_id in jobs and s.job_id not in self._usage]
        by_native = {j.native_id: i for i, j in jobs.items()}
        for chunk in self._chunks(wanted):
            try:
                result = await self.transport.run(self.scheduler.usage_argv(chunk), timeout=self.command_timeout)
                for native, usage in self.scheduler.parse_usage(result, chunk).items():
                    if native in by_native:
                        self._usage[by_native[native]] = usage
            except IntercedeError as exc:
                log.info("CE %s: usage of %d finished job(s) not available yet: %s", self.name, len(chunk), exc)
        if len(self._usage) > _MAX_USAGE:  # the oldest first: terminal jobs stop being polled soon after
            for job_id in list(self._usage)[:len(self._usage) - _MAX_USAGE]:
                del self._usage[job_id]
        return [s.model_copy(update={"usage": self._usage[s.job_id]}) if s.job_id in self._usage and s.state.is_terminal
                else s for s in statuses]

    def _status(self, job_id: str, job: BatchJob | None, found: dict[str, NativeStatus]) -> JobStatus:
        if job is None:
            return JobStatus(job_id=job_id, state=JobState.UNKNOWN, reason="not a job id of this backend")
        native = found.get(job.native_id)
        if native is not None:
            self._missing_since.pop(job_id, None)
            self._last_seen[job_id] = native
            return _job_status(job_id, native)
        if job_id in self._purged:
            return JobStatus(job_id=job_id, state=JobState.UNKNOWN, reason="purged: its working directory is gone")
        if job_id in self._cancelled:
            return JobStatus(job_id=job_id, state=JobState.ABORTED, native_state="CANCELLED",
                             reason="cancelled before it started (the scheduler kept no record of it)")
        since = self._missing_since.setdefault(job_id, time.monotonic())
        if time.monotonic() - since < self.grace:
            last = self._last_seen.get(job_id, NativeStatus(JobState.SUBMITTED, "", reason="not listed yet"))
            return _job_status(job_id, last)
        self._last_seen.pop(job_id, None)
        return JobStatus(job_id=job_id, state=JobState.UNKNOWN,
                         reason=f"in neither the queue nor the history for {self.grace:.0f} s")

    # -- cancel, purge -----------------------------------------------------------------------------------------

    async def cancel(self, job_ids: Sequence[str]) -> list[Outcome]:
        """Cancel jobs; per-id outcomes (unknown or finished jobs are reported, not raised)."""
        jobs = {i: j for i in job_ids if (j := self._job(i)) is not None}
        failed: dict[str, str] = {}
        for chunk in self._chunks(jobs.values()):
            result = await self.transport.run(self.scheduler.cancel_argv(chunk), timeout=self.command_timeout)
            failed.update(self.scheduler.parse_cancel(result, chunk))
        outcomes = [_outcome(i, jobs.get(i), failed) for i in job_ids]
        self._cancelled.update(o.job_id for o in outcomes if o.ok)
        return outcomes

    async def purge(self, job_ids: Sequence[str]) -> list[Outcome]:
        """Remove each job's working directory (and, for a :class:`PurgingScheduler`, end every process left of the
        job first). Idempotent: purging a purged job succeeds."""
        jobs = {i: j for i in job_ids if (j := self._job(i)) is not None}
        for chunk in self._chunks(jobs.values()):
            if isinstance(self.scheduler, PurgingScheduler):
                await self._run(self.scheduler.purge_argv(chunk))
            else:
                await self._run(["rm", "-rf", "--", *(j.workdir for j in chunk)])
        for job_id in jobs:
            self._last_seen.pop(job_id, None)
            self._cancelled.discard(job_id)
            self._purged.add(job_id)
        return [_outcome(i, jobs.get(i), {}) for i in job_ids]

    # -- outputs, diagnostics ----------------------------------------------------------------------------------

    async def fetch(self, job_id: str, spec: JobSpec, destination: Path,
                    bounds: OutputBounds | None = None) -> OutputManifest:
        """Copy stdout, stderr and the declared outputs into ``destination`` (bounded and contained)."""
        job = self._require(job_id)
        return await outputs.fetch(self.transport, job_id, job.workdir, spec, destination, bounds or OutputBounds())

    async def peek(self, job_id: str, name: str, max_bytes: int = 65536) -> bytes:
        """The last ``max_bytes`` of file ``name`` in the job's working directory, contained as :meth:`fetch` is
        (a symlink, or a name resolving outside the directory, raises :class:`OutputBoundError`)."""
        job = self._require(job_id)
        return await outputs.read_tail(self.transport, job.workdir, name, max_bytes, self.command_timeout)

    def _chunks(self, jobs: Iterable[BatchJob]) -> list[list[BatchJob]]:
        """At most ``chunk`` jobs per command, and never more than the argument budget of a command line."""
        return list(chunks_within(jobs, lambda j: quoted_size(j.native_id, j.workdir), max_items=self.chunk))

    def _require(self, job_id: str) -> BatchJob:
        job = self._job(job_id)
        if job is None:
            raise UnsupportedError(f"{job_id!r} is not a job id of {self.name}")
        return job

    # -- tags, load --------------------------------------------------------------------------------------------

    async def find_by_tag(self, tags: Sequence[str]) -> dict[str, list[str]]:
        """Every job carrying each tag, in the queue or in history."""
        return {tag: sorted(jobs) for tag, jobs in (await self.find_attempts(tags)).items()}

    async def find_attempts(self, tags: Sequence[str]) -> dict[str, dict[str, str | None]]:
        """Every job carrying each tag, with the attempt that made it: its working directory's uid (which the
        scheduler recorded at submit time; a payload can rename its job, not move its directory)."""
        results = [await self.transport.run(argv, timeout=self.command_timeout)
                   for argv in self.scheduler.find_argvs(tags)]
        found = self.scheduler.parse_find(results, tags)
        out: dict[str, dict[str, str | None]] = {}
        for tag in tags:
            jobs = [j for j in found.get(tag, []) if j.workdir.startswith(self.root + "/")]
            out[tag] = {self._id(j): self._id(j).rpartition("@")[2] for j in sorted(jobs, key=self._id)}
        return out

    async def fence(self, attempts: Sequence[str]) -> dict[str, bool]:
        """Claim each attempt's directory for the fence (one command); see :class:`~.capabilities.Fenceable`."""
        wanted = _attempts(attempts)
        if not wanted:
            return {}
        result = (await self.transport.run(["sh", "-c", _FENCE, "sh", self.root, *wanted],
                                           timeout=self.command_timeout)).check()
        said = dict(line.split(" ", 1) for line in result.text.splitlines() if " " in line)
        # An attempt the command said nothing about is not known to be fenced.
        return {a: said.get(a) == "fenced" for a in wanted}

    async def discard_attempts(self, attempts: Sequence[str]) -> None:
        """Remove the attempts' working directories (a job of them that starts later cannot enter it)."""
        wanted = _attempts(attempts)
        for chunk in chunks_within([f"{self.root}/{a}" for a in wanted], quoted_size, max_items=self.chunk):
            await self._run(["rm", "-rf", "--", *chunk])

    async def load(self) -> LoadReport:
        argv = self.scheduler.load_argv()
        if argv is None:
            raise UnsupportedError(f"{self.scheduler.name} cannot report its load")
        return self.scheduler.parse_load(await self.transport.run(argv, timeout=self.command_timeout))


def _attempts(attempts: Sequence[str]) -> list[str]:
    """The attempt ids as directory names; anything else would name a path outside the root."""
    bad = [a for a in attempts if not _UID.match(a)]
    if bad:
        raise UnsupportedError(f"not attempt ids (16 lowercase hex digits): {bad!r}")
    return list(dict.fromkeys(attempts))


def _job_status(job_id: str, native: NativeStatus) -> JobStatus:
    return JobStatus(job_id=job_id, state=native.state, native_state=native.native_state, exit_code=native.exit_code,
                     reason=native.reason)


def _outcome(job_id: str, job: BatchJob | None, failed: dict[str, str]) -> Outcome:
    if job is None:
        return Outcome(job_id=job_id, ok=False, detail="not a job id of this backend")
    if job.native_id in failed:
        return Outcome(job_id=job_id, ok=False, detail=failed[job.native_id])
    return Outcome(job_id=job_id, ok=True)
