"""OARScheduler: OAR 2.5's dialect as pure argv builders and output parsers (no I/O).

Every state comes from ``oarstat -f -J`` (JSON, one object per job id, parsed with the standard library): OAR keeps
every job in its database, finished ones included, so the queue command is also the history. Tags are found with
``oarstat -J --sql "job_name IN (...)"`` (each job's ``launchingDirectory`` is its working directory), load from
``oarnodes -J`` and ``oarstat -J``. Verified against OAR 2.5.9 (Debian bookworm, PostgreSQL backend; recorded outputs
and their tests: ``tests/data/oar/2.5.9/``, ``tests/unit/test_oar_scheduler.py``).

Quirks this module absorbs:

* oarsub's command is a *shell command line* (OAR runs it with ``bash -c`` on the node), not a path: the script is
  passed as ``/bin/sh <quoted path>``. oarsub prints ``OAR_JOB_ID=<id>`` (one line per job of an array, then
  ``OAR_ARRAY_ID=<first id>``) among ``[ADMISSION RULE]`` chatter.
* oarsub refuses an unknown queue (exit 248, not a signal: ``The queue <q> does not exist``) and a request no
  resource set can satisfy (exit 8, ``OAR_JOB_ID=-5``, ``There are not enough resources for your request``). A job
  name holding a quote breaks oarsub's own SQL (exit 8, ``OAR_JOB_ID=`` empty): names are checked here first.
* With the server (Almighty) down, oarsub still writes the job into the database, then says ``Cannot connect to
  executor ... Job is killed`` (exit 9) and the job stays Waiting: the job may exist (ConnectivityError).
  oardel says ``Could not connect to the socket``. With the *database* down every command retries for ever: only the
  transport's deadline ends it (oarsub and oarstat run as the ``oar`` user, so a ``timeout`` the caller runs cannot
  even signal them).
* ``exit_code`` is the job shell's raw wait status (``768`` for ``exit 3``, ``32512`` for 127), null until the job
  ended; OAR says ``Terminated`` whatever the status, so DONE vs FAILED is decided here from the status.
* ``Error`` is OAR's word for every other end, told apart by the job's events: ``FRAG_JOB_REQUEST`` from a user
  (oardel) is ABORTED; ``WALLTIME`` (the walltime ran out; OAR then frags the job as root) and anything else
  (``WORKING_DIRECTORY``: the directory is missing; ``OUTPUT_FILES``: stdout/stderr cannot be created; ...) are FAILED
  with the event's description as the reason. ``toError`` is the same end on its way.
* ``oardel`` answers per id: ``Deleting the job = <id> ...REGISTERED.`` or ``...ERROR.`` with the reason on stderr
  (``Cannot frag <id> ; <why>``: an unknown id says ``You are not the right user``, a job in Error ``This job was
  already killed``), exit 1 when any id failed. A Terminated job is "REGISTERED" and stays Terminated.
* ``oarstat -j`` of an unknown id prints nothing (exit 0).
* Suspending (``oarhold -r``) needs OAR's cpuset job manager; so does ``Suspended``/``Resuming``, mapped to RUNNING
  without having been provoked. Held (``oarhold``, or ``oarsub --hold``) is ``Hold``: WAITING.
* A job array (``oarsub --array N``) is N jobs with consecutive ids sharing one name; each has ``array_index``
  1..N (``OAR_ARRAY_INDEX`` in its environment).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from intercede.backends.capabilities import LoadReport
from intercede.backends.jobscript import array_launcher, shell_word
from intercede.backends.schedulers.base import BatchJob, BulkRequest, NativeStatus, SubmitRequest
from intercede.backends.schedulers.slurm import array_name, array_names
from intercede.backends.transports.base import CommandResult
from intercede.errors import CommandError, ConnectivityError, InvalidSpecError
from intercede.model import JobState, Resources

__all__ = ["STATES", "OARScheduler", "exit_code_of", "status_of"]

#: OAR's job states -> intercede's, for the states whose meaning does not depend on the exit status or the events
#: (Terminated, Error and toError do: see :func:`status_of`). Provoked on 2.5.9: Waiting, Hold, toLaunch, Launching,
#: Running, Finishing, Terminated, Error.
STATES: dict[str, JobState] = {
    "Waiting": JobState.WAITING,
    "Hold": JobState.WAITING,
    "toAckReservation": JobState.WAITING,  # an advance reservation waiting for its acknowledgement
    "toLaunch": JobState.WAITING,
    "Launching": JobState.WAITING,  # resources assigned, oarexec starting on the node: the payload has not started
    "Running": JobState.RUNNING,
    "Suspended": JobState.RUNNING,
    "Resuming": JobState.RUNNING,
    "Finishing": JobState.RUNNING,  # ended, OAR still cleaning up: the exit status is not recorded yet
}

_JOB_ID = re.compile(r"[1-9][0-9]*\Z")
_SUBMITTED = re.compile(r"^OAR_JOB_ID=(-?[0-9]*)\s*$", re.M)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:*-]*\Z")  # tags (model.Tag) and array names: safe in a SQL literal
_CANCEL_ERROR = re.compile(r"Cannot frag ([0-9]+) ; (.*)$", re.M)
_NO_SERVER = ("Cannot connect to executor", "Could not connect to the socket")
# Exit values of an oarsub that did not finish: the resource's `timeout` wrapper gave up (124) or a signal ended it.
# oarsub's own refusals use large values too (248 for an unknown queue), so "above 128" cannot mean a signal here.
_INTERRUPTED = frozenset({124, 128 + 1, 128 + 2, 128 + 9, 128 + 15})
_SECTION = "=== "
# Load: the resources, every current job (their assigned resources are the busy ones), the caller's current jobs.
_LOAD = 'oarnodes -J && echo "=== all" && oarstat -J && echo "=== mine" && oarstat -J -u'
_ENDED_BY_USER = re.compile(r"User \S+ requested to frag")
_BUSY = frozenset({"toLaunch", "Launching", "Running", "Suspended", "Resuming", "Finishing"})


def exit_code_of(status: int | None) -> int | None:
    """The job's exit code from OAR's raw wait status: the exit value, or 128 + the signal that killed it."""
    if status is None:
        return None
    return 128 + (status & 0x7F) if status & 0x7F else status >> 8


def status_of(job: dict[str, Any]) -> NativeStatus:
    """One job of ``oarstat -f -J`` -> its status (see the module docstring for Terminated and Error)."""
    state = str(job.get("state", ""))
    raw = job.get("exit_code")
    code = exit_code_of(raw if isinstance(raw, int) else None)
    if state == "Terminated":
        return NativeStatus(JobState.DONE if code == 0 else JobState.FAILED, state, code, "")
    if state in ("Error", "toError"):
        events = [e for e in job.get("events") or [] if isinstance(e, dict)]
        kinds = {str(e.get("type", "")) for e in events}
        said = [str(e.get("description", "")) for e in events if not str(e.get("type", "")).startswith("SWITCH_")]
        if "WALLTIME" in kinds:
            return NativeStatus(JobState.FAILED, state, code, "walltime exceeded")
        if any(str(e.get("type")) == "FRAG_JOB_REQUEST" and _ENDED_BY_USER.search(str(e.get("description", "")))
               for e in events):
            return NativeStatus(JobState.ABORTED, state, code, "deleted (oardel)")
        return NativeStatus(JobState.FAILED, state, code, said[-1] if said else "OAR put the job in Error")
    reason = "held" if state == "Hold" else ""
    return NativeStatus(STATES.get(state, JobState.UNKNOWN), state, code, reason)


def _check_name(name: str) -> str:
    if not _NAME.match(name) or name.isdigit():
        raise InvalidSpecError(f"tag {name!r} cannot be an OAR job name searched by SQL (letters, digits and ._:-; "
                               "not only digits)")
    return name


def _said(result: CommandResult) -> str:
    return (result.text + "\n" + result.stderr.decode("utf-8", "replace")).strip()


def _fail(result: CommandResult, why: str) -> CommandError | ConnectivityError:
    said = _said(result)
    program = result.argv[0] if result.argv else "command"
    message = f"{program} (exit {result.exit_status}): {why}" + (f": {said[-2000:]}" if said else "")
    if any(m in said for m in _NO_SERVER):
        return ConnectivityError(message)
    return CommandError(message, argv=list(result.argv), exit_status=result.exit_status,
                        stderr=result.stderr.decode("utf-8", "replace").strip())


def _ids(jobs: Sequence[BatchJob]) -> list[str]:
    ids = [j.native_id for j in jobs if _JOB_ID.match(j.native_id)]
    if not ids:
        raise InvalidSpecError(f"no OAR job id among {[j.native_id for j in jobs]!r}")
    return ids


def _json(result: CommandResult, text: str, what: str) -> dict[str, Any]:
    """An oarstat/oarnodes JSON object keyed by id; nothing at all (no such job) is an empty one."""
    text = text.strip()
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise _fail(result, f"{what}: not JSON ({exc}): {text[:200]!r}") from None
    if not isinstance(data, dict):
        raise _fail(result, f"{what}: not a JSON object: {text[:200]!r}")
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}


def _sections(text: str) -> dict[str, str]:
    """``=== <head>`` sections of a multi-command output (the first, headless one under "")."""
    out: dict[str, str] = {}
    for i, chunk in enumerate(text.split("\n" + _SECTION)):
        head, _, body = chunk.partition("\n") if i else ("", "", chunk)
        out[head.strip()] = body
    return out


def _walltime(seconds: float) -> str:
    whole = math.ceil(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class OARScheduler:
    """OAR, driven through oarsub, oarstat, oardel and oarnodes (all pure; see the module docstring).

    ``root`` is the directory holding the jobs' working directories (BatchBackend's root); ``job_name`` names jobs
    submitted without a tag; ``core_resource`` is the resource level a job's ``cores`` count (``-l
    /nodes=<n>/<core_resource>=<c>``; OAR sites declare ``core``, some only ``cpu``). Several copies are one job array
    (``--array``) of at most ``array_max`` jobs.
    """

    name = "oar"

    def __init__(self, root: str, *, job_name: str = "intercede", core_resource: str = "core",
                 array_max: int = 1000) -> None:
        if not 1 <= array_max <= 10_000:
            raise ValueError(f"array_max must be 1..10000, got {array_max}")
        self.root = root.rstrip("/")
        self.job_name = _check_name(job_name)
        self.core_resource = core_resource
        self.array_max = array_max

    @property
    def bulk_max(self) -> int:
        return self.array_max

    # -- submit -----------------------------------------------------------------------------------------------------
    def _options(self, res: Resources) -> list[str]:
        """``-l /nodes=<n>/core=<c>[,walltime=H:MM:SS]``, ``-q`` and ``--project``; memory and GPUs refused."""
        if res.memory_mb is not None or res.gpus:
            raise InvalidSpecError("OAR 2.5 has no portable request for memory or GPUs: pass the site's own "
                                   "(e.g. -p \"mem >= 4000\", -l /gpu=1) in resources.native")
        spec = f"/nodes={res.nodes}/{self.core_resource}={res.cores}"
        if res.wall_time is not None:
            spec += f",walltime={_walltime(res.wall_time.total_seconds())}"
        argv = ["-l", spec]
        if res.queue:
            argv += ["-q", res.queue]
        if res.account:
            argv += ["--project", res.account]
        return argv

    def submit_argv(self, request: SubmitRequest) -> list[str]:
        """``oarsub`` named after the tag, working in the job's directory, OAR's own stdout/stderr into
        ``.oar.out``/``.oar.err`` there, the resources mapped, native options verbatim, then the command
        ``/bin/sh <script>`` (a shell command line: see the module docstring)."""
        name = _check_name(request.tag or self.job_name)
        argv = ["oarsub", "-n", name, "-d", request.workdir, "-O", f"{request.workdir}/.oar.out",
                "-E", f"{request.workdir}/.oar.err", *self._options(request.resources)]
        return [*argv, *request.resources.native, f"/bin/sh {shell_word(request.script)}"]

    def _submitted(self, result: CommandResult) -> list[str]:
        if not result.ok:
            if result.exit_status in _INTERRUPTED or any(m in _said(result) for m in _NO_SERVER):
                raise ConnectivityError(f"oarsub (exit {result.exit_status}) could not reach the OAR server; the job "
                                        f"may have been submitted: {_said(result)[-2000:]}")
            raise _fail(result, "submission refused")
        ids = _SUBMITTED.findall(result.text)
        if not ids or not all(_JOB_ID.match(i) for i in ids):
            raise _fail(result, f"no job id in the output {result.text[:200]!r}")
        return ids

    def parse_submit(self, result: CommandResult) -> str:
        """The id from ``OAR_JOB_ID=<id>``. A refusal raises CommandError with oarsub's reason; a server oarsub could
        not reach raises ConnectivityError (the job may exist)."""
        return self._submitted(result)[-1]

    # -- bulk submission: one job array ------------------------------------------------------------------------------
    def bulk_launcher(self, request: BulkRequest) -> str | None:
        """The array's command: job ``k`` (``OAR_ARRAY_INDEX`` = k + 1) runs copy ``k``'s ``job.sh`` in its own
        directory, OAR's stdout/stderr of it into ``.oar.out``/``.oar.err`` there, as for a single job."""
        return array_launcher(request.root, request.prefix, "$((${OAR_ARRAY_INDEX:?} - 1))", ".oar")

    def submit_bulk_argv(self, request: BulkRequest) -> list[str]:
        """``oarsub --array <n>`` named :func:`~intercede.backends.schedulers.slurm.array_name` (or ``job_name``),
        working in the array's anchor directory (which outlives every copy), the launcher as its command."""
        name = _check_name(array_name(_check_name(request.tag), request.first) if request.tag else self.job_name)
        argv = ["oarsub", "--array", str(request.count), "-n", name, "-d", request.anchor,
                "-O", "/dev/null", "-E", "/dev/null", *self._options(request.resources)]
        return [*argv, *request.resources.native, f"/bin/sh {shell_word(request.launcher)}"]

    def parse_submit_bulk(self, result: CommandResult, request: BulkRequest) -> list[str]:
        """The array's job ids, in index order (oarsub prints one ``OAR_JOB_ID`` per job of the array)."""
        ids = self._submitted(result)
        if len(ids) != request.count:
            raise ConnectivityError(f"oarsub printed {len(ids)} job ids for an array of {request.count}; the array "
                                    f"may have been submitted: {result.text[-2000:]}")
        return ids

    # -- status (the database keeps finished jobs too: no separate history) -------------------------------------------
    def status_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        """``oarstat -f -J -j <id> ...``: full records (the exit status and events are only in the full ones)."""
        return ["oarstat", "-f", "-J", *(arg for i in _ids(jobs) for arg in ("-j", i))]

    def parse_status(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, NativeStatus]:
        if not result.ok:
            raise _fail(result, "job query failed")
        wanted = {j.native_id for j in jobs}
        return {i: status_of(job) for i, job in _json(result, result.text, "oarstat").items() if i in wanted}

    def history_argv(self, jobs: Sequence[BatchJob]) -> list[str] | None:
        """None: :meth:`status_argv` already answers for finished jobs (OAR keeps them all)."""
        return None

    def parse_history(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, NativeStatus]:
        return self.parse_status(result, jobs)

    # -- cancel -------------------------------------------------------------------------------------------------------
    def cancel_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        return ["oardel", *_ids(jobs)]

    def parse_cancel(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, str]:
        """Id -> why it was not cancelled (``Cannot frag <id> ; <why>``); a server oardel could not reach is a
        ConnectivityError, any other failure without a per-id reason a CommandError."""
        errors = {j.native_id: "not an OAR job id" for j in jobs if not _JOB_ID.match(j.native_id)}
        said = _said(result)
        per_id = {m[1]: m[2].strip() for m in _CANCEL_ERROR.finditer(said)}
        if not result.ok and (not per_id or any(m in said for m in _NO_SERVER)):
            raise _fail(result, "cancel failed")
        return errors | per_id

    # -- find by tag --------------------------------------------------------------------------------------------------
    def find_argvs(self, tags: Sequence[str]) -> list[list[str]]:
        """One ``oarstat -J --sql "job_name IN (...)"`` over the tags and the names of the arrays their copies may be
        in (names are checked to be plain SQL literals first)."""
        if not tags:
            return []
        names = dict.fromkeys([*(_check_name(t) for t in tags),
                               *(n for t in tags for n in array_names(t, self.array_max))])
        return [["oarstat", "-J", "--sql", "job_name IN (" + ",".join(f"'{n}'" for n in names) + ")"]]

    def parse_find(self, results: Sequence[CommandResult], tags: Sequence[str]) -> dict[str, list[BatchJob]]:
        """Tag -> jobs named after it working in ``root/<uid>``, or array jobs whose copy carries it (working in
        the copy's directory beside the array's anchor). A job working anywhere else is not ours and is left out."""
        found: dict[str, dict[str, BatchJob]] = {tag: {} for tag in tags}
        for result in results:
            if not result.ok:
                raise _fail(result, "tag lookup failed")
            for job_id, job in _json(result, result.text, "oarstat --sql").items():
                name, where = str(job.get("name") or ""), str(job.get("launchingDirectory") or "")
                tag, workdir = _copy_of(name, where, job.get("array_index"))
                parent, _, uid = workdir.rpartition("/")
                if tag in found and parent == self.root and uid and _JOB_ID.match(job_id):
                    found[tag].setdefault(job_id, BatchJob(job_id, workdir))
        return {tag: list(jobs.values()) for tag, jobs in found.items()}

    # -- load ---------------------------------------------------------------------------------------------------------
    def load_argv(self) -> list[str] | None:
        return ["sh", "-c", _LOAD]

    def parse_load(self, result: CommandResult) -> LoadReport:
        """Cores: the Alive resources, free where no current job holds them; running and queued own jobs."""
        if not result.ok:
            raise _fail(result, "load query failed")
        sections = _sections(result.text)
        if "all" not in sections or "mine" not in sections:
            raise _fail(result, f"unexpected load output {result.text[:200]!r}")
        alive = {i for i, r in _json(result, sections[""], "oarnodes").items() if r.get("state") == "Alive"}
        busy = {str(r) for job in _json(result, sections["all"], "oarstat").values()
                if job.get("state") in _BUSY for r in job.get("assigned_resources") or []}
        mine = [STATES.get(str(j.get("state")), JobState.UNKNOWN)
                for j in _json(result, sections["mine"], "oarstat -u").values()]
        return LoadReport(total_cores=len(alive), free_cores=len(alive - busy), running=mine.count(JobState.RUNNING),
                          queued=mine.count(JobState.WAITING))


_ARRAY_NAME = re.compile(r"(.+)\.\*([0-9]*)\Z")
_ANCHOR = re.compile(r"(.*/[0-9a-f]{12})ffff\Z")


def _copy_of(name: str, workdir: str, index: object) -> tuple[str, str]:
    """(tag, working directory) of a job named ``name`` working in ``workdir``: for a job of an array named after a
    tag's copies, its copy's tag and directory; any other job as it is."""
    named, anchor = _ARRAY_NAME.match(name), _ANCHOR.match(workdir)
    if not (named and anchor and isinstance(index, int) and 1 <= index <= 10_000):
        return name, workdir
    k = index - 1
    return f"{named[1]}.{int(named[2] or 0) + k}", f"{anchor[1]}{k:04d}"
