"""The job model: what a WMS asks for, and what a backend answers. Pure data, no I/O.

* :class:`JobSpec` describes one submission (possibly several copies, each with its own variables and secrets).
* :class:`JobState` is the DIRAC-compatible state; :class:`JobStatus` adds the native state, exit code and reason.
* :class:`Outcome` is the per-id answer of a bulk operation; :class:`SubmitResult` the per-copy answer of a submit.
* :class:`OutputManifest` lists the files an output fetch wrote under its destination directory.

Invalid input raises :class:`pydantic.ValidationError` naming the field (a ``ValueError``; callers that want the
intercede tree use :func:`parse_spec`, which raises :class:`~intercede.errors.InvalidSpecError`).

:data:`RESERVED_NAMES` are the files intercede keeps in a job's working directory (the layout is described in
:mod:`intercede.backends.jobscript`): no input, output, stdout or stderr may be one of them or lie under one, so a spec
can never overwrite, or read back, the wrapper's own state. :data:`RESERVED_ENV` are the environment variables the
wrapper sets for the payload; a spec may not set them.
"""

from __future__ import annotations

import enum
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from intercede.errors import InvalidSpecError

__all__ = [
    "RESERVED_ENV",
    "RESERVED_NAMES",
    "Copy",
    "InputFile",
    "JobFile",
    "JobSpec",
    "JobState",
    "JobStatus",
    "ManifestEntry",
    "Outcome",
    "OutputBounds",
    "OutputFile",
    "OutputManifest",
    "Resources",
    "Submission",
    "SubmitResult",
    "Usage",
    "parse_spec",
]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
_ATTEMPT = re.compile(r"[0-9a-f]{16}\Z")


class JobFile(enum.StrEnum):
    """The files intercede owns in a job's working directory: the job script, the idempotency tag, the secrets (a
    directory), the exit status and its temporary name, Direct's pid and cancel marker, the job's atomic start
    claim, and what the payload used (start, end, node, CPU times: written by the job script when it ends). The one
    list of them: the job script, the schedulers and :data:`RESERVED_NAMES` use these names."""

    SCRIPT = "job.sh"
    TAG = ".tag"
    SECRETS = ".secrets"
    EXITCODE = ".exitcode"
    EXITCODE_TMP = ".exitcode.tmp"
    PID = ".pid"
    CANCELLED = ".cancelled"
    CLAIM = ".claim"
    USAGE = ".usage"


#: Top-level names no input, output, stdout or stderr of a spec may use (nor lie under).
RESERVED_NAMES: frozenset[str] = frozenset(f.value for f in JobFile)

#: Environment variables the job wrapper sets for the payload: ``INTERCEDE_JOB`` marks every process of the job
#: (Direct's cancel and purge find them by it).
RESERVED_ENV: frozenset[str] = frozenset({"INTERCEDE_JOB"})


def _relative_path(value: str) -> str:
    """A path inside the job's working directory: relative, no ``..``, no NUL, not empty."""
    if not value or "\0" in value:
        raise ValueError("must be a non-empty path without NUL bytes")
    path = PurePosixPath(value)
    if path.is_absolute():
        raise ValueError(f"must be relative to the job's working directory, got absolute {value!r}")
    if ".." in path.parts:
        raise ValueError(f"must not contain '..': {value!r}")
    if str(path) in ("", "."):
        raise ValueError(f"must name a file, got {value!r}")
    return str(path)


def _job_path(value: str) -> str:
    """A path inside the job's working directory that is not (under) one of intercede's own files."""
    path = _relative_path(value)
    top = PurePosixPath(path).parts[0]
    if top in RESERVED_NAMES:
        raise ValueError(f"{top!r} is reserved for intercede's own files in the job's working directory "
                         f"(reserved: {', '.join(sorted(RESERVED_NAMES))}); got {value!r}")
    return path


def _env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError(f"environment variable names must match [A-Za-z_][A-Za-z0-9_]*, got {value!r}")
    if value in RESERVED_ENV:
        raise ValueError(f"{value!r} is set by intercede's job wrapper and cannot be given by a spec")
    return value


def _no_nul(value: str) -> str:
    if "\0" in value:
        raise ValueError("must not contain NUL bytes (they cannot cross a process boundary)")
    return value


def _unicode(value: str, what: str = "") -> str:
    """Refuse lone surrogates (``'\\udcff'``, what ``os.fsdecode`` makes of undecodable bytes): they cannot be encoded
    as UTF-8, so they could never reach the job's command line, environment or files."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        shown = "" if what else f" ({value[exc.start]!r})"
        raise ValueError(f"must be valid Unicode text: {what or 'it'} has a lone surrogate{shown} at character "
                         f"{exc.start}, which cannot be encoded as UTF-8") from None
    return value


def _secret_unicode(value: SecretStr) -> SecretStr:
    _unicode(value.get_secret_value(), "the secret")  # the message never shows the value, not even one character
    return value


def _tag(value: str) -> str:
    if not _TAG.match(value):
        raise ValueError(f"tags are 1-128 characters of [A-Za-z0-9._:-], starting alphanumeric; got {value!r}")
    return value


def _attempt(value: str) -> str:
    if not _ATTEMPT.match(value):
        raise ValueError(f"attempt ids are 16 lowercase hex digits, got {value!r}")
    return value


RelativePath = Annotated[str, AfterValidator(_relative_path)]
JobPath = Annotated[str, AfterValidator(_job_path)]
EnvName = Annotated[str, AfterValidator(_env_name)]
Text = Annotated[str, AfterValidator(_no_nul), AfterValidator(_unicode)]
Secret = Annotated[SecretStr, AfterValidator(_secret_unicode)]
Tag = Annotated[str, AfterValidator(_tag)]
Attempt = Annotated[str, AfterValidator(_attempt)]
Environment = dict[EnvName, Text]


class _Model(BaseModel):
    # hide_input_in_errors: a validation error quotes no input, which may be (or contain) a copy's secrets.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class InputFile(_Model):
    """A local file staged into the job's working directory as ``name`` before the job starts."""

    source: Path
    name: JobPath


class OutputFile(_Model):
    """A file the job writes as ``name`` in its working directory, fetched to ``destination`` (default: ``name``),
    relative to the destination directory given to the fetch."""

    name: JobPath
    destination: RelativePath | None = None

    @property
    def target(self) -> str:
        return self.destination or self.name


class Resources(_Model):
    """What the job needs. ``native`` options are passed to the scheduler verbatim, after the mapped ones."""

    cores: int = Field(1, ge=1)
    memory_mb: int | None = Field(None, ge=1)
    wall_time: timedelta | None = None
    gpus: int = Field(0, ge=0)
    nodes: int = Field(1, ge=1)
    queue: Text | None = None
    account: Text | None = None
    native: list[Text] = Field(default_factory=list)

    @model_validator(mode="after")
    def _positive_wall_time(self) -> Self:
        if self.wall_time is not None and self.wall_time.total_seconds() < 1:
            raise ValueError("wall_time must be at least one second")
        return self


class Copy(_Model):
    """One copy of a submission: its own environment variables and secrets.

    Secrets are staged as 0600 files ``.secrets/<KEY>`` in the job's working directory and their path is exported as
    ``<KEY>_FILE``; their values never appear in attributes, argv, logs or reprs.
    """

    variables: Environment = Field(default_factory=dict)
    secrets: dict[EnvName, Secret] = Field(default_factory=dict)


class JobSpec(_Model):
    """One submission to a Computing Element.

    ``executable`` runs in the job's own working directory with ``arguments`` passed verbatim (no shell expansion
    anywhere). A relative executable that names an input file is that staged file. ``tag`` is the client's idempotency
    key, carried to the resource so the job can be found again (``Taggable``); copy ``i`` of a multi-copy submission is
    tagged ``<tag>.<i>``.

    ``attempt`` is the submitter's id for this one submit attempt (16 lowercase hex digits; a reconciler picks a new
    one per submit and journals it first). A backend that can names what it creates after it (BatchBackend: the job's
    working directory ``<root>/<attempt>``; HTCondor: a job attribute), so that a job found later by its tag can be
    proven to come from one of the submitter's own attempts. A spec with an attempt has exactly one copy.
    """

    executable: Text = Field(min_length=1)
    arguments: list[Text] = Field(default_factory=list)
    environment: Environment = Field(default_factory=dict)
    input_files: list[InputFile] = Field(default_factory=list)
    output_files: list[OutputFile] = Field(default_factory=list)
    stdout: JobPath = "stdout.txt"
    stderr: JobPath = "stderr.txt"
    resources: Resources = Field(default_factory=Resources)
    container: Text | None = None
    tag: Tag | None = None
    attempt: Attempt | None = None
    copies: list[Copy] = Field(default_factory=lambda: [Copy()], min_length=1)

    @model_validator(mode="after")
    def _distinct_names(self) -> Self:
        if len(set(f.name for f in self.input_files)) != len(self.input_files):
            raise ValueError("input_files: two inputs are staged under the same name")
        if self.stdout == self.stderr:
            raise ValueError("stdout and stderr must be different files")
        _check_outputs(self.stdout, self.stderr, self.output_files)
        if self.attempt is not None and len(self.copies) != 1:
            raise ValueError("attempt: an attempt id names one job, so the spec must have exactly one copy")
        return self

    def copy_tag(self, index: int) -> str | None:
        """The tag carried by copy ``index`` at the resource."""
        if self.tag is None:
            return None
        return self.tag if len(self.copies) == 1 else f"{self.tag}.{index}"


def _check_outputs(stdout: str, stderr: str, outputs: list[OutputFile]) -> None:
    """Refuse output declarations no fetch could honour: every fetched file needs its own file under the
    destination (stdout and stderr are always fetched, under their own names)."""
    seen: set[str] = set()
    for o in outputs:
        if o.name in seen:
            raise ValueError(f"output_files: {o.name!r} is declared twice (one file, fetched once)")
        seen.add(o.name)
    for o in outputs:
        if o.name in (stdout, stderr):
            raise ValueError(f"output_files: {o.name!r} is the job's {'stdout' if o.name == stdout else 'stderr'}, "
                             "which is always fetched: do not declare it as an output")
    owner = {stdout: "stdout", stderr: "stderr"}
    for o in outputs:
        if o.target in owner:
            raise ValueError(f"output_files: {o.name!r} would be fetched to {o.target!r}, the same destination as "
                             f"{owner[o.target]}")
        owner[o.target] = f"output {o.name!r}"
    for target, who in owner.items():
        parts = target.split("/")
        for shorter in ("/".join(parts[:i]) for i in range(1, len(parts))):
            if shorter in owner:
                raise ValueError(f"output_files: {owner[shorter]} is fetched to the file {shorter!r}, which {who} "
                                 f"needs as a directory ({target!r})")


def parse_spec(data: Any) -> JobSpec:
    """Validate ``data`` into a :class:`JobSpec`, raising :class:`InvalidSpecError` that names every bad field."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        # Built from the locations and reasons only: the inputs may hold secrets.
        problems = [f"{'.'.join(str(p) for p in err['loc']) or '(spec)'}: {err['msg']}"
                    for err in exc.errors(include_input=False, include_url=False)]
        raise InvalidSpecError(f"invalid job spec ({len(problems)} problem(s)): {'; '.join(problems)}") from exc


class JobState(enum.StrEnum):
    """DIRAC-compatible job state. A job's state never moves backwards (see :meth:`advance`)."""

    SUBMITTED = "Submitted"
    WAITING = "Waiting"
    RUNNING = "Running"
    DONE = "Done"
    FAILED = "Failed"
    ABORTED = "Aborted"
    UNKNOWN = "Unknown"

    @property
    def is_terminal(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.ABORTED)

    @property
    def rank(self) -> int:
        """Progress order: UNKNOWN < SUBMITTED < WAITING < RUNNING < terminal."""
        return _RANK[self]

    def advance(self, new: JobState) -> JobState:
        """The state after observing ``new``: never backwards, and a terminal state is final."""
        if self.is_terminal:
            return self
        if new is JobState.UNKNOWN or new.rank >= self.rank:
            return new
        return self


_RANK = {
    JobState.UNKNOWN: 0,
    JobState.SUBMITTED: 1,
    JobState.WAITING: 2,
    JobState.RUNNING: 3,
    JobState.DONE: 4,
    JobState.FAILED: 4,
    JobState.ABORTED: 4,
}


def _now() -> datetime:
    return datetime.now(UTC)


class Usage(_Model):
    """What the resource says a finished job used (what a WMS's pilot accounting needs). Every field is optional: a
    resource reports what it knows. ``peak_memory_mb`` is the peak memory in MiB as the resource measures it: the
    resident set size (Slurm's MaxRSS, HTCondor's MemoryUsage, the Direct wrapper's ru_maxrss), except Grid Engine,
    whose only job-wide figure is ``maxvmem`` (sampled virtual memory summed over the job's processes; its
    ``ru_maxrss`` is one process's); ``node`` is where it ran (Slurm's NodeList, HTCondor's LastRemoteHost, Grid
    Engine's hostname, the Direct host)."""

    wall_seconds: float | None = Field(None, ge=0)
    cpu_seconds: float | None = Field(None, ge=0)
    peak_memory_mb: float | None = Field(None, ge=0)
    node: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


class JobStatus(_Model):
    """What a backend reports for one job: the mapped state plus the scheduler's own words (and, for a finished job
    where the resource keeps accounting, its :class:`Usage`)."""

    job_id: str
    state: JobState
    native_state: str = ""
    exit_code: int | None = None
    reason: str = ""
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    observed_at: datetime = Field(default_factory=_now)
    usage: Usage | None = None


class Outcome(_Model):
    """The per-id result of a bulk operation (cancel, purge, ...). ``ok`` False comes with a ``detail``;
    ``temporary`` says whether retrying later may help."""

    job_id: str
    ok: bool
    detail: str = ""
    temporary: bool = False


class Submission(_Model):
    """The result of submitting one copy: a backend job id, or the reason it was refused."""

    copy_index: int
    tag: str | None
    job_id: str | None = None
    error: str = ""
    temporary: bool = False

    @property
    def ok(self) -> bool:
        return self.job_id is not None


class SubmitResult(_Model):
    """Per-copy results of one :meth:`~intercede.backends.JobBackend.submit`."""

    submissions: list[Submission]

    @property
    def job_ids(self) -> list[str]:
        return [s.job_id for s in self.submissions if s.job_id is not None]

    @property
    def failures(self) -> list[Submission]:
        return [s for s in self.submissions if not s.ok]


class OutputBounds(_Model):
    """Limits on one output fetch: total bytes, number of files, seconds per transfer."""

    max_bytes: int = Field(1 << 30, ge=0)
    max_files: int = Field(1000, ge=0)
    transfer_timeout: float = Field(600.0, gt=0)


class ManifestEntry(_Model):
    """One file written under the destination directory (``name`` is relative to it)."""

    name: str
    size: int
    sha256: str


class OutputManifest(_Model):
    """What an output fetch wrote under ``destination``. ``missing`` lists declared outputs the job did not produce;
    ``refused`` maps outputs that were not copied (symlinks, escaping paths) to the reason."""

    job_id: str
    destination: Path
    files: list[ManifestEntry] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)
    refused: dict[str, str] = Field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)
