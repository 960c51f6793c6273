"""GridEngineScheduler: (Son of) Grid Engine's dialect as pure argv builders and output parsers (no I/O).

Queue state comes from ``qstat -xml`` (the caller's own jobs; parsed with the standard library's ElementTree, which
refuses external entities), finished jobs from ``qacct -j`` and the zombie list ``qstat -s z -xml``, tags from
``qstat -j <names> -xml`` (which holds each job's working directory, ``JB_cwd``) and ``qacct -j <name>``. Verified
against Son of Grid Engine 8.1.9 (Debian bookworm; recorded outputs and their tests: ``tests/data/sge/8.1.9/``,
``tests/unit/test_gridengine_scheduler.py``).

Quirks this module absorbs:

* ``qstat``'s state is a string of letters, not one word: ``qw``, ``hqw`` (held), ``r``, ``t`` (being transferred),
  ``Rr`` (restarted), ``s``/``S``/``T`` (suspended), ``dr``/``dt`` (deletion registered, the job still runs),
  ``Eqw`` (error: the job can never start as submitted, e.g. its working directory is missing; it stays in the queue
  until ``qmod -cj`` or ``qdel``). ``E`` maps to FAILED (nothing will happen to the job by itself), ``h``/``qw`` to
  WAITING, the running letters to RUNNING; the word is kept as the native state.
* A finished job leaves ``qstat`` at once. ``qacct`` reads the accounting file, which ``sge_qmaster`` writes only
  every ``accounting_flush_time`` (default: ``flush_time``, 15 s): right after the end a job is in neither. The zombie
  list (``finished_jobs``, default 100 jobs, lost when the master restarts) knows it meanwhile, without an exit code.
* A job deleted while pending never ran and gets **no accounting record**; it is only in the zombie list. The history
  command therefore also says, per job, whether the job script ever claimed its working directory (``.claim``, made by
  ``job.sh`` before the payload starts): a zombie that never claimed its directory was deleted before it ran (ABORTED);
  one that did is waiting for the accounting file (left unresolved, so the backend keeps its last state).
* ``qacct``'s ``failed`` field: 0 means the job script ran (its ``exit_status`` is the job's); 100 ("assumedly after
  job") with a signal exit (128+n) means the job was killed: by ``qdel`` (ABORTED) — or by a limit such as ``h_rt``,
  which the accounting cannot tell apart; any other code is Grid Engine failing the job (FAILED, with its text, e.g.
  ``28 : changing into working directory``).
* ``qsub -terse`` prints the id (``<id>`` or, for an array, ``<id>.<first>-<last>:<step>``). ``-w e`` makes qsub
  refuse a job that could never run ("no suitable queues", an unknown queue): without it such a job is accepted with a
  warning and waits forever.
* ``qdel`` says ``denied: job "<id>" does not exist`` for unknown or finished ids (exit 1 even when other ids were
  deleted).
* With the master down every command exits 1 saying ``unable to send message to qmaster`` (or ``unable to contact
  qmaster``): that is :class:`~intercede.errors.ConnectivityError`; for ``qsub`` the job may or may not exist.
* The accounting file records no working directory, so a finished job found by its name alone could not be proved to
  be ours. A tagged job is therefore named ``<tag>~<uid>``, the uid being its working directory's name under ``root``
  (the attempt): ``qstat -j '<tag>~*'`` and ``qacct -j '<tag>~*'`` (Grid Engine's name patterns) find every job of a
  tag, in the queue (where ``JB_cwd`` is checked against the name) and in accounting.
* Names may not hold ``,/:@\\`` or blanks, and ``*?[]`` are pattern characters: tags holding them are refused
  (:class:`~intercede.errors.InvalidSpecError`).

Job arrays (several copies of one spec, :class:`~intercede.backends.schedulers.base.BulkScheduler`):

* ``qsub -t 1-N`` is one job with N tasks; Grid Engine numbers tasks from 1 (``-t 0-...`` is refused), so copy ``k``
  of the submission is task ``k + 1`` and its native id is ``<job>.<task>``, as qstat/qdel/qacct spell it. The array
  works in its anchor directory; the launcher (``array.sh``) enters the copy's directory from ``$SGE_TASK_ID``.
* ``qstat -xml`` shows the pending tasks of an array as ONE entry with a range (``<tasks>1-3:1</tasks>``) and each
  running task as its own entry; ``-g d`` lists every task on its own, so status asks with ``-g d``.
* The zombie list (``qstat -s z``) gives an array's finished tasks as a range too (``1``, ``1-3:1``), already while
  other tasks still run; ``qacct`` has one record per task (``taskid <n>``; ``undefined`` for a plain job).
* ``qdel <job>.<task>`` deletes one task (``qdel <job> -t <task>`` too); for a finished task of a live array it
  says ``job "<job>" task "<task>" does not exist``, and once the whole array is gone ``denied: job "<job>" does not
  exist`` (covering every task asked for).
* A pending task deleted while others are still queued has no record anywhere until the whole array is done; the
  backend answers such an id from its own cancel (:class:`~intercede.backends.batch.BatchBackend`).
* An array is named ``<base>~<first>~<prefix>`` (two ``~``; a single job's name has one): the copies it holds are
  ``<base>.<first + task - 1>``, and they work in ``root/<prefix><task - 1:04d>``. ``qstat -j`` shows the array once
  (``JB_ja_structure``: the submitted range; ``JB_cwd``: the anchor ``root/<prefix>ffff``), accounting per task.

Usage records (:class:`~intercede.backends.schedulers.base.UsageScheduler`) come from ``qacct -j``: ``ru_wallclock``
(``3s``), ``cpu`` (``0.009s``; user + system time, also ``ru_utime`` + ``ru_stime``), ``maxvmem`` (``3.066MB``, a
1024-based unit; the peak *virtual* memory execd sampled, summed over the job's processes — Grid Engine's
``ru_maxrss`` is printed in the wrong unit, KB for KiB counts, and is the largest single process only), ``hostname``,
``start_time``/``end_time`` (``Tue Dec  1 16:28:50 2026``, the cell's local time, taken as UTC).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime

from intercede.backends.capabilities import LoadReport
from intercede.backends.jobscript import array_launcher
from intercede.backends.schedulers.base import BatchJob, BulkRequest, NativeStatus, SubmitRequest
from intercede.backends.transports.base import CommandResult
from intercede.errors import CommandError, ConnectivityError, InvalidSpecError
from intercede.model import JobState, Resources, Usage

__all__ = ["GridEngineScheduler", "state_of"]

_JOB_ID = re.compile(r"([1-9][0-9]*)(?:\.([1-9][0-9]*))?\Z")  # a job, or one task of an array (12.3)
_TERSE_ID = re.compile(r"([1-9][0-9]*)(?:\.([0-9]+)-([0-9]+):([0-9]+))?\Z")
_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+)(?::([0-9]+))?)?\Z")  # qstat's task ranges: 3, 1-3:1
_NAME = re.compile(r"[^\s,/:@\\*?\[\]~'\"]+\Z")  # a tag, as it may appear in a job name and a name pattern
_NOT_EXIST = re.compile(r'job "?([0-9]+)"? does not exist')
_TASK_NOT_EXIST = re.compile(r'job "([0-9]+)" task "([0-9]+)" does not exist')
_NO_MASTER = ("unable to send message to qmaster", "unable to contact qmaster", "commlib error",
              "can't unpack gdi request", "failed receiving gdi request")
_SECTION = "=== "
# One round trip for the history: each job's accounting records (qacct, once per job number: an array's tasks share
# it), whether each id's script claimed its directory, then the zombie list. Everything arrives as arguments
# ("$@": number ... -- id dir id dir ...), never spliced in.
_HISTORY = (
    'while [ $# -gt 0 ] && [ "$1" != -- ]; do echo "=== job $1"; qacct -j "$1" 2>&1; shift; done; shift; '
    'while [ $# -ge 2 ]; do [ -L "$2/.claim" ] && echo "=== claimed $1"; shift 2; done; '
    'echo "=== zombies"; qstat -s z -xml'
)
_USAGE = 'for number; do echo "=== job $number"; qacct -j "$number" 2>&1; done; true'  # qacct exits 1 on a miss
_FIND_HISTORY = 'for name; do echo "=== tag $name"; qacct -j "$name" 2>&1; done; true'  # qacct exits 1 on a miss
_LOAD = 'qstat -g c && echo "=== jobs" && qstat -g d -xml'  # -g d: each pending array task counts


def _patterns(tag: str) -> list[str]:
    """The job name patterns that find ``tag``: its single jobs' and, when it names a copy (``<base>.<i>``), the
    arrays of ``<base>`` (which copies an array holds is read from its name and tasks). The single jobs of every copy
    of one base share one pattern, ``<base>.*~*`` (each pattern is one qacct pass over the accounting file; the
    parser keeps exact tags only)."""
    base, sep, index = tag.rpartition(".")
    if sep and base and index.isdigit():
        return [f"{base}.*~*", f"{base}~*~*"]
    return [f"{tag}~*"]


def _check_tag(tag: str) -> str:
    if not _NAME.match(tag) or tag.isdigit():
        raise InvalidSpecError(f"tag {tag!r} cannot be a Grid Engine job name (no blanks, quotes or ,/:@\\*?[]~; not "
                               "only digits)")
    return tag


def state_of(letters: str) -> JobState:
    """Grid Engine's state letters -> intercede's (see the module docstring)."""
    if "E" in letters:
        return JobState.FAILED
    if letters.endswith("qw") or letters == "h":
        return JobState.WAITING
    if letters in ("z",):  # zombie: finished, exit code unknown here
        return JobState.DONE
    if any(c in letters for c in "rtRsSTd"):
        return JobState.RUNNING
    return JobState.UNKNOWN


def _text(result: CommandResult) -> str:
    return result.stderr.decode("utf-8", "replace").strip()


def _fail(result: CommandResult, why: str) -> CommandError | ConnectivityError:
    err = _text(result)
    program = result.argv[0] if result.argv else "command"
    message = f"{program} (exit {result.exit_status}): {why}" + (f": {err[-2000:]}" if err else "")
    if any(m in err or m in result.text for m in _NO_MASTER):
        return ConnectivityError(message)
    return CommandError(message, argv=list(result.argv), exit_status=result.exit_status, stderr=err)


def _ids(jobs: Sequence[BatchJob]) -> list[str]:
    """The ids to put on a command line (``12``, ``12.3``): only these forms, so no id can widen a command."""
    ids = [j.native_id for j in jobs if _JOB_ID.match(j.native_id)]
    if not ids:
        raise InvalidSpecError(f"no Grid Engine job id among {[j.native_id for j in jobs]!r}")
    return ids


def _numbers(jobs: Sequence[BatchJob]) -> list[str]:
    """The distinct job numbers of ``jobs`` (an array's tasks share theirs), for qacct, which takes a job."""
    return list(dict.fromkeys(m[1] for j in jobs if (m := _JOB_ID.match(j.native_id))))


def _tasks(text: str) -> Iterator[int]:
    """The task ids of qstat's ``tasks`` text: ``3``, ``1-3:1``, or a comma list of those."""
    for part in text.split(","):
        match = _RANGE.match(part.strip())
        if match:
            low = int(match[1])
            high, step = int(match[2] or low), max(int(match[3] or 1), 1)
            yield from range(low, min(high, low + 10_000 * step) + 1, step)  # bounded: BulkRequest holds <= 10,000


def _keys(number: str, tasks: str | None) -> list[str]:
    """The native ids one ``job_list`` entry stands for: the job, or each of its array tasks (``12.3``)."""
    tasks = (tasks or "").strip()
    return [f"{number}.{t}" for t in _tasks(tasks)] if tasks else [number]


def _record_key(record: dict[str, str]) -> str:
    """A qacct record's native id: ``<jobnumber>`` or, for an array task, ``<jobnumber>.<taskid>``."""
    number, task = record.get("jobnumber", ""), record.get("taskid", "undefined")
    return f"{number}.{task}" if task.isdigit() else number


def _xml(result: CommandResult, text: str, what: str) -> ET.Element:
    try:
        return ET.fromstring(text)  # noqa: S314 - see the import
    except ET.ParseError as exc:
        raise _fail(result, f"{what}: not XML ({exc}): {text[:200]!r}") from None


def _job_lists(root: ET.Element) -> Iterable[ET.Element]:
    """The ``job_list`` elements of ``qstat -xml`` (running ones under queue_info, pending under job_info)."""
    return root.iter("job_list")


def _sections(text: str) -> list[tuple[str, str]]:
    """``=== <head>`` sections of a multi-command output, as (head, body)."""
    out: list[tuple[str, str]] = []
    for chunk in text.split("\n" + _SECTION):
        head, _, body = chunk.removeprefix(_SECTION).partition("\n")
        out.append((head.strip(), body))
    return out


def _records(text: str) -> list[dict[str, str]]:
    """qacct's records (``====`` separated ``key value`` lines); an ``error: job ... not found`` gives none."""
    records: list[dict[str, str]] = []
    for block in re.split(r"^=+\s*$", text, flags=re.M):
        fields = {}
        for line in block.splitlines():
            key, _, value = line.strip().partition(" ")
            if key and value and re.fullmatch(r"[a-z_]+", key):
                fields[key] = value.strip()
        if "jobnumber" in fields:
            records.append(fields)
    return records


def _seconds(text: str | None) -> float | None:
    """qacct's durations: ``3s``, ``0.009s`` (8.1.9 prints the unit), or a bare number."""
    try:
        return float((text or "").strip().removesuffix("s"))
    except ValueError:
        return None


_MEMORY_UNITS = {"B": 1 / 1024**2, "KB": 1 / 1024, "K": 1 / 1024, "MB": 1.0, "M": 1.0, "GB": 1024.0, "G": 1024.0,
                 "TB": 1024.0**2, "T": 1024.0**2}


def _mib(text: str | None) -> float | None:
    """qacct's memory figures (``3.066MB``, ``0.000B``: 1024-based units) in MiB; None when unparsable."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([KMGT]?B?)", (text or "").strip())
    return float(match[1]) * _MEMORY_UNITS[match[2] or "B"] if match else None


def _when(text: str | None) -> datetime | None:
    """qacct's times (``Tue Dec  1 16:28:50 2026``, the cell's local time, taken as UTC); None for ``-/-`` (the job
    never started) or anything else."""
    try:
        return datetime.strptime(" ".join((text or "").split()), "%a %b %d %H:%M:%S %Y").replace(tzinfo=UTC)
    except ValueError:
        return None


def _usage(record: dict[str, str]) -> Usage:
    cpu = _seconds(record.get("cpu"))
    if cpu is None:
        user, system = _seconds(record.get("ru_utime")), _seconds(record.get("ru_stime"))
        cpu = user + system if user is not None and system is not None else None
    host = record.get("hostname", "").strip()
    return Usage(wall_seconds=_seconds(record.get("ru_wallclock")), cpu_seconds=cpu,
                 peak_memory_mb=_mib(record.get("maxvmem")), node=host if host and host != "-/-" else None,
                 started_at=_when(record.get("start_time")), ended_at=_when(record.get("end_time")))


def _final(record: dict[str, str]) -> NativeStatus:
    """A qacct record -> the job's final status (see the module docstring for ``failed``)."""
    failed_text = record.get("failed", "0")
    failed = int(failed_text.split()[0]) if failed_text.split()[0].isdigit() else -1
    exit_text = record.get("exit_status", "").split()
    exit_code = int(exit_text[0]) if exit_text and exit_text[0].isdigit() else None
    if failed == 0:
        state = JobState.DONE if exit_code == 0 else JobState.FAILED
        return NativeStatus(state, "finished", exit_code, "")
    if failed == 100 and exit_code is not None and exit_code > 128:
        return NativeStatus(JobState.ABORTED, "killed", exit_code,
                            f"killed by signal {exit_code - 128} (qdel, or a limit such as h_rt)")
    return NativeStatus(JobState.FAILED, f"failed {failed}", exit_code, f"Grid Engine failed the job: {failed_text}")


class GridEngineScheduler:
    """Grid Engine, driven through qsub, qstat, qacct and qdel (all pure; see the module docstring).

    ``root`` is the directory holding the jobs' working directories (BatchBackend's root); ``job_name`` names jobs
    submitted without a tag; ``parallel_environment`` is the PE that ``cores`` > 1 asks for
    (``-pe <pe> <cores>``; sites name theirs, often ``smp``); ``queue`` in a job's resources maps to ``-q``.
    Several copies are one job array of at most ``array_max`` tasks (keep it within the cell's ``max_aj_tasks``,
    75,000 by default), ``array_throttle`` of them running at once (``-tc <n>``; None: no limit).
    """

    name = "sge"

    def __init__(self, root: str, *, job_name: str = "intercede", parallel_environment: str = "smp",
                 array_max: int = 1000, array_throttle: int | None = None) -> None:
        if not 1 <= array_max <= 10_000:
            raise ValueError(f"array_max must be 1..10000, got {array_max}")
        if array_throttle is not None and array_throttle < 1:
            raise ValueError(f"array_throttle must be >= 1, got {array_throttle}")
        self.root = root.rstrip("/")
        self.job_name = job_name
        self.parallel_environment = parallel_environment
        self.array_max = array_max
        self.array_throttle = array_throttle

    @property
    def bulk_max(self) -> int:
        return self.array_max

    # -- submit -----------------------------------------------------------------------------------------------------
    def submit_argv(self, request: SubmitRequest) -> list[str]:
        """``qsub -terse -w e`` with the tag as name, the working directory, Grid Engine's own stdout/stderr into
        ``.sge.out``/``.sge.err``, the resources mapped, native options verbatim, then the script.

        Mapping: cores -> ``-pe <parallel_environment> <n>``, memory_mb -> ``-l h_vmem=<per slot>M`` (h_vmem is per
        slot), wall_time -> ``-l h_rt=<seconds>``, queue -> ``-q``, account -> ``-A``. GPUs and several nodes have no
        portable Grid Engine request: pass the site's own (``-l gpu=1``, a PE) as native options."""
        res = request.resources
        _check_tag(request.tag or self.job_name)
        name = f"{request.tag}~{request.workdir.rsplit('/', 1)[-1]}" if request.tag else self.job_name
        argv = ["qsub", "-terse", "-w", "e", "-N", name, "-S", "/bin/sh", "-wd", request.workdir,
                "-o", f"{request.workdir}/.sge.out", "-e", f"{request.workdir}/.sge.err",
                *self._resource_options(res)]
        return [*argv, *res.native, request.script]

    def _resource_options(self, res: Resources) -> list[str]:
        if res.gpus or res.nodes > 1:
            raise InvalidSpecError("Grid Engine has no portable request for GPUs or several nodes: pass the site's "
                                   "own (e.g. -l gpu=1, -pe mpi 64) in resources.native")
        argv: list[str] = []
        if res.cores > 1:
            argv += ["-pe", self.parallel_environment, str(res.cores)]
        limits = []
        if res.memory_mb is not None:
            limits.append(f"h_vmem={math.ceil(res.memory_mb / res.cores)}M")
        if res.wall_time is not None:
            limits.append(f"h_rt={math.ceil(res.wall_time.total_seconds())}")
        if limits:
            argv += ["-l", ",".join(limits)]
        if res.queue:
            argv += ["-q", res.queue]
        if res.account:
            argv += ["-A", res.account]
        return argv

    def parse_submit(self, result: CommandResult) -> str:
        """The job id from ``-terse``'s output. A refusal raises CommandError with qsub's reason; a lost master
        raises ConnectivityError (the job may have been submitted)."""
        if not result.ok:
            err = _text(result)
            if result.exit_status > 128 or any(m in err for m in _NO_MASTER):
                raise ConnectivityError(f"qsub (exit {result.exit_status}) lost its master; the job may have been "
                                        f"submitted: {err[-2000:]}")
            raise _fail(result, "submission refused")
        lines = [line.strip() for line in result.text.splitlines() if line.strip()]
        match = _TERSE_ID.match(lines[-1]) if lines else None
        if match is None:
            raise _fail(result, f"no job id in the output {result.text[:200]!r}")
        return match[1]

    # -- bulk submission: one job array ------------------------------------------------------------------------------
    def bulk_launcher(self, request: BulkRequest) -> str | None:
        """The array's job script: task ``t`` runs copy ``t - 1``'s ``job.sh`` in its own directory (Grid Engine's own
        stdout/stderr of the task go to ``.sge.out``/``.sge.err`` there, as for a single job)."""
        return array_launcher(request.root, request.prefix, "$((${SGE_TASK_ID:?} - 1))", ".sge")

    def submit_bulk_argv(self, request: BulkRequest) -> list[str]:
        """``qsub -t 1-<n> [-tc <throttle>]``, named ``<tag>~<first>~<prefix>`` (or ``job_name``), working in the
        array's anchor directory (which outlives every copy), the launcher as its script."""
        res = request.resources
        name = f"{_check_tag(request.tag)}~{request.first}~{request.prefix}" if request.tag else self.job_name
        argv = ["qsub", "-terse", "-w", "e", "-N", name, "-S", "/bin/sh", "-wd", request.anchor,
                "-o", "/dev/null", "-e", "/dev/null",  # the launcher redirects into the copy's directory
                "-t", f"1-{request.count}", *(["-tc", str(self.array_throttle)] if self.array_throttle else []),
                *self._resource_options(res)]
        return [*argv, *res.native, request.launcher]

    def parse_submit_bulk(self, result: CommandResult, request: BulkRequest) -> list[str]:
        """``<job>.<task>`` for every task, from ``-terse``'s ``<job>.1-<n>:1`` (a refusal raises as for one job)."""
        job = self.parse_submit(result)
        lines = [line.strip() for line in result.text.splitlines() if line.strip()]
        match = _TERSE_ID.match(lines[-1])
        if match is None or match[2] is None or (int(match[2]), int(match[3]), int(match[4])) != (1, request.count, 1):
            raise _fail(result, f"not an array of {request.count} tasks: {result.text[:200]!r}")
        return [f"{job}.{t}" for t in range(1, request.count + 1)]

    # -- status and history -------------------------------------------------------------------------------------------
    def status_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        """``qstat -g d -xml``: every job of the caller in the queue, each array task on its own, in one call (qstat
        filters by user, not by id)."""
        _ids(jobs)
        return ["qstat", "-g", "d", "-xml"]

    def parse_status(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, NativeStatus]:
        if not result.ok:
            raise _fail(result, "queue query failed")
        wanted = {j.native_id for j in jobs}
        found: dict[str, NativeStatus] = {}
        for job in _job_lists(_xml(result, result.text, "qstat")):
            number = (job.findtext("JB_job_number") or "").strip()
            # An array asked about by its job number alone (submitted with a native -t) has the state of its first
            # entry: a running task's (running tasks are listed before pending ones).
            keys = [k for k in _keys(number, job.findtext("tasks")) if k in wanted]
            keys += [number] if number in wanted and number not in found else []
            for key in dict.fromkeys(keys):
                letters = (job.findtext("state") or "").strip()
                reason = "held" if "h" in letters else ("error state: see qstat -j" if "E" in letters else "")
                found[key] = NativeStatus(state_of(letters), letters, None, reason)
        return found

    def history_argv(self, jobs: Sequence[BatchJob]) -> list[str] | None:
        """One ``sh -c``: qacct per job number, whether each id's script claimed its directory, then the zombie list."""
        ids = set(_ids(jobs))
        pairs = [arg for j in jobs if j.native_id in ids for arg in (j.native_id, j.workdir)]
        return ["sh", "-c", _HISTORY, "sh", *_numbers(jobs), "--", *pairs]

    def parse_history(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, NativeStatus]:
        """Id -> final status from accounting; a zombie without accounting that never claimed its directory was
        deleted before it ran (ABORTED); one that did waits for the accounting file (absent from the answer)."""
        sections = _sections(result.text)
        zombies_text = next((body for head, body in sections if head == "zombies"), None)
        if not result.ok or zombies_text is None:
            raise _fail(result, "history query failed")
        wanted = {j.native_id for j in jobs}
        found: dict[str, NativeStatus] = {}
        claimed: set[str] = set()
        for head, body in sections:
            kind, _, number = head.partition(" ")
            if kind == "claimed":
                claimed.add(number)
            elif kind == "job":
                if any(m in body for m in _NO_MASTER):
                    raise _fail(result, "accounting query failed")
                for record in _records(body):  # in file order: a job number reused later (a reset cell) wins
                    if record.get("jobnumber") == number and (key := _record_key(record)) in wanted:
                        found[key] = _final(record)
        zombies = {key for j in _job_lists(_xml(result, zombies_text.strip(), "qstat -s z"))
                   for key in _keys((j.findtext("JB_job_number") or "").strip(), j.findtext("tasks"))}
        for number in (wanted & zombies) - found.keys() - claimed:
            found[number] = NativeStatus(JobState.ABORTED, "deleted", None, "deleted before it started")
        return found

    # -- cancel -------------------------------------------------------------------------------------------------------
    def cancel_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        return ["qdel", *_ids(jobs)]

    def parse_cancel(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, str]:
        """Id -> why it was not cancelled; qdel's exit 1 with only per-id refusals is not a failure as a whole.

        ``job "12" does not exist`` covers every id of job 12 asked for (the job, or each of its tasks);
        ``job "12" task "3" does not exist`` the task ``12.3`` only."""
        errors = {j.native_id: "not a Grid Engine job id" for j in jobs if not _JOB_ID.match(j.native_id)}
        said = result.text + "\n" + _text(result)
        gone = {m[1] for m in _NOT_EXIST.finditer(said)}
        per_id = {j.native_id: f'job "{j.native_id}" does not exist (unknown or finished)' for j in jobs
                  if (m := _JOB_ID.match(j.native_id)) and m[1] in gone}
        per_id |= {f"{m[1]}.{m[2]}": f'task "{m[1]}.{m[2]}" does not exist (unknown or finished)'
                   for m in _TASK_NOT_EXIST.finditer(said)}
        if not result.ok and (not per_id or any(m in said for m in _NO_MASTER)):
            raise _fail(result, "cancel failed")
        return errors | per_id

    # -- find by tag --------------------------------------------------------------------------------------------------
    def find_argvs(self, tags: Sequence[str]) -> list[list[str]]:
        """``qstat -j <names> -xml`` (queued jobs with their working directory) and qacct per name (finished): the
        name pattern ``<tag>~*`` of single jobs and, for a copy's tag ``<base>.<i>``, ``<base>.*~*`` (single jobs)
        and ``<base>~*~*`` (the arrays) instead: see :func:`_patterns`."""
        if not tags:
            return []
        patterns = list(dict.fromkeys(p for tag in tags for p in _patterns(_check_tag(tag))))
        return [["qstat", "-j", ",".join(patterns), "-xml"], ["sh", "-c", _FIND_HISTORY, "sh", *patterns]]

    def parse_find(self, results: Sequence[CommandResult], tags: Sequence[str]) -> dict[str, list[BatchJob]]:
        """Tag -> jobs named ``<tag>~<uid>`` and array tasks whose copy carries it: from the queue (a job whose recorded
        ``JB_cwd`` is not ``root/<uid>``, an array's not its anchor, is not ours and is left out; an array's tasks are
        its submitted range) and from accounting (the working directory is ``root/<uid>``, a task's its copy's)."""
        found: dict[str, dict[str, BatchJob]] = {tag: {} for tag in tags}
        queue, history = results
        if not queue.ok and "do not exist" not in _text(queue) + queue.text:
            raise _fail(queue, "tag lookup failed")
        if not history.ok:
            raise _fail(history, "tag lookup failed")
        named: list[tuple[str, str, str | None, list[int] | None]] = []  # number, name, cwd, tasks
        if queue.text.strip().startswith("<"):
            for element in _xml(queue, queue.text, "qstat -j").iter("element"):
                ranges = element.findall("JB_ja_structure/task_id_range")
                tasks = [t for r in ranges for t in _tasks(
                    f"{r.findtext('RN_min', '')}-{r.findtext('RN_max', '')}:{r.findtext('RN_step', '1')}")]
                named.append(((element.findtext("JB_job_number") or "").strip(),
                              (element.findtext("JB_job_name") or "").strip(),
                              (element.findtext("JB_cwd") or "").strip(), tasks))  # a single job's: 1-1:1, unread
        for _, body in _sections(history.text):
            for r in _records(body):
                task = r.get("taskid", "undefined")
                named.append((r.get("jobnumber", "").strip(), r.get("jobname", "").strip(), None,
                              [int(task)] if task.isdigit() else None))
        for number, name, cwd, task_ids in named:
            for tag, job, anchor in self._carried(number, name, task_ids):
                if tag in found and (cwd is None or cwd == anchor):
                    found[tag].setdefault(job.native_id, job)
        return {tag: list(jobs.values()) for tag, jobs in found.items()}

    def _carried(self, number: str, name: str, tasks: list[int] | None) -> Iterator[tuple[str, BatchJob, str]]:
        """(tag, job, the working directory qstat records) for each copy that job ``number`` named ``name`` holds: a
        single job (``<tag>~<uid>``) holds one, an array (``<base>~<first>~<prefix>``) one per task."""
        parts = name.split("~")
        if not _JOB_ID.match(number) or "." in number:
            return
        if len(parts) == 2 and parts[0] and parts[1]:
            workdir = f"{self.root}/{parts[1]}"
            yield parts[0], BatchJob(number, workdir), workdir
        elif len(parts) == 3 and parts[0] and parts[1].isdigit() and re.fullmatch(r"[0-9a-f]{12}", parts[2]):
            base, first, prefix = parts[0], int(parts[1]), parts[2]
            for t in tasks or ():
                if 1 <= t <= 10_000:
                    yield (f"{base}.{first + t - 1}", BatchJob(f"{number}.{t}", f"{self.root}/{prefix}{t - 1:04d}"),
                           f"{self.root}/{prefix}ffff")

    # -- usage --------------------------------------------------------------------------------------------------------
    def usage_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        """One ``sh -c`` of ``qacct -j`` per job number (an array's tasks share it)."""
        _ids(jobs)
        return ["sh", "-c", _USAGE, "sh", *_numbers(jobs)]

    def parse_usage(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, Usage]:
        """Id -> usage of the jobs (and array tasks) accounting holds: see the module docstring for the fields. A job
        not in accounting yet (or never run: deleted while pending) is left out."""
        sections = _sections(result.text)
        if not result.ok or not any(head.startswith("job ") for head, _ in sections):
            raise _fail(result, "accounting (usage) query failed")
        wanted = {j.native_id for j in jobs}
        found: dict[str, Usage] = {}
        for head, body in sections:
            kind, _, number = head.partition(" ")
            if kind != "job":
                continue
            if any(m in body for m in _NO_MASTER):
                raise _fail(result, "accounting (usage) query failed")
            for record in _records(body):
                if record.get("jobnumber") == number and (key := _record_key(record)) in wanted:
                    found[key] = _usage(record)
        return found

    # -- load ---------------------------------------------------------------------------------------------------------
    def load_argv(self) -> list[str] | None:
        return ["sh", "-c", _LOAD]

    def parse_load(self, result: CommandResult) -> LoadReport:
        """Total and available slots over the cluster queues (``qstat -g c``); running and queued own jobs (each array
        task on its own)."""
        if not result.ok:
            raise _fail(result, "load query failed")
        summary, _, jobs_xml = result.text.partition("=== jobs\n")
        total = avail = 0
        for line in summary.splitlines()[2:]:
            fields = line.split()
            if len(fields) >= 6 and fields[4].isdigit() and fields[5].isdigit():
                avail, total = avail + int(fields[4]), total + int(fields[5])
        states = [state_of((j.findtext("state") or "").strip())
                  for j in _job_lists(_xml(result, jobs_xml, "qstat"))]
        return LoadReport(total_cores=total, free_cores=avail, running=states.count(JobState.RUNNING),
                          queued=states.count(JobState.WAITING))
