"""Pure parsers of what A-REX's REST interface answers (no I/O), tested on recorded real answers.

* :func:`versions` — ``GET /arex/rest``; :func:`pick_version` chooses the newest one this client speaks.
* :func:`bulk` — the per-job entries of a bulk ``POST /jobs?action=...`` answer, keyed by id (never by position).
* :func:`submitted` — the per-description entries of ``POST /jobs?action=new``, which carry no key but their order.
* :func:`instances` — the entries of a REST 1.1 ``instances=N`` submit (A-REX may make fewer than asked).
* :func:`activity` — one ``info`` entry -> :class:`Activity` (REST state, exit code, error, name).
* :func:`job_status` — an :class:`Activity` -> :class:`~intercede.model.JobStatus` (the state map, docs/arc.md).
* :func:`listing` — a session directory listing, hostile names refused per entry.
* :func:`load` — the GLUE2 ``GET /info`` document -> :class:`~intercede.backends.capabilities.LoadReport`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from intercede.backends.capabilities import LoadReport
from intercede.model import JobState, JobStatus

__all__ = [
    "SUPPORTED",
    "Activity",
    "Entry",
    "Listing",
    "activity",
    "bulk",
    "instances",
    "job_status",
    "listing",
    "load",
    "pick_version",
    "rest_state",
    "submitted",
    "unkeepable",
    "versions",
]

#: REST versions this client speaks, oldest first.
SUPPORTED = ("1.0", "1.1")

#: REST state -> intercede state. HELD stays non-terminal; KILLING already means "the WMS's cancel is under way".
_STATES = {
    **dict.fromkeys(("ACCEPTING", "ACCEPTED", "PREPARING", "PREPARED", "SUBMITTING", "QUEUING"), JobState.WAITING),
    **dict.fromkeys(("RUNNING", "HELD", "EXITINGLRMS", "OTHER", "EXECUTED", "FINISHING"), JobState.RUNNING),
    "FINISHED": JobState.DONE,
    "FAILED": JobState.FAILED,
    "KILLING": JobState.ABORTED,
    "KILLED": JobState.ABORTED,
}
#: States after which A-REX does nothing more with the job (``clean`` is acted on only then).
FINAL = frozenset({"FINISHED", "FAILED", "KILLED", "WIPED"})

#: The older ``nordugrid:`` words of an info document's State list -> REST state (for answers without ``arcrest:``).
_NORDUGRID = {"ACCEPTED": "ACCEPTED", "PREPARING": "PREPARING", "SUBMIT": "SUBMITTING", "SUBMITTING": "SUBMITTING",
              "INLRMS:Q": "QUEUING", "INLRMS:R": "RUNNING", "INLRMS:S": "HELD", "INLRMS:E": "EXITINGLRMS",
              "INLRMS:O": "OTHER", "INLRMS:EXECUTED": "EXECUTED", "FINISHING": "FINISHING", "FINISHED": "FINISHED",
              "FAILED": "FAILED", "KILLING": "KILLING", "KILLED": "KILLED", "DELETED": "WIPED"}


def versions(doc: Mapping[str, Any]) -> list[str]:
    """The versions ``GET /arex/rest`` lists (a single version comes as a string, several as a list)."""
    value = doc.get("version", [])
    return [value] if isinstance(value, str) else [str(v) for v in value]


def pick_version(offered: Sequence[str]) -> str | None:
    """The newest version both sides speak, or None."""
    common = [v for v in SUPPORTED if v in offered]
    return common[-1] if common else None


def _entries(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    jobs = doc.get("job", [])
    if isinstance(jobs, dict):  # one job comes as an object on some releases
        jobs = [jobs]
    return [j for j in jobs if isinstance(j, dict)]


@dataclass(frozen=True)
class Entry:
    """One job's answer inside a bulk answer."""

    code: int
    reason: str
    job_id: str | None
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300


def _entry(raw: Mapping[str, Any]) -> Entry:
    try:
        code = int(raw.get("status-code", 0))
    except (TypeError, ValueError):
        code = 0
    job_id = raw.get("id")
    return Entry(code, str(raw.get("reason", "")), str(job_id) if job_id else None, dict(raw))


def bulk(doc: Mapping[str, Any]) -> dict[str, Entry]:
    """The entries of a bulk answer keyed by job id (an entry without an id is dropped: it answers nothing asked)."""
    return {e.job_id: e for e in map(_entry, _entries(doc)) if e.job_id is not None}


def submitted(doc: Mapping[str, Any], expected: int) -> list[Entry]:
    """The per-description entries of a submit answer, in the order of the descriptions sent.

    Raises ``ValueError`` when the count differs: then which description each answer belongs to is not known."""
    entries = [_entry(raw) for raw in _entries(doc)]
    if len(entries) != expected:
        raise ValueError(f"A-REX answered {len(entries)} entries for {expected} job descriptions")
    return entries


def instances(doc: Mapping[str, Any], asked: int) -> list[Entry]:
    """One entry per copy asked of an ``instances=N`` submit of one description.

    A-REX makes between 1 and N jobs (fewer when its total job limit would be passed) and answers one 201 entry per
    job made, or one failure entry when it made none. The copies are identical, so they are given the jobs in the
    order answered; the copies left over get the failure (or, after a partial success, a temporary refusal naming
    the limit). More entries than asked raises ``ValueError``."""
    entries = [_entry(raw) for raw in _entries(doc)]
    made = [e for e in entries if e.ok and e.job_id]
    if len(entries) > asked or len(made) > asked:
        raise ValueError(f"A-REX answered {len(entries)} entries for {asked} instances")
    failed = next((e for e in entries if not e.ok), None)
    if failed is None:
        failed = Entry(500, f"No more jobs allowed: A-REX made {len(made)} of {asked} instances", None)
    return made + [failed] * (asked - len(made))


@dataclass(frozen=True)
class Activity:
    """What an ``info`` entry says of one job."""

    job_id: str
    state: str  # the REST state word, "" if none could be read
    exit_code: int | None = None
    error: str = ""
    name: str = ""
    submitted: str = ""
    started: str = ""
    ended: str = ""
    #: False for the stand-in A-REX answers until it has written the job's information (a job just created): its id
    #: and state only, no ``Name`` (which a tagged job has, and every written document holds) nor
    #: ``SubmissionTime``. A stand-in cannot say which tag the job carries.
    written: bool = True


def rest_state(states: Sequence[str] | str) -> str:
    """The REST state from an info document's State list: its ``arcrest:`` word, else the ``nordugrid:`` one."""
    words = [states] if isinstance(states, str) else list(states)
    for word in words:
        if word.startswith("arcrest:"):
            return word.removeprefix("arcrest:")
    for word in words:
        if word.startswith("nordugrid:"):
            native = word.removeprefix("nordugrid:")
            if native.startswith("FAILED") or native.startswith("KILLED"):  # e.g. FAILED::INLRMS (failed, where)
                native = native.split(":")[0]
            return _NORDUGRID.get(native, native)
    return ""


def activity(entry: Entry) -> Activity | None:
    """The :class:`Activity` of an ``info`` entry, or None if the entry holds no document."""
    if entry.job_id is None:
        return None
    doc = entry.body.get("info_document")
    if not isinstance(doc, dict):
        return None
    act = doc.get("ComputingActivity", doc)
    if not isinstance(act, dict):
        return None
    code: int | None
    try:
        code = int(act["ExitCode"]) if "ExitCode" in act else None
    except (TypeError, ValueError):
        code = None
    error = act.get("Error", "")
    if isinstance(error, list):
        error = "; ".join(str(e) for e in error)
    return Activity(job_id=entry.job_id, state=rest_state(act.get("State", [])), exit_code=code, error=str(error),
                    name=str(act.get("Name", "")), submitted=str(act.get("SubmissionTime", "")),
                    started=str(act.get("StartTime", "")), ended=str(act.get("ComputingManagerEndTime", "")
                                                                      or act.get("EndTime", "")),
                    written="Name" in act or "SubmissionTime" in act)


def job_status(act: Activity, last: JobStatus | None = None) -> JobStatus:
    """The state map (docs/arc.md). WIPED keeps the last state seen (the session is gone, the outcome is not);
    FINISHED with a non-zero exit code is FAILED; an unknown word is UNKNOWN with the word as the reason."""
    if act.state == "WIPED":
        if last is not None:
            return last.model_copy(update={"native_state": "WIPED"})
        return JobStatus(job_id=act.job_id, state=JobState.UNKNOWN, native_state="WIPED",
                         exit_code=act.exit_code, reason="wiped by the CE before its outcome was seen")
    state = _STATES.get(act.state)
    if state is None:
        return JobStatus(job_id=act.job_id, state=JobState.UNKNOWN, native_state=act.state,
                         reason=f"unrecognised ARC state {act.state!r}")
    if state is JobState.DONE and act.exit_code not in (None, 0):
        state = JobState.FAILED
    return JobStatus(job_id=act.job_id, state=state, native_state=act.state, exit_code=act.exit_code,
                     reason=act.error)


@dataclass(frozen=True)
class Listing:
    """A session directory's entries; ``refused`` maps hostile names from the server to why they were refused."""

    files: list[str]
    dirs: list[str]
    refused: dict[str, str]


def file_name(name: str) -> str:
    """A name as A-REX lists it, decoded: A-REX writes each byte of a UTF-8 file name as its own ``\\u00XX``
    escape (observed on 7.0: ``é`` arrives as ``Ã©``), so a name of code points below 256 that is valid UTF-8 as
    bytes is that UTF-8 name. Anything else is returned unchanged."""
    if name.isascii() or any(ord(c) > 255 for c in name):
        return name
    try:
        return name.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return name


def _bad_name(name: object) -> str | None:
    if not isinstance(name, str) or not name:
        return "not a file name"
    if "/" in name or "\0" in name:
        return "contains a slash or NUL (refused: a listing entry must name one file)"
    if name in (".", ".."):
        return "names a directory above or at the listing (refused)"
    return None


def unkeepable(name: str) -> str | None:
    """Why A-REX cannot keep a declared output of this name, or None. A-REX's output list drops control characters
    (observed on 7.2: an output declared ``a\\nb`` is listed as ``ab``), so the job's file is removed after the
    job and another file could stand in its place."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "has a control character in its name, which A-REX drops from its output list: it cannot keep it"
    return None


def listing(doc: Mapping[str, Any]) -> Listing:
    """A ``GET /jobs/<id>/session/<dir>`` answer ``{"file": [...], "dir": [...]}`` (a single name may come as a
    string). Every name must be one path component; anything else is refused per entry, never followed."""
    files: list[str] = []
    dirs: list[str] = []
    refused: dict[str, str] = {}
    for key, out in (("file", files), ("dir", dirs)):
        names = doc.get(key, [])
        for name in [names] if isinstance(names, str) else list(names or []):
            why = _bad_name(name)
            if why is None and isinstance(name, str):
                out.append(file_name(name))
            else:
                refused[str(name)] = why or "not a file name"
    return Listing(files, dirs, refused)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def load(doc: Mapping[str, Any]) -> LoadReport:
    """Capacity from the GLUE2 ``/info`` document: running and queued jobs of the ComputingService (queued = waiting +
    staging + pre-LRMS waiting: a job still being staged in is queued for the WMS), free slots summed over shares,
    total slots from the ComputingManager (None where A-REX publishes none). Any level may be one object or a list
    (7.2 sends ``AdminDomain`` as a list, 6.17 and 7.0 as an object)."""
    domains = doc.get("Domains", doc)
    services = [svc for domain in _as_list(domains.get("AdminDomain")) if isinstance(domain, dict)
                for group in _as_list(domain.get("Services")) if isinstance(group, dict)
                for svc in _as_list(group.get("ComputingService")) if isinstance(svc, dict)]
    running = queued = 0
    free: int | None = None
    total: int | None = None
    for svc in services:
        running += _int(svc.get("RunningJobs"))
        queued += _int(svc.get("WaitingJobs")) + _int(svc.get("StagingJobs")) + _int(svc.get("PreLRMSWaitingJobs"))
        for share in _as_list(svc.get("ComputingShare")):
            if "FreeSlots" in share:
                free = (free or 0) + _int(share.get("FreeSlots"))
        for manager in _as_list(svc.get("ComputingManager")):
            slots = manager.get("TotalSlots", manager.get("TotalLogicalCPUs"))
            if slots is not None:
                total = (total or 0) + _int(slots)
    if total is not None and total < 1:
        total = None
    return LoadReport(total_cores=total, free_cores=free, running=running, queued=queued)
