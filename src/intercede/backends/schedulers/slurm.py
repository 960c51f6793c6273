"""SlurmScheduler: Slurm's dialect as pure argv builders and output parsers (no I/O).

Every command pins its output format (``squeue --format``, ``sacct --parsable2 --format``), so parsers never read
free text except scancel's per-id error lines and sbatch's refusal message. Verified against Slurm 22.05.8, 24.11.5
and 26.05.5 (recorded outputs and their tests: ``tests/data/slurm/<version>/``, ``tests/unit/test_slurm_scheduler.py``).

Quirks this module absorbs (all three versions unless a version is named):

* ``squeue --jobs=<one id>`` for an id the controller does not know (never existed, or purged after ``MinJobAge``)
  exits 1 with ``slurm_load_jobs error: Invalid job id specified``; with two or more ids, unknown ones are silently
  left out (exit 0). Both mean "not in the queue".
* ``squeue --jobs=`` (empty) lists every job and ``sacct --jobs=0`` lists every job: the builders never emit them
  (ids must be positive integers; an empty list raises :class:`~intercede.errors.InvalidSpecError`).
* ``scancel`` exits 0 and prints nothing for ids that are unknown or already finished; ``--verbose`` makes it print
  ``Kill job error on job id <id>: <why>`` for them (still exit 0). It exits non-zero when some error is not one of
  those two (``Access/permission denied``; ``Unable to contact slurm controller`` for every id when slurmctld is down).
* ``sacct --name`` matches case-insensitively (the database's collation): names are filtered exactly here.
* ``sacct`` prints ``CANCELLED by <uid>`` (ExitCode ``0:0``) for a cancelled job; once slurmctld re-sends its job
  records (24.11, 26.05: on ``scontrol reconfigure``; all three: on a slurmctld restart) it prints ``CANCELLED`` and
  the batch step's signal (``0:15``) instead. Both map to ABORTED; only the reason and exit code differ.
* A submission refused for its resources still uses a job id, and that job shows up in ``squeue``/``sacct`` as FAILED
  (reason ``BadConstraints``) under the job's name, so a tag lookup after a refused submit finds a FAILED job. Too much
  memory is refused this way by all three; too many CPUs only by 24.11 (22.05 and 26.05 accept the job and leave it
  PENDING with reason ``PartitionConfig``).
* A job whose working directory does not exist ends FAILED with ExitCode ``0:53``: reason ``JobLaunchFailure`` in
  22.05, ``RaisedSignal:53(Real-time signal 19)`` in 24.11 and 26.05.
* While slurmctld is down every client command retries for ~10 s, then squeue/sbatch/sinfo exit 1 and scancel exits
  8, each with ``Unable to contact slurm controller (connect failure)``; sacct still answers (slurmdbd).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from operator import attrgetter, getitem

from intercede.backends.capabilities import LoadReport
from intercede.backends.jobscript import array_launcher
from intercede.backends.schedulers.base import BatchJob, BulkRequest, NativeStatus, SubmitRequest
from intercede.backends.transports.base import CommandResult
from intercede.errors import CommandError, ConnectivityError, InvalidSpecError
from intercede.model import JobState, Resources, Usage

__all__ = ["STATES", "SlurmScheduler", "array_name", "array_names", "queue_states"]

#: Slurm's long state names (squeue ``%T``, sacct ``State``) -> intercede's. Anything else maps to UNKNOWN.
#: Provoked on all three versions: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, DEADLINE.
STATES: dict[str, JobState] = {
    "PENDING": JobState.WAITING,
    "CONFIGURING": JobState.WAITING,
    "SUSPENDED": JobState.WAITING,
    "REQUEUED": JobState.WAITING,
    "REQUEUE_FED": JobState.WAITING,
    "REQUEUE_HOLD": JobState.WAITING,
    "RESV_DEL_HOLD": JobState.WAITING,
    "SPECIAL_EXIT": JobState.WAITING,  # requeued and held by an epilog's exit value; releasable, so not final
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "STOPPED": JobState.RUNNING,
    "COMPLETED": JobState.DONE,
    "FAILED": JobState.FAILED,
    "TIMEOUT": JobState.FAILED,
    "NODE_FAIL": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "DEADLINE": JobState.FAILED,
    "CANCELLED": JobState.ABORTED,
    "PREEMPTED": JobState.ABORTED,
    "REVOKED": JobState.ABORTED,  # a federated sibling revoked because another cluster runs the job
}

_SQUEUE_STATUS = "%i|%T|%r"  # id, long state, reason
_SQUEUE_FIND = "%i|%j|%Z"  # id, name, working directory (last: it may contain '|')
_SACCT_HISTORY = "JobID,State,ExitCode,Reason"
_SACCT_FIND = "JobID,JobName,WorkDir"
_NATIVE_ID = attrgetter("native_id")  # C-level: building the wanted set of a million ids runs no Python per id
# sinfo's %C is allocated/idle/other/total CPUs over the (partition's) nodes, each node counted once;
# then one long state per job of ours. "$1" is the optional partition, passed as an argument, never spliced in.
_LOAD_SCRIPT = (
    'sinfo --noheader --format=%C ${1:+"--partition=$1"} && '
    'squeue --noheader --me --format=%T ${1:+"--partition=$1"}'
)
_JOB_ID = re.compile(r"[1-9][0-9]*\Z")  # what sbatch prints: plain job ids
_TASK_ID = re.compile(r"([1-9][0-9]*)(?:_([0-9]+))?\Z")  # what intercede asks about: job ids and array tasks (12_3)
_ANY_JOB_ID = re.compile(r"[0-9]+([_+][0-9\[\]%,-]*)?\Z")  # what Slurm may print: array (12_3) and het (12+0) too
_SEARCHABLE_TAG = re.compile(r"[^\s,|]+\Z")  # --name takes a comma list; output fields are '|'-separated
_CANCEL_ERROR = re.compile(r"Kill job error on job id (\S+): (.*)$")
_NO_CONTROLLER = "Unable to contact slurm controller"
# What sbatch says when it lost its controller (before, or in the middle of, the submit): the job may exist, so this is
# never a refusal. slurm_errno.c: the SLURMCTLD_COMMUNICATIONS_* errors ("Unable to contact slurm controller (connect |
# send | receive | shutdown failure)"), SLURM_PROTOCOL_SOCKET_IMPL_TIMEOUT, SLURM_PROTOCOL_SOCKET_ZERO_BYTES_SENT,
# ESLURM_IN_STANDBY_MODE, EAGAIN while the controller is busy; and the socket errors of a dropped connection.
_LOST_CONTROLLER = (_NO_CONTROLLER, "Socket timed out on send/recv operation", "Zero Bytes were transmitted",
                    "standby mode", "temporarily unable to accept", "Resource temporarily unavailable",
                    "Connection reset by peer", "Connection refused", "Broken pipe", "Communication connection failure")


def _fail(result: CommandResult, why: str) -> CommandError | ConnectivityError:
    """The error for a failed command: a CE whose controller cannot be reached is temporarily unreachable (the
    reconciler retries later); anything else is the command's own failure."""
    err = result.stderr.decode("utf-8", "replace").strip()
    program = result.argv[0] if result.argv else "command"
    message = f"{program} (exit {result.exit_status}): {why}" + (f": {err[-2000:]}" if err else "")
    if _NO_CONTROLLER in err:
        return ConnectivityError(message)
    return CommandError(message, argv=list(result.argv), exit_status=result.exit_status, stderr=err)


def _ids(jobs: Sequence[BatchJob]) -> list[str]:
    """The ids to put on a command line: positive integers and array tasks (``12_3``) only, so no id can widen a query
    to every job."""
    ids = [j.native_id for j in jobs if _TASK_ID.match(j.native_id)]
    if not ids:
        raise InvalidSpecError(f"no Slurm job id among {[j.native_id for j in jobs]!r}")
    return ids


def _query_ids(jobs: Sequence[BatchJob]) -> list[str]:
    """:func:`_ids` with every array task replaced by its array's id, once: one ``--jobs=12`` lists all of array 12's
    tasks (squeue with ``--array``, sacct always), so 10,000 tasks of one array cost one short argument."""
    return list(dict.fromkeys(i.partition("_")[0] for i in _ids(jobs)))


def _lines(result: CommandResult) -> list[str]:
    return [line for line in result.text.splitlines() if line.strip()]


def _exit_code(text: str) -> int | None:
    """sacct's ``<exit>:<signal>``: the exit status, or 128 + the signal that killed the job (the shell's way)."""
    code, sep, signal = text.strip().partition(":")
    if not (sep and code.isdigit() and signal.isdigit()):
        return None
    return 128 + int(signal) if int(signal) else int(code)


def _status(state: str, reason: str, exit_code: int | None = None) -> NativeStatus:
    word, _, by = state.strip().partition(" ")  # sacct: "CANCELLED by 2000"
    reason = "" if reason.strip() in ("None", "(null)") else reason.strip()
    if by.startswith("by ") and not reason:
        reason = f"cancelled by uid {by[3:]}"
    if word == "COMPLETED" and exit_code is None:
        exit_code = 0  # Slurm's COMPLETED means every process exited 0
    return NativeStatus(STATES.get(word, JobState.UNKNOWN), word, exit_code, reason)


def _split(result: CommandResult, line: str, fields: int) -> list[str]:
    parts = line.split("|", fields - 1)
    if len(parts) != fields or not _ANY_JOB_ID.match(parts[0].strip()):
        raise _fail(result, f"unexpected output line {line[:200]!r}")
    return [p.strip() for p in parts]


class SlurmScheduler:
    """Slurm, driven through sbatch, squeue, sacct, scancel and sinfo (all pure; see the module docstring).

    ``job_name`` names jobs submitted without a tag; ``partition`` restricts :meth:`load_argv` to one partition;
    ``find_window_days`` is how far back :meth:`find_argvs` searches accounting for tagged jobs. Several copies are
    one job array of at most ``array_max`` tasks (keep it below the cluster's ``MaxArraySize``, 1001 by default),
    ``array_throttle`` tasks running at once (``--array=...%<n>``; None: no limit).
    """

    name = "slurm"

    def __init__(self, *, job_name: str = "intercede", partition: str | None = None,
                 find_window_days: int = 7, array_max: int = 1000, array_throttle: int | None = None) -> None:
        if not 1 <= array_max <= 10_000:
            raise ValueError(f"array_max must be 1..10000 (Slurm's MaxArraySize - 1), got {array_max}")
        if array_throttle is not None and array_throttle < 1:
            raise ValueError(f"array_throttle must be >= 1, got {array_throttle}")
        self.job_name = job_name
        self.partition = partition
        self.find_window_days = find_window_days
        self.array_max = array_max
        self.array_throttle = array_throttle

    @property
    def bulk_max(self) -> int:
        return self.array_max

    # -- submit -----------------------------------------------------------------------------------------------------
    def submit_argv(self, request: SubmitRequest) -> list[str]:
        """``sbatch --parsable`` with the tag as job name, the resources mapped, native options verbatim, the script.

        Mapping: cores -> ``--cpus-per-task``, memory_mb -> ``--mem=<n>M``, wall_time -> ``--time=<minutes>``
        (rounded up), gpus -> ``--gres=gpu:<n>``, nodes -> ``--nodes``, queue -> ``--partition``, account ->
        ``--account``. Slurm's own stdout/stderr go to ``.slurm.out``/``.slurm.err`` in the working directory.
        """
        res = request.resources
        argv = [
            "sbatch", "--parsable",
            f"--job-name={request.tag or self.job_name}",
            f"--chdir={request.workdir}",
            f"--output={_filename(request.workdir)}/.slurm.out",
            f"--error={_filename(request.workdir)}/.slurm.err",
            *self._resource_options(res),
        ]
        return [*argv, *res.native, request.script]

    @staticmethod
    def _resource_options(res: Resources) -> list[str]:
        argv = [f"--nodes={res.nodes}", f"--cpus-per-task={res.cores}"]
        if res.memory_mb is not None:
            argv.append(f"--mem={res.memory_mb}M")
        if res.wall_time is not None:
            argv.append(f"--time={math.ceil(res.wall_time.total_seconds() / 60)}")
        if res.gpus:
            argv.append(f"--gres=gpu:{res.gpus}")
        if res.queue:  # empty means the default partition / account
            argv.append(f"--partition={res.queue}")
        if res.account:
            argv.append(f"--account={res.account}")
        return argv

    def parse_submit(self, result: CommandResult) -> str:
        """The job id from ``<id>`` or ``<id>;<cluster>``. A refusal (sbatch's own checks or the controller's answer)
        raises CommandError with sbatch's reason; lost contact with the controller, or sbatch killed by a signal,
        raises ConnectivityError: the job may have been submitted (never taken for a refusal)."""
        if not result.ok:
            err = result.stderr.decode("utf-8", "replace")
            if result.exit_status > 128 or any(p in err for p in _LOST_CONTROLLER):
                raise ConnectivityError(f"sbatch (exit {result.exit_status}) lost its controller; the job may have "
                                        f"been submitted: {err.strip()[-2000:]}")
            raise _fail(result, "submission refused")
        lines = _lines(result)
        job_id = lines[-1].split(";", 1)[0].strip() if lines else ""
        if not _JOB_ID.match(job_id):
            raise _fail(result, f"no job id in the output {result.text[:200]!r}")
        return job_id

    # -- bulk submission: one job array ------------------------------------------------------------------------------
    def bulk_launcher(self, request: BulkRequest) -> str | None:
        """The array's batch script: task ``k`` runs copy ``k``'s ``job.sh`` in its own directory (Slurm's own
        stdout/stderr of the task go to ``.slurm.out``/``.slurm.err`` there, as for a single job)."""
        return array_launcher(request.root, request.prefix, "${SLURM_ARRAY_TASK_ID:?}", ".slurm")

    def submit_bulk_argv(self, request: BulkRequest) -> list[str]:
        """``sbatch --array=0-<n-1>[%<throttle>]``, named :func:`array_name` (or ``job_name``), working in the
        array's anchor directory (which outlives every copy), the launcher as its script."""
        res = request.resources
        throttle = f"%{self.array_throttle}" if self.array_throttle else ""
        name = array_name(request.tag, request.first) if request.tag else self.job_name
        argv = [
            "sbatch", "--parsable", f"--array=0-{request.count - 1}{throttle}",
            f"--job-name={name}",
            f"--chdir={request.anchor}",
            "--output=/dev/null", "--error=/dev/null",  # the launcher redirects into the copy's directory
            *self._resource_options(res),
        ]
        return [*argv, *res.native, request.launcher]

    def parse_submit_bulk(self, result: CommandResult, request: BulkRequest) -> list[str]:
        """``<array id>_<k>`` for every task, from sbatch's one job id (a refusal raises as for one job)."""
        array = self.parse_submit(result)
        return [f"{array}_{k}" for k in range(request.count)]

    # -- status and history -------------------------------------------------------------------------------------------
    def status_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        """One ``squeue`` for every id, finished ones included (``--states=all``) while Slurm still keeps them."""
        return ["squeue", "--noheader", "--states=all", f"--jobs={','.join(_query_ids(jobs))}",
                f"--format={_SQUEUE_STATUS}", "--array"]

    def parse_status(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, NativeStatus]:
        """Id -> status for the ids the queue knows. squeue gives no exit code (None, or 0 for COMPLETED).

        The single-unknown-id refusal ("Invalid job id specified") is an empty answer; any other failure, and any line
        not in the pinned format, raises CommandError (a garbled answer never becomes a state)."""
        if not result.ok:
            if "Invalid job id specified" in result.stderr.decode("utf-8", "replace") and not result.text.strip():
                return {}
            raise _fail(result, "queue query failed")
        return queue_states(result, set(map(_NATIVE_ID, jobs)))

    def history_argv(self, jobs: Sequence[BatchJob]) -> list[str] | None:
        """One ``sacct`` over the job allocations (not their steps); with ``--jobs`` it searches all time."""
        return ["sacct", "--noheader", "--parsable2", "--allocations", f"--jobs={','.join(_query_ids(jobs))}",
                f"--format={_SACCT_HISTORY}"]

    def parse_history(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, NativeStatus]:
        """Id -> status from accounting. ExitCode ``N:S`` becomes N, or 128+S when a signal S ended the job."""
        if not result.ok:
            raise _fail(result, "accounting query failed")
        wanted = {j.native_id for j in jobs}
        found: dict[str, NativeStatus] = {}
        for line in _lines(result):
            job_id, state, exit_code, reason = _split(result, line, 4)
            if job_id in wanted:
                found[job_id] = _status(state, reason, _exit_code(exit_code))
        return found

    # -- cancel -------------------------------------------------------------------------------------------------------
    def cancel_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        """``scancel --verbose`` (without it, unknown and finished ids are silently ignored)."""
        return ["scancel", "--verbose", *_ids(jobs)]

    def parse_cancel(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, str]:
        """Id -> why it was not cancelled (unknown, already finished, not ours, not a Slurm id).

        Raises CommandError when the command failed as a whole: a non-zero exit with no per-id error, or every id
        failing because slurmctld could not be reached."""
        errors = {j.native_id: "not a Slurm job id" for j in jobs if not _TASK_ID.match(j.native_id)}
        wanted = {j.native_id for j in jobs} - errors.keys()
        per_id: dict[str, str] = {}
        for line in result.stderr.decode("utf-8", "replace").splitlines():
            match = _CANCEL_ERROR.search(line.strip())
            if match and match[1] in wanted:
                per_id[match[1]] = match[2].strip()
        if not result.ok and (
            not per_id or (per_id.keys() == wanted and all(_NO_CONTROLLER in e for e in per_id.values()))
        ):
            raise _fail(result, "cancel failed")
        return errors | per_id

    # -- find by tag --------------------------------------------------------------------------------------------------
    def find_argvs(self, tags: Sequence[str]) -> list[list[str]]:
        """Our jobs named after any tag, or in a job array whose copies carry it (see :func:`array_names`):
        ``squeue --me --array`` (the queue, one line per task) then ``sacct`` over ``find_window_days``."""
        if not tags:
            return []
        for tag in tags:
            if not _SEARCHABLE_TAG.match(tag):
                raise InvalidSpecError(f"tag {tag!r} cannot be searched as a Slurm job name")
        names = ",".join(dict.fromkeys([*tags, *(n for tag in tags for n in array_names(tag, self.array_max))]))
        return [
            ["squeue", "--noheader", "--states=all", "--me", f"--name={names}", f"--format={_SQUEUE_FIND}", "--array"],
            ["sacct", "--noheader", "--parsable2", "--allocations", f"--name={names}",
             f"--starttime=now-{self.find_window_days}days", f"--format={_SACCT_FIND}"],
        ]

    def parse_find(self, results: Sequence[CommandResult], tags: Sequence[str]) -> dict[str, list[BatchJob]]:
        """Tag -> jobs with exactly that name, or array tasks whose copy carries it (queue first; accounting adds
        jobs that left the queue). An array task's working directory is its copy's, derived from the array's.

        A job accounting knows only by id and name (its WorkDir not yet recorded) is still listed, with workdir ""."""
        found: dict[str, dict[str, BatchJob]] = {tag: {} for tag in tags}
        for result in results:
            if not result.ok:
                raise _fail(result, "tag lookup failed")
            for line in _lines(result):
                job_id, name, workdir = _split(result, line, 3)
                name, workdir = _array_task(job_id, name, workdir)
                known = found.get(name)  # exact: sacct's --name is case-insensitive
                if known is not None and not (job_id in known and known[job_id].workdir):
                    known[job_id] = BatchJob(job_id, workdir)
        return {tag: list(jobs.values()) for tag, jobs in found.items()}

    # -- load ---------------------------------------------------------------------------------------------------------
    def usage_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        """See :func:`usage_argv`."""
        return usage_argv(jobs)

    def parse_usage(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, Usage]:
        """See :func:`parse_usage`."""
        return parse_usage(result, jobs)

    def load_argv(self) -> list[str] | None:
        """One ``sh -c`` of sinfo (cores) and squeue (our jobs' states), the partition passed as ``$1``."""
        return ["sh", "-c", _LOAD_SCRIPT, "sh", *([self.partition] if self.partition else [])]

    def parse_load(self, result: CommandResult) -> LoadReport:
        """Total and idle cores of the nodes; running and queued counts of our own jobs."""
        if not result.ok:
            raise _fail(result, "load query failed")
        lines = _lines(result)
        cpus = lines[0].strip().split("/") if lines else []
        if len(cpus) != 4 or not all(c.isdigit() for c in cpus):
            raise _fail(result, f"no CPU counts (no such partition?) in {result.text[:200]!r}")
        states = [STATES.get(line.strip(), JobState.UNKNOWN) for line in lines[1:]]
        return LoadReport(total_cores=int(cpus[3]), free_cores=int(cpus[1]),
                          running=states.count(JobState.RUNNING), queued=states.count(JobState.WAITING))


# -- usage (accounting of finished jobs) -------------------------------------------------------------------------------

# One line per allocation and per step (MaxRSS is measured per step; the allocation's line has it empty). NodeList
# and the times hold no '|'.
_SACCT_USAGE = "JobID,ElapsedRaw,TotalCPU,MaxRSS,NodeList,Start,End"
_STEP = re.compile(r"([1-9][0-9]*(?:_[0-9]+)?)(?:\.[A-Za-z0-9_+-]+)?\Z")  # "12", "12_3" (array task), "12.batch"
_RSS_UNITS = {"": 1 / 1024, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2}  # -> MiB (bare number: bytes)


def usage_argv(jobs: Sequence[BatchJob]) -> list[str]:
    """One ``sacct`` over the jobs and their steps, with the usage fields (:data:`_SACCT_USAGE`)."""
    return ["sacct", "--noheader", "--parsable2", f"--jobs={','.join(_ids(jobs))}", f"--format={_SACCT_USAGE}"]


def _cpu_seconds(text: str) -> float | None:
    """sacct's TotalCPU: ``[D-][HH:]MM:SS[.mmm]``."""
    text = text.strip()
    if not text:
        return None
    days, _, rest = text.rpartition("-")
    parts = rest.split(":")
    try:
        values = [float(p) for p in parts]
        seconds: float = 0.0
        for i, v in enumerate(reversed(values)):
            seconds += v * 60.0**i
        return seconds + (int(days) * 86400 if days else 0)
    except ValueError:
        return None


def _rss_mb(text: str) -> float | None:
    """sacct's MaxRSS (``1234K``, ``12M``, a bare number of bytes) in MiB; None when not measured."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([KMGT]?)", text.strip())
    return float(match[1]) * _RSS_UNITS[str(match[2])] if match else None


def _when(text: str) -> datetime | None:
    """sacct's Start/End (``2026-12-01T13:00:00``, the cluster's local time, taken as UTC; ``Unknown``/``None``
    when not reached)."""
    try:
        return datetime.fromisoformat(text.strip()).replace(tzinfo=UTC)
    except ValueError:
        return None


def parse_usage(result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, Usage]:
    """Id -> usage of the finished ones among ``jobs``: ElapsedRaw (wall seconds), TotalCPU (user + system over
    every step), the largest step MaxRSS, NodeList, Start and End. A job still running is left out (its End is
    ``Unknown``): its figures are not final. Raises CommandError for a failed query or a line not in the format."""
    if not result.ok:
        raise _fail(result, "accounting (usage) query failed")
    wanted = {j.native_id for j in jobs}
    allocations: dict[str, list[str]] = {}
    peak: dict[str, float] = {}
    for line in _lines(result):
        parts = [p.strip() for p in line.split("|")]
        match = _STEP.match(parts[0]) if len(parts) == 7 else None
        if match is None:
            raise _fail(result, f"unexpected usage line {line[:200]!r}")
        job_id = match[1]
        if job_id not in wanted:
            continue
        if parts[0] == job_id:
            allocations[job_id] = parts
        if (rss := _rss_mb(parts[3])) is not None:
            peak[job_id] = max(peak.get(job_id, 0.0), rss)
    found: dict[str, Usage] = {}
    for job_id, (_, elapsed, cpu, _, nodes, start, end) in allocations.items():
        ended = _when(end)
        if ended is None:
            continue
        found[job_id] = Usage(wall_seconds=float(elapsed) if elapsed.isdigit() else None,
                              cpu_seconds=_cpu_seconds(cpu), peak_memory_mb=peak.get(job_id),
                              node=nodes if nodes not in ("", "None assigned") else None,
                              started_at=_when(start), ended_at=ended)
    return found


# -- job arrays: names and working directories ----------------------------------------------------------------------
# An array carries one name for all its tasks; copy ``first + k`` of a spec tagged B is task k of the array named
# ``B.*`` (first 0) or ``B.*<first>``. '*' is never in a tag, so no single job's name is an array's. The array works in
# its anchor ``<root>/<prefix>ffff``, and task k's copy in ``<root>/<prefix><k:04d>`` (see BulkRequest).
_ARRAY_NAME = re.compile(r"(.+)\.\*([0-9]*)\Z")
_ANCHOR = re.compile(r"(.*/[0-9a-f]{12})ffff\Z")


def array_name(tag: str, first: int) -> str:
    """The job name of the array holding copies ``first``, ``first + 1``, ... of a spec tagged ``tag``."""
    return f"{tag}.*{first or ''}"


def array_names(tag: str, array_max: int) -> list[str]:
    """The array name a copy tagged ``tag`` (``<base>.<copy>``) is submitted under; [] if ``tag`` names no copy."""
    base, sep, index = tag.rpartition(".")
    if not (sep and base and index.isdigit()):
        return []
    return [array_name(base, int(index) // array_max * array_max)]


def _array_task(job_id: str, name: str, workdir: str) -> tuple[str, str]:
    """(tag, working directory) of the job ``job_id`` named ``name`` working in ``workdir``: for an array task, its
    copy's tag and directory; any other job as it is."""
    _, sep, task = job_id.partition("_")
    named = _ARRAY_NAME.match(name)
    if not (sep and task.isdigit() and named):
        return name, workdir
    anchor = _ANCHOR.match(workdir)
    k = int(task)
    return f"{named[1]}.{int(named[2] or 0) + k}", f"{anchor[1]}{k:04d}" if anchor and k < 10_000 else ""


# -- the queue parser at scale ---------------------------------------------------------------------------------------
def queue_states(result: CommandResult, wanted: set[str]) -> dict[str, NativeStatus]:
    """Id -> status for the ``%i|%T|%r`` lines of ``result`` whose id is in ``wanted`` (see
    :meth:`SlurmScheduler.parse_status`); built to parse 10^6 lines a second.

    No Python code runs per line: the answer is split into fields in one C-level pass (every line has exactly three
    fields), ids, states and reasons are slices of it, and the id -> status dict is built by ``zip``/``map`` over a
    state -> reason -> status table (:func:`_statuses_of`). A queue holds few distinct (state, reason) pairs, so each
    maps to one shared, frozen :class:`NativeStatus`, kept across calls; no tuple is kept per line (a million live
    tuples make the cyclic garbage collector walk them again and again, which cost more than the parse itself). The
    wanted set is checked in one C-level subset test; ids that are not wanted (rare: Slurm answers what it was asked)
    take the checked path of :func:`_split`, so a garbled line still raises and a padded id is still found. An answer
    the fast pass cannot cut into three fields per line (a blank line, a reason holding ``|``) goes down the checked
    path whole. A repeated id keeps its last line, as before."""
    text = result.text
    lines = text.count("\n") + (not text.endswith("\n") and bool(text))
    fields = text.replace("\n", "|").split("|")
    if text.endswith("\n"):
        fields.pop()
    if len(fields) != 3 * lines or not text:
        return _queue_states_checked(result, wanted) if text.strip() else {}
    ids, states, reasons = fields[0::3], fields[1::3], fields[2::3]
    found = _statuses_of(ids, states, reasons)
    if found.keys() <= wanted:
        return found
    for job_id in found.keys() - wanted:
        status = found.pop(job_id)
        parts = _split(result, f"{job_id}|-|-", 3)
        if parts[0] in wanted:
            found[parts[0]] = status
    return found


_STATUSES: dict[str, dict[str, NativeStatus]] = {}  # state -> reason -> status: a memo of the pure _status
_STATUSES_MAX = 4096  # distinct (state, reason) pairs kept; a queue has a few dozen, free-text reasons could be more


def _statuses_of(ids: list[str], states: list[str], reasons: list[str]) -> dict[str, NativeStatus]:
    """``dict(zip(ids, statuses))``, the status of each line looked up in a state -> reason -> status table (two
    C-level lookups per line, no tuple kept per line).

    The table is the memo :data:`_STATUSES`, which outlives the call: a poll after the first finds every pair there
    and runs no Python per line or per pair. When it lacks a pair (a KeyError), this call's pairs are put in a table
    of its own (from the memo, or mapped by :func:`_status`), which then replaces or joins the memo: another thread
    clearing the memo meanwhile cannot break this call. Values are frozen :class:`NativeStatus` instances shared by
    every id in that state, which is safe because nobody can change one. The memo is dropped and refilled when it
    would hold more than :data:`_STATUSES_MAX` pairs."""
    try:
        return dict(zip(ids, map(getitem, map(_STATUSES.__getitem__, states), reasons), strict=True))
    except KeyError:
        pass
    table: dict[str, dict[str, NativeStatus]] = {}
    for state, reason in set(zip(states, reasons, strict=True)):  # zip reuses its one tuple: none kept per line
        known = _STATUSES.get(state, {}).get(reason)
        table.setdefault(state, {})[reason] = known if known is not None else _status(state, reason)
    if sum(map(len, _STATUSES.values())) + sum(map(len, table.values())) > _STATUSES_MAX:
        _STATUSES.clear()
    for state, by_reason in table.items():
        _STATUSES.setdefault(state, {}).update(by_reason)
    return dict(zip(ids, map(getitem, map(table.__getitem__, states), reasons), strict=True))


def _queue_states_checked(result: CommandResult, wanted: set[str]) -> dict[str, NativeStatus]:
    found: dict[str, NativeStatus] = {}
    for line in _lines(result):
        job_id, state, reason = _split(result, line, 3)
        if job_id in wanted:
            found[job_id] = _status(state, reason)
    return found


def _filename(path: str) -> str:
    """``path`` safe inside sbatch's --output/--error patterns: '%' is a pattern character, '%%' a literal '%'
    (a path holding a backslash turns patterns off altogether, so it is left as is)."""
    return path if "\\" in path else path.replace("%", "%%")
