"""What the WMS wants per job key, what has been done about it, and the actions that close the gap. Pure data.

* :class:`Desired` is the WMS's word for one key: the spec, the CE, the wanted :class:`Phase`.
* :class:`Progress` is the durable record of what the reconciler did and saw for that key. It changes only through
  its ``with_*`` transitions, which the journal applies inside one transaction and the property tests reuse as the
  model of a successful action.
* :class:`Submit`, :class:`Adopt`, :class:`Cancel`, :class:`Fetch`, :class:`Purge`, :class:`Forget` are the actions
  :func:`~intercede.reconcile.diff.diff` plans.

A job key is also the tag carried at the resource (``JobSpec.tag``), so a key follows the tag's rule: 1-128 characters
of ``[A-Za-z0-9._:-]``, starting alphanumeric. A key is exactly one job: its spec has one copy.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from intercede.errors import InvalidSpecError
from intercede.model import JobSpec, JobState, JobStatus, OutputManifest, Usage

__all__ = [
    "Action",
    "Adopt",
    "Cancel",
    "DeclareLost",
    "Desired",
    "Fetch",
    "Forget",
    "Observation",
    "Phase",
    "Progress",
    "Purge",
    "Reachability",
    "Submit",
    "validate_key",
]

# JobState.is_terminal as a set: the diff asks it for every dirty key, and the property costs an enum lookup per call.
_TERMINAL = frozenset(state for state in JobState if state.is_terminal)

# Same rule as JobSpec.tag: the key travels to the resource as the job's tag.
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")


def validate_key(key: str) -> str:
    """Return ``key`` if it can serve as a resource tag, else raise :class:`InvalidSpecError` naming it."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise InvalidSpecError(f"job key {key!r}: keys are 1-128 characters of [A-Za-z0-9._:-], starting alphanumeric")
    return key


class Phase(enum.StrEnum):
    """The phase the WMS wants a key in.

    * RUNNING: a job exists at the CE (submitted once, or adopted after a crash).
    * CANCELLED: no job runs. A job that exists is cancelled; a key never submitted is not submitted. Once the job
      has ended its remote files are kept ``RetryPolicy.purge_cancelled_after`` seconds after the cancel (a collect
      may still fetch them), then purged.
    * COLLECTED: the job runs to a terminal state, its outputs are fetched to ``destination`` and verified, then the
      remote job is purged.
    * FORGOTTEN: a running job is cancelled, a job that exists is purged, then the key is dropped from the journal.
      Final: a forgotten key cannot be moved to another phase.
    """

    RUNNING = "running"
    CANCELLED = "cancelled"
    COLLECTED = "collected"
    FORGOTTEN = "forgotten"


@dataclass(frozen=True, slots=True)
class Desired:
    """The WMS's declaration for one key. Raises :class:`InvalidSpecError` for a bad key, an empty CE name, a
    multi-copy spec, or a COLLECTED phase without an absolute ``destination``."""

    key: str
    ce: str
    spec: JobSpec
    phase: Phase = Phase.RUNNING
    destination: Path | None = None

    def __post_init__(self) -> None:
        validate_key(self.key)
        if not self.ce:
            raise InvalidSpecError(f"job key {self.key!r}: the CE name is empty")
        if len(self.spec.copies) != 1:
            # One key is one job at the resource; the tag (= key) could not tell copies apart.
            raise InvalidSpecError(
                f"job key {self.key!r}: a reconciled job has exactly one copy, got {len(self.spec.copies)}; "
                "declare one key per copy"
            )
        if self.destination is not None and not self.destination.is_absolute():
            # The reconciler may run in another working directory than the caller.
            raise InvalidSpecError(f"job key {self.key!r}: destination must be absolute, got {self.destination}")
        if self.phase is Phase.COLLECTED and self.destination is None:
            raise InvalidSpecError(f"job key {self.key!r}: collecting outputs needs a destination directory")

    def submission(self, attempt: str | None = None) -> JobSpec:
        """The spec as submitted: tagged with the key, so the job can be found again after a crash, and carrying
        ``attempt`` (the journaled id of this submit attempt), so that a job found by the tag can be proven ours."""
        if self.spec.tag == self.key and self.spec.attempt == attempt:
            return self.spec
        return self.spec.model_copy(update={"tag": self.key, "attempt": attempt})

    def with_phase(self, phase: Phase, destination: Path | None = None) -> Desired:
        """The same declaration in another phase (validated again)."""
        return Desired(self.key, self.ce, self.spec, phase,
                       destination if destination is not None else self.destination)


@dataclass(frozen=True, slots=True)
class Progress:
    """The durable record of what was done and seen for one key.

    ``submit_intent`` is written before any submit side effect: an intent without a ``job_id`` means a submit may have
    reached the resource, so the key must be *adopted* (looked up by tag), never submitted again. ``state`` and the
    native details are the last observation (``state`` never moves backwards; a terminal observation is final).
    ``attempts`` counts consecutive failures of the current step; ``next_attempt_at`` (epoch seconds) holds the next
    step back. ``permanent_error`` stops every further action for the key and is surfaced to the WMS.

    ``submit_attempts`` lists, in order, the id of every submit attempt ever journaled for the key (each submit gets
    a new one, written with the intent before the submit): a job found by the key's tag is the key's own only if it
    carries one of them. Empty for a key journaled before attempt ids existed.

    ``state_since`` is when ``state`` was first observed (per-state timeouts count from it); ``usage`` is what the
    resource reported the finished job used; ``policy_reason`` says why intercede itself ended the job (a per-state
    timeout cancelled it, or it was declared lost).
    """

    job_id: str | None = None
    submit_intent: bool = False
    submit_attempts: tuple[str, ...] = ()
    state: JobState | None = None
    native_state: str = ""
    exit_code: int | None = None
    reason: str = ""
    last_seen: float | None = None
    cancel_sent_at: float | None = None
    manifest: OutputManifest | None = None
    purged: bool = False
    attempts: int = 0
    next_attempt_at: float | None = None
    last_error: str | None = None
    permanent_error: str | None = None
    state_since: float | None = None
    usage: Usage | None = None
    policy_reason: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in _TERMINAL

    def same_observation(self, other: Progress) -> bool:
        """Whether ``other`` saw the same thing (ignoring when): nothing worth journaling changed."""
        return (self.state, self.native_state, self.exit_code, self.reason, self.usage) == (
            other.state, other.native_state, other.exit_code, other.reason, other.usage)

    # Transitions. A step that moves the key forward clears the failure count; a failure raises it. Losing the
    # intent (Adopt found nothing) is not progress: keeping ``attempts`` lets backoff grow across submit retries.

    def _advanced(self, **changes: object) -> Progress:
        return replace(self, attempts=0, next_attempt_at=None, last_error=None, **changes)  # type: ignore[arg-type]

    def with_submit_intent(self, attempt: str | None = None) -> Progress:
        attempts = self.submit_attempts if attempt is None or attempt in self.submit_attempts \
            else (*self.submit_attempts, attempt)
        return replace(self, submit_intent=True, submit_attempts=attempts)

    def without_submit_intent(self) -> Progress:
        return replace(self, submit_intent=False)

    def with_job_id(self, job_id: str) -> Progress:
        return self._advanced(job_id=job_id, submit_intent=True)

    def with_observation(self, status: JobStatus, seen_at: float) -> Progress:
        """Fold in one status report. A terminal state is final; a backwards report only refreshes ``last_seen``."""
        if self.terminal:
            if self.usage is None and status.usage is not None and status.state is self.state:
                return replace(self, usage=status.usage, last_seen=seen_at)  # accounting may answer late
            return replace(self, last_seen=seen_at)
        new_state = status.state if self.state is None else self.state.advance(status.state)
        if new_state is not status.state:
            # The report was older than what we know (or came after the end): keep the details that match ``state``.
            return replace(self, last_seen=seen_at)
        since = self.state_since if new_state is self.state and self.state_since is not None else seen_at
        return replace(self, state=new_state, native_state=status.native_state, exit_code=status.exit_code,
                       reason=status.reason, last_seen=seen_at, state_since=since,
                       usage=status.usage if status.usage is not None else self.usage)

    def with_cancel_sent(self, at: float, reason: str = "") -> Progress:
        """A cancel was sent at ``at``; ``reason`` (a per-state timeout's) is kept as the policy reason."""
        if reason:
            return self._advanced(cancel_sent_at=at, policy_reason=reason)
        return self._advanced(cancel_sent_at=at)

    def with_lost(self, reason: str, at: float) -> Progress:
        """The job was unknown past the grace: final (ABORTED, native state ``Lost``), with ``reason``."""
        return self._advanced(state=JobState.ABORTED, native_state="Lost", reason=reason, policy_reason=reason,
                              state_since=at)

    def with_manifest(self, manifest: OutputManifest) -> Progress:
        return self._advanced(manifest=manifest)

    def with_purged(self) -> Progress:
        return self._advanced(purged=True)

    def with_error(self, error: str, *, permanent: bool, next_attempt_at: float | None, attempts: int,
                   clear_submit_intent: bool = False) -> Progress:
        return replace(
            self,
            last_error=error,
            permanent_error=error if permanent else None,
            next_attempt_at=None if permanent else next_attempt_at,
            attempts=attempts,
            submit_intent=False if clear_submit_intent else self.submit_intent,
        )


@dataclass(frozen=True, slots=True)
class Observation:
    """A status report already resolved to its key (the CE reported it under ``status.job_id``)."""

    key: str
    status: JobStatus


Reachability = Mapping[str, bool]
"""Per-CE reachability: a CE mapped to False gets no action (and none of its jobs is failed); absent means reachable."""


@dataclass(frozen=True, slots=True)
class Submit:
    """Submit the key's spec (tagged with the key). Planned only when no submit intent was ever journaled."""

    key: str


@dataclass(frozen=True, slots=True)
class Adopt:
    """A submit intent exists but no job id: look the tag up at the CE before ever submitting again."""

    key: str


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel a job that is not terminal yet; ``reason`` is set when a per-state timeout asks for it."""

    key: str
    job_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DeclareLost:
    """Record that a job unknown at its CE past the grace is lost (a final state with ``reason``)."""

    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class Fetch:
    """Fetch a terminal job's outputs into ``destination``, verify them, record the manifest."""

    key: str
    job_id: str
    destination: Path


@dataclass(frozen=True, slots=True)
class Purge:
    """Remove what a terminal job left at the CE (after its outputs, if wanted, were recorded)."""

    key: str
    job_id: str


@dataclass(frozen=True, slots=True)
class Forget:
    """Drop the key from the journal: nothing is left of it at the CE."""

    key: str


Action = Submit | Adopt | Cancel | Fetch | Purge | Forget | DeclareLost
