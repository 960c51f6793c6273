"""HTCondor's command line as a Scheduler dialect for BatchBackend: pure argv builders and parsers.

The submit description is :func:`~intercede.backends.htcondor._htcondor.batch_description` (the core every HTCondor
path shares): ``/bin/sh job.sh`` in the job's working directory, which the execute nodes must see (no file transfer,
as for Slurm), the tag and the working directory as custom attributes. It reaches ``condor_submit`` as ``-append``
arguments, one per command, with ``-queue 1`` and no submit file, so nothing is ever written or quoted by a shell.
Statuses are parsed by the same core (JobStatus, HoldReasonCode, ExitCode, RemoveReason) from pinned JSON output:

* ``condor_q -json -attributes ... -constraint <ids>`` for the queue; ``condor_history ... -match <n>`` with the same
  constraint for jobs that left it: one command per chunk of ids, the ids as one compact constraint
  (:func:`~intercede.backends.htcondor._htcondor.jobs_constraint`: a whole cluster is one range), never as
  arguments: given about 400 job ids, either tool silently matches nothing. Both print *nothing at all* (not ``[]``)
  when no job matches.
* ``condor_rm <ids>`` exits 0 when any job was removed and reports each miss as ``Job <id> not found``.
* With the schedd down every tool exits 1 saying ``Can't find address`` (of the schedd): that raises
  :class:`~intercede.errors.ConnectivityError` (the resource is unreachable, no job failed).

Native ids are ``<cluster>.<proc>``. A completed non-spooled job leaves the queue at once (HTCondor's default), so
finished jobs are normally found in the history.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from intercede.backends.capabilities import LoadReport
from intercede.backends.htcondor import _htcondor as core
from intercede.backends.schedulers.base import BatchJob, BulkRequest, NativeStatus, SubmitRequest
from intercede.backends.transports.base import CommandResult
from intercede.errors import CommandError, ConnectivityError

__all__ = ["HTCondorScheduler"]

_FIND = ["ClusterId", "ProcId", core.TAG, core.WORKDIR]
_SUBMITTED = re.compile(r"^\s*([0-9]+\.[0-9]+)(?:\s+-\s+[0-9]+\.[0-9]+)?\s*$", re.M)
_JOB_ID = re.compile(r"[0-9]+\.[0-9]+\Z")
_NO_SCHEDD = "Can't find address"
_NOT_FOUND = re.compile(r"^Job ([0-9]+\.[0-9]+) not found", re.M)
_SEPARATOR = "%%intercede%%"
_LOAD = ('condor_status -json -attributes Cpus,TotalSlotCpus,SlotType,State && echo "$1" && '
         "condor_status -schedd -json -attributes TotalRunningJobs,TotalIdleJobs")


def _ids(jobs: Sequence[BatchJob]) -> list[str]:
    """The ids of ``jobs`` that are HTCondor job ids: a bare cluster id would act on a whole cluster."""
    return [j.native_id for j in jobs if _JOB_ID.match(j.native_id)]


def _constraint(ids: list[str]) -> str:
    """The constraint matching exactly ``ids`` (``<cluster>.<proc>`` each)."""
    return core.jobs_constraint([(int(c), int(p)) for c, _, p in (i.partition(".") for i in ids)])


def _or_nothing(argv: list[str], ids: list[str]) -> list[str]:
    """``argv``, or a command that lists nothing when no id is an HTCondor job id."""
    return argv if ids else ["true"]


def _check(result: CommandResult) -> CommandResult:
    """``result`` if the command succeeded; :class:`ConnectivityError` when the schedd is down (every tool then
    says ``Can't find address``), :class:`CommandError` for any other failure."""
    if not result.ok and _NO_SCHEDD in result.stderr.decode("utf-8", "replace"):
        err = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ConnectivityError(f"{result.argv[0]}: the schedd cannot be reached: {err[0] if err else ''}")
    return result.check()


def _ads(result: CommandResult) -> list[dict[str, Any]]:
    """The ClassAds of a ``-json`` listing (empty output: none)."""
    return _json(_check(result).text, result)


def _json(text: str, result: CommandResult) -> list[dict[str, Any]]:
    if not text.strip():
        return []
    try:
        ads = json.loads(text)
    except ValueError as exc:
        raise CommandError(f"{result.argv[0]} printed no JSON: {text[:200]!r}", argv=list(result.argv)) from exc
    if not isinstance(ads, list):
        raise CommandError(f"{result.argv[0]} printed JSON that is not a list of ads", argv=list(result.argv))
    return [ad for ad in ads if isinstance(ad, dict)]


def _key(ad: dict[str, Any]) -> str:
    return f"{ad.get('ClusterId')}.{ad.get('ProcId')}"


class HTCondorScheduler:
    """``condor_submit``/``condor_q``/``condor_history``/``condor_rm`` on the resource (locally or over SSH)."""

    name = "htcondor"

    def submit_argv(self, request: SubmitRequest) -> list[str]:
        return ["condor_submit", "-terse", *core.shell_words(core.batch_description(request)), "-queue", "1"]

    def parse_submit(self, result: CommandResult) -> str:
        if not result.ok and _NO_SCHEDD in result.stderr.decode("utf-8", "replace"):
            _check(result)
        if not result.ok:
            err = result.stderr.decode("utf-8", "replace").strip()
            message = " ".join(line.removeprefix("ERROR: ") for line in err.splitlines() if line.strip())
            raise CommandError(f"condor_submit refused the job: {message[-2000:]}", argv=list(result.argv),
                               exit_status=result.exit_status, stderr=err)
        m = _SUBMITTED.search(result.text)
        if m is None:
            raise CommandError(f"condor_submit -terse printed no job id: {result.text[:200]!r}",
                               argv=list(result.argv))
        return m[1]

    # -- bulk: one cluster of ``queue N`` -----------------------------------------------------------------------------
    bulk_max = 10_000

    def bulk_launcher(self, request: BulkRequest) -> str | None:
        return None  # every proc has its own initialdir: nothing outlives the copies

    def submit_bulk_argv(self, request: BulkRequest) -> list[str]:
        """One ``condor_submit`` queueing ``request.count`` procs of one cluster (see
        :func:`~intercede.backends.htcondor._htcondor.bulk_batch_description`)."""
        return ["condor_submit", "-terse", *core.shell_words(core.bulk_batch_description(request)),
                "-queue", str(request.count)]

    def parse_submit_bulk(self, result: CommandResult, request: BulkRequest) -> list[str]:
        """``<cluster>.<k>`` for every proc (``-terse`` prints ``<cluster>.0 - <cluster>.<n-1>``)."""
        first = self.parse_submit(result)
        cluster, _, proc = first.partition(".")
        if proc != "0":
            raise CommandError(f"condor_submit -terse printed an unexpected first job {first!r}",
                               argv=list(result.argv))
        return [f"{cluster}.{k}" for k in range(request.count)]

    def status_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        ids = _ids(jobs)
        return _or_nothing(["condor_q", "-json", "-attributes", ",".join(core.STATUS_ATTRS),
                            "-constraint", _constraint(ids)], ids)

    def parse_status(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, NativeStatus]:
        return {_key(ad): core.native_status(ad) for ad in _ads(result)}

    def history_argv(self, jobs: Sequence[BatchJob]) -> list[str] | None:
        ids = _ids(jobs)
        return _or_nothing(["condor_history", "-json", "-attributes", ",".join(core.STATUS_ATTRS),
                            "-match", str(len(ids)), "-constraint", _constraint(ids)], ids)

    def parse_history(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, NativeStatus]:
        return {_key(ad): core.native_status(ad) for ad in _ads(result)}

    def cancel_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        ids = _ids(jobs)
        return _or_nothing(["condor_rm", *ids], ids)

    def parse_cancel(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, str]:
        said = result.text + "\n" + result.stderr.decode("utf-8", "replace")
        failed = {m[1]: "no such job in the queue (it has finished, or was never there)"
                  for m in _NOT_FOUND.finditer(said)}
        failed |= {j.native_id: "not an HTCondor job id (<cluster>.<proc>)" for j in jobs
                   if not _JOB_ID.match(j.native_id)}
        if not result.ok and not failed:
            _check(result)  # not a per-job answer: the schedd could not be asked at all
        return failed

    def find_argvs(self, tags: Sequence[str]) -> list[list[str]]:
        constraint = core.tag_constraint(tags)
        common = ["-json", "-attributes", ",".join(_FIND), "-constraint", constraint]
        return [["condor_q", *common], ["condor_history", *common]]

    def parse_find(self, results: Sequence[CommandResult], tags: Sequence[str]) -> dict[str, list[BatchJob]]:
        found: dict[str, dict[str, BatchJob]] = {t: {} for t in tags}
        for result in results:
            for ad in _ads(result):
                tag, workdir = ad.get(core.TAG), ad.get(core.WORKDIR)
                if tag in found and isinstance(workdir, str):
                    found[tag].setdefault(_key(ad), BatchJob(_key(ad), workdir))
        return {t: list(jobs.values()) for t, jobs in found.items()}

    def load_argv(self) -> list[str] | None:
        return ["sh", "-c", _LOAD, "sh", _SEPARATOR]

    def parse_load(self, result: CommandResult) -> LoadReport:
        _check(result)
        slots_text, sep, schedds_text = result.text.partition(_SEPARATOR)
        if not sep:
            raise CommandError("the load command printed no separator", argv=list(result.argv))
        total = free = 0
        for slot in _json(slots_text, result):
            cpus = int(slot.get("Cpus") or 0)
            if slot.get("SlotType") == "Partitionable":
                total, free = total + int(slot.get("TotalSlotCpus") or 0), free + cpus
            elif slot.get("SlotType") != "Dynamic":
                total, free = total + cpus, free + (cpus if slot.get("State") == "Unclaimed" else 0)
        schedds = _json(schedds_text, result)
        return LoadReport(total_cores=total or None, free_cores=free if total else None,
                          running=sum(int(s.get("TotalRunningJobs") or 0) for s in schedds),
                          queued=sum(int(s.get("TotalIdleJobs") or 0) for s in schedds))
