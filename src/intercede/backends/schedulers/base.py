"""The Scheduler seam: a batch system's dialect as pure argv builders and output parsers.

A :class:`Scheduler` never does I/O. :class:`~intercede.backends.batch.BatchBackend` owns every command and file
transfer: it stages a job's working directory (the job script ``job.sh`` there redirects stdout/stderr into the
directory and writes the exit status to ``.exitcode``), then asks the scheduler for argv and hands the
:class:`~intercede.backends.transports.CommandResult` back to the scheduler's parsers.

Parsers are total over the ids they are given: an id missing from the output is simply absent from the returned
mapping (the backend then consults history, then reports UNKNOWN after a grace period). Output that cannot be parsed
at all raises :class:`~intercede.errors.CommandError` naming the command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from intercede.backends.capabilities import LoadReport
from intercede.backends.transports.base import CommandResult
from intercede.model import JobState, Resources, Usage

__all__ = [
    "BatchJob", "BulkRequest", "BulkScheduler", "NativeStatus", "PurgingScheduler", "Scheduler", "SubmitRequest",
    "TagFileScheduler", "UsageScheduler",
]


@dataclass(frozen=True, slots=True)
class BatchJob:
    """A job known to a scheduler: its native id and the working directory intercede made for it."""

    native_id: str
    workdir: str


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """Everything a scheduler needs to submit one staged job."""

    script: str  # absolute path of job.sh on the resource
    workdir: str  # absolute path of the job's working directory (exists, holds the inputs)
    tag: str | None  # the idempotency tag to carry at the resource (job name, ClassAd attribute, ...)
    resources: Resources


@dataclass(frozen=True, slots=True)
class BulkRequest:
    """Everything a scheduler needs to submit ``count`` staged copies as ONE native bulk submission.

    Copy ``k`` of the submission (``k`` < ``count`` <= 10,000) works in ``workdirs[k]`` = ``<root>/<prefix><k:04d>``
    (its uid: the 12 hex digits of ``prefix``, then ``k`` as 4 decimal digits) and runs ``scripts[k]``; it is copy
    ``first + k`` of the spec and carries the tag ``<tag>.<first + k>`` (``tag`` is None for untagged specs).
    ``anchor`` is a directory that outlives every copy (``<root>/<prefix>ffff``, never a copy's uid), made only when
    the scheduler's :meth:`BulkScheduler.bulk_launcher` returns a script: the launcher is staged there as
    ``anchor/array.sh`` (it is the job array's working directory, and stays, empty but for the launcher).
    """

    root: str
    prefix: str
    first: int
    count: int
    tag: str | None
    resources: Resources
    workdirs: tuple[str, ...]
    scripts: tuple[str, ...]
    anchor: str

    @property
    def launcher(self) -> str:
        return f"{self.anchor}/array.sh"


@dataclass(frozen=True, slots=True)
class NativeStatus:
    """One job's state as the scheduler said it, mapped to :class:`~intercede.model.JobState`."""

    state: JobState
    native_state: str
    exit_code: int | None = None
    reason: str = ""


@runtime_checkable
class Scheduler(Protocol):
    """A batch system's dialect. Every method is pure."""

    name: str

    def submit_argv(self, request: SubmitRequest) -> list[str]:
        """The command that submits ``request.script``."""

    def parse_submit(self, result: CommandResult) -> str:
        """The native id from the submit command's output; :class:`~intercede.errors.CommandError` if refused."""

    def status_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        """One command reporting every job in ``jobs`` that is still in the queue."""

    def parse_status(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, NativeStatus]:
        """Native id -> status for the jobs the queue knows."""

    def history_argv(self, jobs: Sequence[BatchJob]) -> list[str] | None:
        """One command reporting finished jobs from accounting/history, or None if the scheduler keeps none."""

    def parse_history(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, NativeStatus]:
        """Native id -> final status for the jobs history knows."""

    def cancel_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        """One command cancelling every job in ``jobs``."""

    def parse_cancel(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, str]:
        """Native id -> error detail for each job the cancel did not reach; ids absent were cancelled."""

    def find_argvs(self, tags: Sequence[str]) -> list[list[str]]:
        """Commands listing jobs carrying any of ``tags`` (queue and history)."""

    def parse_find(self, results: Sequence[CommandResult], tags: Sequence[str]) -> dict[str, list[BatchJob]]:
        """Tag -> the jobs carrying it, from the results of :meth:`find_argvs` (in the same order)."""

    def load_argv(self) -> list[str] | None:
        """A command reporting capacity and queue counts, or None if the scheduler cannot say."""

    def parse_load(self, result: CommandResult) -> LoadReport:
        """The load figures from :meth:`load_argv`'s output."""


@runtime_checkable
class PurgingScheduler(Protocol):
    """A scheduler whose jobs' processes no batch system confines (Direct): purging a job must also end them.

    :class:`~intercede.backends.batch.BatchBackend` purges through :meth:`purge_argv` where the scheduler has it, and
    by removing the working directories otherwise (a batch system ends its own jobs' processes).
    """

    def purge_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        """One command that ends every process left of ``jobs`` and then removes their working directories."""


@runtime_checkable
class TagFileScheduler(Protocol):
    """A scheduler that keeps no names of its own for its jobs (Direct): :meth:`Scheduler.find_argvs` reads each
    job's tag from the ``.tag`` file in its working directory. Staging writes that file for these schedulers only
    (every other one carries the tag in the job's name or attributes): one file fewer per copy elsewhere. Only the
    attribute's presence is checked at run time, so its type admits True alone."""

    tag_file: Literal[True]


@runtime_checkable
class UsageScheduler(Protocol):
    """A scheduler that can say what finished jobs used (accounting): one command for many jobs, and its parser.

    :class:`~intercede.backends.batch.BatchBackend` asks it once for the jobs a status poll finds terminal and attaches
    the answer to their :class:`~intercede.model.JobStatus` (``usage``). A job the answer leaves out gets none.
    """

    def usage_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        """One command reporting the usage of the finished jobs among ``jobs``."""

    def parse_usage(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, Usage]:
        """Native id -> usage, for the finished jobs the command reported."""


@runtime_checkable
class BulkScheduler(Protocol):
    """A scheduler with a native bulk submission (a Slurm job array, an HTCondor cluster of ``queue N``, one Direct
    command starting every copy). :class:`~intercede.backends.batch.BatchBackend` submits a multi-copy spec through
    it in one command; the native ids it returns are per copy and work with every other method of the scheduler.
    ``bulk_max`` (<= 10,000) is the most copies one bulk submission may hold."""

    bulk_max: int

    def bulk_launcher(self, request: BulkRequest) -> str | None:
        """The text of a script staged as ``request.launcher`` (in ``request.anchor``), or None if none is needed."""

    def submit_bulk_argv(self, request: BulkRequest) -> list[str]:
        """The one command that submits every copy of ``request``."""

    def parse_submit_bulk(self, result: CommandResult, request: BulkRequest) -> Sequence[str | None]:
        """The native id of each copy, in index order, None for a copy the command says it did not start (the
        others did: Direct starts each copy on its own); :class:`~intercede.errors.CommandError` if the whole
        submission was refused, :class:`~intercede.errors.ConnectivityError` if it may have gone through."""
