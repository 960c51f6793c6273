"""The pure half of the DIRAC plug-in: pilot stamps, pilot references, the pilot's job spec, DIRAC's result dicts.

* A **pilot stamp** is the per-copy tag intercede carries to the resource: ``<20 hex>.<copy>``, at most 32
  characters (DIRAC's ``PilotStamp`` column), so DIRAC's stamp finds the job at the CE (``Taggable``) after a crash.
* A **pilot reference** (DIRAC's ``PilotJobReference``) is ``intercede://<ce>/<job id>``: the CE's name in the
  intercede configuration and the backend's job id, which may itself hold ``/`` or ``@``.
* Results are DIRAC's ``S_OK``/``S_ERROR`` dicts (``{"OK": True, "Value": ...}`` / ``{"OK": False, "Message": ...}``),
  made here so this module runs without DIRAC installed.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from intercede.backends.capabilities import LoadReport
from intercede.errors import InvalidSpecError
from intercede.model import Copy, InputFile, JobSpec, JobState, JobStatus, Resources

__all__ = [
    "MAX_STAMP",
    "SCHEME",
    "ce_status",
    "new_stamp_base",
    "output_spec",
    "parse_reference",
    "pilot_spec",
    "reference",
    "s_error",
    "s_ok",
    "stamp_of",
    "status_text",
]

SCHEME = "intercede://"
#: DIRAC's PilotAgents.PilotStamp is VARCHAR(32).
MAX_STAMP = 32
_BASE = 20  # hex digits of the random part: 80 bits, and room for ".<copy>" up to 11 digits


def s_ok(value: Any = None) -> dict[str, Any]:
    return {"OK": True, "Value": value}


def s_error(message: str) -> dict[str, Any]:
    return {"OK": False, "Message": message}


def new_stamp_base() -> str:
    """The random part of a submission's stamps (copy ``i`` is stamped ``<base>.<i>``)."""
    return secrets.token_hex(_BASE // 2)


def reference(ce: str, job_id: str) -> str:
    return f"{SCHEME}{ce}/{job_id}"


def parse_reference(ref: str) -> tuple[str, str]:
    """``(ce, job id)`` of a pilot reference; anything else raises :class:`~intercede.errors.InvalidSpecError`."""
    if not ref.startswith(SCHEME):
        raise InvalidSpecError(f"{ref!r} is not an intercede pilot reference ({SCHEME}<ce>/<job id>)")
    ce, sep, job_id = ref[len(SCHEME):].partition("/")
    if not ce or not sep or not job_id:
        raise InvalidSpecError(f"{ref!r} is not an intercede pilot reference ({SCHEME}<ce>/<job id>)")
    return ce, job_id


def pilot_spec(executable: Path, copies: int, base: str, *, resources: Resources | None = None,
               environment: Mapping[str, str] | None = None, proxy: str | None = None) -> JobSpec:
    """``copies`` copies of the pilot wrapper ``executable`` (staged and run in each job's own directory), stamped
    ``<base>.<i>`` (one copy: ``<base>.0`` too, so a stamp always has the same shape). A ``proxy`` (PEM) is staged
    per copy as a 0600 secret file, its path exported as ``X509_USER_PROXY_FILE``."""
    if copies < 1:
        raise InvalidSpecError(f"numberOfJobs must be at least 1, got {copies}")
    if len(f"{base}.{copies - 1}") > MAX_STAMP:
        raise InvalidSpecError(f"stamps of {copies} copies would be longer than {MAX_STAMP} characters")
    secret = {"X509_USER_PROXY": proxy} if proxy else {}
    name = executable.name
    # JobSpec tags a single copy with the bare tag: give it the ".0" itself, so every stamp has one shape.
    tag = f"{base}.0" if copies == 1 else base
    return JobSpec(executable=name, input_files=[InputFile(source=executable.absolute(), name=name)],
                   environment=dict(environment or {}), resources=resources or Resources(),
                   tag=tag, copies=[Copy(secrets=secret) for _ in range(copies)])


def stamp_of(spec: JobSpec, index: int) -> str:
    """The DIRAC pilot stamp of copy ``index`` of a :func:`pilot_spec`."""
    tag = spec.copy_tag(index)
    assert tag is not None
    return tag


def output_spec() -> JobSpec:
    """What a fetch needs to know of a pilot (its stdout and stderr names): every pilot spec has these."""
    return JobSpec(executable="pilot")


def status_text(status: JobStatus) -> str:
    """A pilot's status as text for ``getJobLog`` (no secret: states, exit code and the resource's reason)."""
    lines = [f"job {status.job_id}: {status.state.value} (native {status.native_state or '-'})"]
    if status.exit_code is not None:
        lines.append(f"exit code: {status.exit_code}")
    if status.reason:
        lines.append(f"reason: {status.reason}")
    for label, at in (("submitted", status.submitted_at), ("started", status.started_at),
                      ("finished", status.finished_at)):
        if at is not None:
            lines.append(f"{label}: {at.isoformat()}")
    return "\n".join(lines) + "\n"


def ce_status(load: LoadReport | None, statuses: Sequence[JobStatus], submitted: int) -> dict[str, Any]:
    """DIRAC's ``getCEStatus`` answer: the resource's own counts when it reports load, else the counts of this
    CE's own pilots (an HTCondor-CE does not show its site's queue)."""
    result = s_ok()
    if load is not None:
        running, waiting = load.running, load.queued
    else:
        running = sum(s.state is JobState.RUNNING for s in statuses)
        waiting = sum(s.state in (JobState.SUBMITTED, JobState.WAITING, JobState.UNKNOWN) for s in statuses)
    result.update({"SubmittedJobs": submitted, "RunningJobs": running, "WaitingJobs": waiting})
    return result
