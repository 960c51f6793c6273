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
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence

from intercede.backends.capabilities import LoadReport
from intercede.backends.schedulers.base import BatchJob, NativeStatus, SubmitRequest
from intercede.backends.transports.base import CommandResult
from intercede.errors import CommandError, ConnectivityError, InvalidSpecError
from intercede.model import JobState

__all__ = ["GridEngineScheduler", "state_of"]

_JOB_ID = re.compile(r"[1-9][0-9]*\Z")
_TERSE_ID = re.compile(r"([1-9][0-9]*)(?:\.[0-9]+-[0-9]+:[0-9]+)?\Z")
_NAME = re.compile(r"[^\s,/:@\\*?\[\]~'\"]+\Z")  # a tag, as it may appear in a job name and a name pattern
_NOT_EXIST = re.compile(r'job "?([0-9]+)"? does not exist')
_NO_MASTER = ("unable to send message to qmaster", "unable to contact qmaster", "commlib error",
              "can't unpack gdi request", "failed receiving gdi request")
_SECTION = "=== "
# One round trip for the history: each job's accounting records (qacct), whether its script claimed its directory,
# then the zombie list. Job ids and directories arrive as arguments ("$@": id dir id dir ...), never spliced in.
_HISTORY = (
    'while [ $# -ge 2 ]; do echo "=== job $1"; qacct -j "$1" 2>&1; '
    '[ -L "$2/.claim" ] && echo "=== claimed $1"; shift 2; done; '
    'echo "=== zombies"; qstat -s z -xml'
)
_FIND_HISTORY = 'for name; do echo "=== tag $name"; qacct -j "$name" 2>&1; done; true'  # qacct exits 1 on a miss
_LOAD = 'qstat -g c && echo "=== jobs" && qstat -xml'


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
    ids = [j.native_id for j in jobs if _JOB_ID.match(j.native_id)]
    if not ids:
        raise InvalidSpecError(f"no Grid Engine job id among {[j.native_id for j in jobs]!r}")
    return ids


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
    """

    name = "sge"

    def __init__(self, root: str, *, job_name: str = "intercede", parallel_environment: str = "smp") -> None:
        self.root = root.rstrip("/")
        self.job_name = job_name
        self.parallel_environment = parallel_environment

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
        if res.gpus or res.nodes > 1:
            raise InvalidSpecError("Grid Engine has no portable request for GPUs or several nodes: pass the site's "
                                   "own (e.g. -l gpu=1, -pe mpi 64) in resources.native")
        argv = ["qsub", "-terse", "-w", "e", "-N", name, "-S", "/bin/sh", "-wd", request.workdir,
                "-o", f"{request.workdir}/.sge.out", "-e", f"{request.workdir}/.sge.err"]
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
        return [*argv, *res.native, request.script]

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

    # -- status and history -------------------------------------------------------------------------------------------
    def status_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        """``qstat -xml``: every job of the caller in the queue, in one call (qstat filters by user, not by id)."""
        _ids(jobs)
        return ["qstat", "-xml"]

    def parse_status(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, NativeStatus]:
        if not result.ok:
            raise _fail(result, "queue query failed")
        wanted = {j.native_id for j in jobs}
        found: dict[str, NativeStatus] = {}
        for job in _job_lists(_xml(result, result.text, "qstat")):
            number = (job.findtext("JB_job_number") or "").strip()
            if number in wanted:
                letters = (job.findtext("state") or "").strip()
                reason = "held" if "h" in letters else ("error state: see qstat -j" if "E" in letters else "")
                found[number] = NativeStatus(state_of(letters), letters, None, reason)
        return found

    def history_argv(self, jobs: Sequence[BatchJob]) -> list[str] | None:
        """One ``sh -c``: qacct per job, whether its script claimed its directory, then the zombie list."""
        ids = set(_ids(jobs))
        pairs = [arg for j in jobs if j.native_id in ids for arg in (j.native_id, j.workdir)]
        return ["sh", "-c", _HISTORY, "sh", *pairs]

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
            elif kind == "job" and number in wanted:
                if any(m in body for m in _NO_MASTER):
                    raise _fail(result, "accounting query failed")
                records = [r for r in _records(body) if r.get("jobnumber") == number]
                if records:
                    found[number] = _final(records[-1])
        zombies = {(j.findtext("JB_job_number") or "").strip()
                   for j in _job_lists(_xml(result, zombies_text.strip(), "qstat -s z"))}
        for number in (wanted & zombies) - found.keys() - claimed:
            found[number] = NativeStatus(JobState.ABORTED, "deleted", None, "deleted before it started")
        return found

    # -- cancel -------------------------------------------------------------------------------------------------------
    def cancel_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        return ["qdel", *_ids(jobs)]

    def parse_cancel(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, str]:
        """Id -> why it was not cancelled; qdel's exit 1 with only per-id refusals is not a failure as a whole."""
        errors = {j.native_id: "not a Grid Engine job id" for j in jobs if not _JOB_ID.match(j.native_id)}
        said = result.text + "\n" + _text(result)
        per_id = {m[1]: f'job "{m[1]}" does not exist (unknown or finished)' for m in _NOT_EXIST.finditer(said)}
        if not result.ok and (not per_id or any(m in said for m in _NO_MASTER)):
            raise _fail(result, "cancel failed")
        return errors | per_id

    # -- find by tag --------------------------------------------------------------------------------------------------
    def find_argvs(self, tags: Sequence[str]) -> list[list[str]]:
        """``qstat -j <names> -xml`` (queued jobs with their working directory) and qacct per name (finished)."""
        if not tags:
            return []
        patterns = [f"{_check_tag(tag)}~*" for tag in tags]
        return [["qstat", "-j", ",".join(patterns), "-xml"], ["sh", "-c", _FIND_HISTORY, "sh", *patterns]]

    def parse_find(self, results: Sequence[CommandResult], tags: Sequence[str]) -> dict[str, list[BatchJob]]:
        """Tag -> jobs named ``<tag>~<uid>``: from the queue (a job whose recorded ``JB_cwd`` is not ``root/<uid>``
        is not ours and is left out) and from accounting (the working directory is ``root/<uid>``)."""
        found: dict[str, dict[str, BatchJob]] = {tag: {} for tag in tags}
        queue, history = results
        if not queue.ok and "do not exist" not in _text(queue) + queue.text:
            raise _fail(queue, "tag lookup failed")
        if not history.ok:
            raise _fail(history, "tag lookup failed")
        named = []
        if queue.text.strip().startswith("<"):
            named += [(job.findtext("JB_job_number"), job.findtext("JB_job_name"), job.findtext("JB_cwd"))
                      for job in _xml(queue, queue.text, "qstat -j").iter("element")]
        named += [(r.get("jobnumber"), r.get("jobname"), None)
                  for _, body in _sections(history.text) for r in _records(body)]
        for number, name, cwd in named:
            tag, sep, uid = (name or "").strip().rpartition("~")
            workdir = f"{self.root}/{uid}"
            if number and sep and tag in found and (cwd is None or cwd.strip() == workdir):
                found[tag].setdefault(number.strip(), BatchJob(number.strip(), workdir))
        return {tag: list(jobs.values()) for tag, jobs in found.items()}

    # -- load ---------------------------------------------------------------------------------------------------------
    def load_argv(self) -> list[str] | None:
        return ["sh", "-c", _LOAD]

    def parse_load(self, result: CommandResult) -> LoadReport:
        """Total and available slots over the cluster queues (``qstat -g c``); running and queued own jobs."""
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
