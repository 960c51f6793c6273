"""The HTCondor core shared by every HTCondor path (bindings, CE, CLI over SSH): pure functions and tables, no I/O.

* :func:`resource_commands` / :func:`spooled_description` / :func:`batch_description` turn a
  :class:`~intercede.model.JobSpec` into submit commands (a ``dict`` of submit-language key -> value). A spec HTCondor
  cannot express raises :class:`~intercede.errors.InvalidSpecError` (the caller reports a refused copy).
* :func:`native_status` maps a job ClassAd (as a plain ``dict``) to a :class:`NativeStatus` by :data:`STATES` and the
  hold rules below; :func:`job_status` adds the timestamps.
* :func:`missing_status` is the history fallback's last step: a job in neither the queue nor the history.

State map (tested against real 23.9 and 25.x schedds):

==========  ====================  ======================================================================
JobStatus   native                state
==========  ====================  ======================================================================
1           Idle                  WAITING
2           Running               RUNNING
3           Removed               ABORTED (reason: RemoveReason)
4           Completed             DONE if ExitCode == 0; FAILED otherwise (or killed by a signal)
5           Held                  WAITING for HoldReasonCode 16 (spooling input) or 15 (submitted on hold);
                                  FAILED for an exit hold (HoldReasonCode 3 with a non-zero ExitCode);
                                  ABORTED otherwise (held by the site or a policy: intercede does not wait
                                  for an operator to release it). reason: HoldReason and its codes
6           Transferring Output   RUNNING
7           Suspended             WAITING
==========  ====================  ======================================================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from intercede.backends.schedulers.base import BulkRequest, NativeStatus, SubmitRequest
from intercede.errors import InvalidSpecError
from intercede.model import JobSpec, JobState, JobStatus, Resources, Usage

__all__ = [
    "ATTEMPT",
    "HOLD_REASONS",
    "PURGED",
    "SANDBOX",
    "STATES",
    "STATUS_ATTRS",
    "TAG",
    "USAGE_ATTRS",
    "WORKDIR",
    "batch_description",
    "bulk_batch_description",
    "id_constraint",
    "job_status",
    "jobs_constraint",
    "leave_in_queue",
    "missing_status",
    "native_status",
    "parse_job_id",
    "per_proc",
    "render",
    "resource_commands",
    "spooled_description",
    "tag_constraint",
    "usage",
]

#: Custom job attributes intercede sets: the idempotency tag, the submitter's attempt id, the purge mark, the local
#: sandbox, the CLI workdir.
TAG = "IntercedeTag"
ATTEMPT = "IntercedeAttempt"
PURGED = "IntercedePurged"
SANDBOX = "IntercedeSandbox"
WORKDIR = "IntercedeWorkdir"

#: JobStatus -> (native name, state when no finer rule applies).
STATES: dict[int, tuple[str, JobState]] = {
    1: ("Idle", JobState.WAITING),
    2: ("Running", JobState.RUNNING),
    3: ("Removed", JobState.ABORTED),
    4: ("Completed", JobState.DONE),
    5: ("Held", JobState.ABORTED),
    6: ("TransferringOutput", JobState.RUNNING),
    7: ("Suspended", JobState.WAITING),
}

#: The HoldReasonCodes intercede names in reasons (the rest are reported by number).
HOLD_REASONS = {1: "UserRequest", 3: "JobPolicy", 6: "FailedToCreateProcess", 12: "TransferOutputError",
                13: "TransferInputError", 14: "IwdError", 15: "SubmittedOnHold", 16: "SpoolingInput",
                21: "StartdHeldJob", 26: "SystemPolicy", 34: "JobOutOfResources", 46: "JobDurationExceeded"}
_WAITING_HOLDS = {15, 16}

#: Everything status parsing reads; ask for exactly these (projection / -attributes).
STATUS_ATTRS = ["ClusterId", "ProcId", "JobStatus", "ExitCode", "ExitBySignal", "ExitSignal", "HoldReason",
                "HoldReasonCode", "HoldReasonSubCode", "RemoveReason", "QDate", "JobStartDate", "CompletionDate",
                "EnteredCurrentStatus", TAG, PURGED, SANDBOX, WORKDIR]

#: What :func:`usage` reads of a finished job (asked together with :data:`STATUS_ATTRS`).
USAGE_ATTRS = ["RemoteWallClockTime", "RemoteUserCpu", "RemoteSysCpu", "MemoryUsage", "ResidentSetSize",
               "LastRemoteHost", "RemoteHost", "JobStartDate", "JobCurrentStartDate", "CompletionDate"]

_JOB_ID = re.compile(r"([0-9]{1,10})\.([0-9]{1,7})\Z")


def parse_job_id(job_id: str) -> tuple[int, int] | None:
    """``"<cluster>.<proc>"`` -> ``(cluster, proc)``; None for anything else."""
    m = _JOB_ID.match(job_id)
    return (int(m[1]), int(m[2])) if m else None


def id_constraint(ids: Sequence[tuple[int, int]]) -> str:
    """A ClassAd constraint matching exactly these jobs."""
    if not ids:
        return "false"
    return " || ".join(f"(ClusterId == {c} && ProcId == {p})" for c, p in ids)


def jobs_constraint(ids: Sequence[tuple[int, int]]) -> str:
    """A ClassAd constraint matching exactly these jobs, short and shallow however many there are.

    Clusters asking for the same procs share one term; a set of numbers that is one contiguous run is a range
    (``ProcId >= 0 && ProcId <= 499``: a whole bulk cluster, or consecutive one-job clusters), any other set a
    ``member(..., {...})`` list; the terms are ORed as a balanced tree. Why: HTCondor's tools (23.9 and 25.x) match
    *nothing at all*, silently and with exit 0, once a constraint is a chain of about 400 ORs: ``condor_q`` given
    398 ``<cluster>.<proc>`` arguments (which it turns into such a chain), ``condor_history`` with fewer;
    :func:`id_constraint` (one OR per job) has the same limit."""
    if not ids:
        return "false"
    procs: dict[int, set[int]] = {}
    for cluster, proc in ids:
        procs.setdefault(cluster, set()).add(proc)
    clusters_of: dict[tuple[int, ...], list[int]] = {}
    for cluster, wanted in procs.items():
        clusters_of.setdefault(tuple(sorted(wanted)), []).append(cluster)
    return _any([f"{_among('ClusterId', clusters)} && {_among('ProcId', list(wanted))}"
                 for wanted, clusters in clusters_of.items()])


def _among(attribute: str, values: list[int]) -> str:
    """``attribute`` is one of ``values`` (distinct): ``==``, a range when they are contiguous, else ``member``."""
    values = sorted(values)
    if len(values) == 1:
        return f"{attribute} == {values[0]}"
    if values[-1] - values[0] == len(values) - 1:
        return f"({attribute} >= {values[0]} && {attribute} <= {values[-1]})"
    return f"member({attribute}, {{{', '.join(map(str, values))}}})"


def _any(terms: list[str]) -> str:
    """``terms`` ORed as a balanced tree: its depth grows with log2 of their number, not with it."""
    if len(terms) == 1:
        return f"({terms[0]})"
    half = len(terms) // 2
    return f"({_any(terms[:half])} || {_any(terms[half:])})"


def tag_constraint(tags: Sequence[str]) -> str:
    """A ClassAd constraint matching jobs carrying any of ``tags`` (tags are [A-Za-z0-9._:-], safe in a literal)."""
    return " || ".join(f'{TAG} == "{t}"' for t in tags) or "false"


def leave_in_queue(keep_seconds: int) -> str:
    """The ``leave_in_queue`` intercede submits: a completed job stays in the queue, so its spooled outputs can be
    fetched again, until intercede purges it (sets :data:`PURGED`) or ``keep_seconds`` after completion.
    See docs/htcondor.md for why."""
    return f"JobStatus == 4 && {PURGED} =!= true && (time() - (CompletionDate ?: time())) < {keep_seconds}"


def _quote(value: str) -> str:
    """A ClassAd string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def resource_commands(resources: Resources, *, container: str | None = None, ce: bool = False) -> dict[str, str]:
    """Submit commands for ``resources``. ``ce`` adds the attributes an HTCondor-CE routes on (``xcount``,
    ``maxMemory``, ``maxWallTime``, ``queue``). ``native`` entries are ``"key = value"`` submit commands applied
    last. Raises :class:`InvalidSpecError` for what a vanilla-universe job cannot be."""
    if resources.nodes != 1:
        raise InvalidSpecError(f"HTCondor runs single-node jobs; {resources.nodes} nodes were asked")
    out = {"request_cpus": str(resources.cores)}
    if resources.memory_mb is not None:
        out["request_memory"] = str(resources.memory_mb)
    if resources.gpus:
        out["request_gpus"] = str(resources.gpus)
    if resources.wall_time is not None:
        seconds = int(resources.wall_time.total_seconds())
        out["allowed_job_duration"] = str(seconds)
        if ce:
            out["MY.maxWallTime"] = str(max(1, (seconds + 59) // 60))
    if resources.account is not None:
        out["accounting_group"] = resources.account
    if resources.queue is not None:
        out["MY.queue"] = _quote(resources.queue)
    if ce:
        out["MY.xcount"] = str(resources.cores)
        if resources.memory_mb is not None:
            out["MY.maxMemory"] = str(resources.memory_mb)
    if container is not None:
        out["container_image"] = container
    for line in resources.native:
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_+][A-Za-z0-9_.+]*", key.strip()) or "\n" in line or "\r" in line:
            raise InvalidSpecError(f"native HTCondor options are 'key = value' submit commands, got {line!r}")
        out[key.strip()] = value.strip()
    return out


def spooled_description(spec: JobSpec, *, executable: str, iwd: str, inputs: Sequence[str],
                        outputs: Sequence[str], tag: str | None, keep_seconds: int, ce: bool = False,
                        max_output_mb: int | None = None, proxy: str | None = None) -> dict[str, str]:
    """The submit description of one spooled copy: ``executable`` (the sandbox wrapper) and ``inputs`` are local
    paths uploaded by the spool step, ``outputs`` the exact allow-list of files transferred back into ``iwd``.
    ``proxy`` is an X.509 proxy file carried with the job (``use_x509userproxy``)."""
    for name in (*inputs, *outputs):
        if "," in name or not name.strip() or name != name.strip() or "$" in name or "\n" in name:
            raise InvalidSpecError(f"{name!r} cannot appear in an HTCondor file list")
    desc = {
        "universe": "vanilla",
        "executable": executable,
        "transfer_executable": "true",
        "initialdir": iwd,
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT",
        "transfer_input_files": ",".join(inputs),
        "transfer_output_files": ",".join(outputs),
        "leave_in_queue": leave_in_queue(keep_seconds),
        f"MY.{SANDBOX}": _quote(iwd),
        **resource_commands(spec.resources, container=spec.container, ce=ce),
    }
    if max_output_mb is not None:
        desc["max_transfer_output_mb"] = str(max_output_mb)
    if tag is not None:
        desc[f"MY.{TAG}"] = _quote(tag)
    if spec.attempt is not None:
        desc[f"MY.{ATTEMPT}"] = _quote(spec.attempt)
    if proxy is not None:
        desc["x509userproxy"] = proxy
        desc["use_x509userproxy"] = "true"
    return desc


def batch_description(request: SubmitRequest) -> dict[str, str]:
    """The submit description of one job of :class:`~intercede.backends.batch.BatchBackend`: ``/bin/sh job.sh`` in
    the job's working directory, which the execute node must see (no file transfer)."""
    desc = {
        "universe": "vanilla",
        "executable": "/bin/sh",
        "arguments": _condor_args([request.script]),
        "transfer_executable": "false",
        "should_transfer_files": "NO",
        "initialdir": request.workdir,
        f"MY.{WORKDIR}": _quote(request.workdir),
        **resource_commands(request.resources),
    }
    if request.tag is not None:
        desc[f"MY.{TAG}"] = _quote(request.tag)
    return desc


def bulk_batch_description(request: BulkRequest) -> dict[str, str]:
    """:func:`batch_description` for every copy of ``request`` as ONE cluster (``queue <count>``): proc ``k`` works
    in ``<root>/<prefix><k:04d>`` (``$INT(ProcId,%04d)``) and carries the tag ``<tag>.<first + k>``."""
    workdir = f"{request.root}/{request.prefix}$INT(ProcId,%04d)"
    desc = batch_description(SubmitRequest(f"{workdir}/job.sh", workdir, None, request.resources))
    if request.tag is not None:
        index = "$(ProcId)" if request.first == 0 else f"$INT(ProcId + {request.first})"
        desc[f"MY.{TAG}"] = _quote(f"{request.tag}.{index}")
    return desc


def per_proc(descriptions: Sequence[Mapping[str, str]]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """One cluster's description from the descriptions of its procs: the commands they share as they are, every
    command whose value differs as the macro ``$(intercede_<letters>)``, and per proc the item data (macro -> value) for
    ``queue ... from``. Every description must have the same commands."""
    keys = list(descriptions[0])
    if any(list(d) != keys for d in descriptions):
        raise InvalidSpecError("the copies' submit descriptions differ in their commands: cannot be one cluster")
    varying = [k for k in keys if len({d[k] for d in descriptions}) > 1]
    # Letters only: the submit parser takes a name such as ``intercede_0`` in ``queue ... from`` for a count.
    macros = {k: "intercede_" + "".join(chr(97 + int(d)) for d in str(n)) for n, k in enumerate(varying)}
    common = {k: (f"$({macros[k]})" if k in macros else v) for k, v in descriptions[0].items()}
    items = [{macros[k]: d[k] for k in varying} for d in descriptions]
    for item in items:
        for value in item.values():
            if "\x1f" in value or "\n" in value or "$(" in value:
                raise InvalidSpecError(f"a per-copy submit value cannot be item data: {value[:200]!r}")
    return common, items


def _condor_args(argv: Sequence[str]) -> str:
    """HTCondor's new argument syntax: the whole list in double quotes, each argument in single quotes."""
    return '"' + " ".join("'" + a.replace("'", "''").replace('"', '""') + "'" for a in argv) + '"'


def render(description: Mapping[str, str]) -> str:
    """The submit file text of ``description`` with one ``queue`` statement. Values must be single lines."""
    lines = []
    for key, value in description.items():
        if "\n" in value or "\r" in value:
            raise InvalidSpecError(f"submit command {key} would span lines: {value!r}")
        lines.append(f"{key} = {value}")
    return "\n".join([*lines, "queue 1", ""])


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def native_status(ad: Mapping[str, Any]) -> NativeStatus:
    """The state of the job ``ad`` (attribute -> plain value, undefined as absent or None); see the module table."""
    code = _int(ad.get("JobStatus"))
    if code not in STATES:
        return NativeStatus(JobState.UNKNOWN, f"JobStatus={ad.get('JobStatus')!r}", reason="unknown JobStatus")
    native, state = STATES[code]
    exit_code = _int(ad.get("ExitCode"))
    if code == 4:
        if ad.get("ExitBySignal") is True:
            return NativeStatus(JobState.FAILED, native, None, f"killed by signal {ad.get('ExitSignal')}")
        return NativeStatus(JobState.DONE if exit_code == 0 else JobState.FAILED, native, exit_code)
    if code == 3:
        return NativeStatus(state, native, exit_code, str(ad.get("RemoveReason") or "removed"))
    if code == 5:
        hold = _int(ad.get("HoldReasonCode"))
        sub = _int(ad.get("HoldReasonSubCode"))
        reason = f"held: {ad.get('HoldReason') or 'no reason given'} " \
                 f"(HoldReasonCode {hold} {HOLD_REASONS.get(hold or 0, '')}, subcode {sub})".replace("  ", " ")
        if hold in _WAITING_HOLDS:
            return NativeStatus(JobState.WAITING, native, None, reason)
        if hold == 3 and exit_code not in (None, 0):
            return NativeStatus(JobState.FAILED, native, exit_code, reason)
        return NativeStatus(JobState.ABORTED, native, exit_code, reason)
    return NativeStatus(state, native)


def _time(value: Any) -> datetime | None:
    seconds = _int(value)
    return datetime.fromtimestamp(seconds, UTC) if seconds else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else None


def usage(ad: Mapping[str, Any]) -> Usage | None:
    """What a finished job used, from its ad (:data:`USAGE_ATTRS`): RemoteWallClockTime, RemoteUserCpu +
    RemoteSysCpu, the peak of MemoryUsage (MiB) or else ResidentSetSize (KiB), the execution slot (LastRemoteHost,
    ``slot1@host``), JobStartDate and CompletionDate. None when the ad says nothing of it. Quirks: the history of
    23.9 and 25.x hands MemoryUsage back as its expression (``((ResidentSetSize + 1023) / 1024)``), unevaluated, so
    the peak then comes from ResidentSetSize; the CPU times are whole seconds. A completed job's queue ad can show
    JobStatus 4 a moment before its CompletionDate and RemoteWallClockTime are set: without CompletionDate the
    figures are not final, and this is None (a later poll gets them)."""
    if not _int(ad.get("CompletionDate")):
        return None
    user, system = _number(ad.get("RemoteUserCpu")), _number(ad.get("RemoteSysCpu"))
    memory = _number(ad.get("MemoryUsage"))
    if memory is None and (rss := _number(ad.get("ResidentSetSize"))) is not None:
        memory = rss / 1024
    host = ad.get("LastRemoteHost") or ad.get("RemoteHost")
    found = Usage(wall_seconds=_number(ad.get("RemoteWallClockTime")),
                  cpu_seconds=None if user is None and system is None else (user or 0.0) + (system or 0.0),
                  peak_memory_mb=memory, node=host if isinstance(host, str) and host else None,
                  started_at=_time(ad.get("JobStartDate")), ended_at=_time(ad.get("CompletionDate")))
    return None if found == Usage() else found


def job_status(job_id: str, ad: Mapping[str, Any]) -> JobStatus:
    """:func:`native_status` as a :class:`~intercede.model.JobStatus`, with submit, start and finish times, and
    the :func:`usage` of a finished job."""
    native = native_status(ad)
    return JobStatus(job_id=job_id, state=native.state, native_state=native.native_state,
                     exit_code=native.exit_code, reason=native.reason, submitted_at=_time(ad.get("QDate")),
                     started_at=_time(ad.get("JobStartDate")), finished_at=_time(ad.get("CompletionDate")),
                     usage=usage(ad) if native.state.is_terminal else None)


def missing_status(job_id: str, last: JobStatus | None, missing_for: float, grace: float) -> JobStatus:
    """A job in neither the queue nor the history: its last seen status (SUBMITTED if never seen) for ``grace``
    seconds — a schedd's history can lag its queue — and UNKNOWN afterwards. Never a failure."""
    if missing_for < grace:
        if last is not None:
            return last
        return JobStatus(job_id=job_id, state=JobState.SUBMITTED, reason="not listed by the schedd yet")
    return JobStatus(job_id=job_id, state=JobState.UNKNOWN,
                     reason=f"in neither the schedd's queue nor its history for {grace:.0f} s")


def shell_words(description: Mapping[str, str]) -> list[str]:
    """``description`` as ``-append`` arguments of ``condor_submit`` (one argv element per command)."""
    return [x for key, value in description.items() for x in ("-append", f"{key} = {value}")]

