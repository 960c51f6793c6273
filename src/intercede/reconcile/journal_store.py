"""What a journal is (:class:`JournalStore`) and the one implementation of it over a SQL connection
(:class:`SQLJournal`), which the SQLite and PostgreSQL journals specialise with their connection, transactions, lock
and error advice.

The contract every journal keeps (the reconciler and executor rely on nothing else):

* **One transaction per public write**, or one for every write inside a :meth:`JournalStore.batch`: it happens whole
  or not at all, whatever fails (a full disk, a read-only file, a server stopped or a connection cut mid-batch).
* Each ``record_*`` returns the new progress, computed by a pure :class:`~intercede.reconcile.state.Progress`
  transition from the stored row inside that transaction, so the caller's memory is what is stored.
* **One owner**: a second journal on the same store (this process or another, this node or another) is refused with
  a :class:`~intercede.errors.JournalError`, because two owners could both submit the same key. The claim ends when
  the owner closes the journal or dies.
* Secrets are stored revealed while a key may still be submitted and scrubbed in the transaction that records its job
  id; :meth:`JournalStore.wipe` then makes scrubbed and forgotten content unreachable (how far depends on the store).
* Every failure of the store is a :class:`~intercede.errors.JournalError` saying what to do; ``KeyError`` names a key
  that was never declared; :class:`~intercede.errors.InvalidSpecError` a conflicting declaration.
* The schema is versioned: an older journal is upgraded in place in one transaction, a newer one is refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager as ContextManager
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from intercede.errors import InvalidSpecError, JournalError
from intercede.model import JobStatus, OutputManifest
from intercede.reconcile.journal_rows import (
    MIGRATIONS,
    PROGRESS_COLUMNS,
    SCHEMA_VERSION,
    SELECT_PROGRESS,
    UPDATE_PROGRESS,
    desired_from_row,
    observed,
    progress_from_row,
    progress_to_row,
    schema_statements,
    scrub_secrets,
    spec_to_json,
)
from intercede.reconcile.state import Desired, Observation, Phase, Progress

__all__ = ["JournalStore", "SQLJournal", "Statements"]


@runtime_checkable
class JournalStore(Protocol):
    """Durable desired state and progress of every key; see the module docstring for what every journal promises."""

    def declare(self, desired: Desired) -> Desired: ...
    def set_phase(self, key: str, phase: Phase, destination: Path | None = None) -> Desired: ...
    def forget(self, key: str) -> None: ...
    def wipe(self) -> None: ...
    def progress(self, key: str) -> Progress: ...
    def record_submit_intent(self, key: str, attempt: str | None = None) -> Progress: ...
    def clear_submit_intent(self, key: str) -> Progress: ...
    def record_job_id(self, key: str, job_id: str) -> Progress: ...
    def record_observation(self, key: str, status: JobStatus, seen_at: float | None = None) -> Progress: ...
    def record_observations(self, observations: Sequence[Observation], seen_at: float) -> dict[str, Progress]: ...
    def record_cancel_sent(self, key: str, at: float) -> Progress: ...
    def record_manifest(self, key: str, manifest: OutputManifest) -> Progress: ...
    def record_purged(self, key: str) -> Progress: ...
    def record_error(self, key: str, error_text: str, *, permanent: bool, next_attempt_at: float | None,
                     attempts: int, clear_submit_intent: bool = False) -> Progress: ...
    def load(self) -> tuple[dict[str, Desired], dict[str, Progress]]: ...
    def batch(self, what: str = "write a batch") -> ContextManager[None]: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class Rows(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Statements(Protocol):
    """Runs one SQL statement (``?`` placeholders) on the journal's connection."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Rows: ...


class SQLJournal:
    """Every :class:`JournalStore` method, written once over :class:`Statements`. A backend provides:

    * :meth:`_atomic` — one real transaction: BEGIN, yield the statements, COMMIT; ROLLBACK and re-raise on any
      exception, database errors translated by :meth:`_error`;
    * :meth:`_statements` — the statements outside a transaction of its own (inside a batch, or to read);
    * :attr:`_db_errors` and :meth:`_error` — which exceptions are the store's and the advice for each;
    * :meth:`_schema_version` / :meth:`_set_schema_version`, :attr:`_real_type`, :meth:`_wipe` and :meth:`close`.
    """

    _db_errors: tuple[type[BaseException], ...] = ()
    _real_type = "REAL"

    def __init__(self) -> None:
        self._deleted = False  # secrets were scrubbed or rows deleted since the last wipe()
        self._batch_depth = 0  # > 0 inside batch(): writes join its one transaction

    # ---- what a backend provides

    def _atomic(self, what: str) -> ContextManager[Statements]:
        raise NotImplementedError

    def _statements(self) -> Statements:
        raise NotImplementedError

    def _error(self, what: str, exc: BaseException) -> JournalError:
        raise NotImplementedError

    def _schema_version(self, db: Statements) -> int:
        raise NotImplementedError

    def _set_schema_version(self, db: Statements, version: int) -> None:
        raise NotImplementedError

    def _wipe(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _where(self) -> str:
        """How messages name this journal."""
        raise NotImplementedError

    # ---- lifecycle

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _ensure_schema(self) -> None:
        """Create or upgrade the tables in one transaction; refuse a journal written by a newer intercede."""
        with self._read("read the schema version") as db:
            version = self._schema_version(db)
        if version > SCHEMA_VERSION:
            raise JournalError(f"journal {self._where()}: schema version {version} is newer than this intercede "
                               f"({SCHEMA_VERSION}); upgrade intercede")
        if version < SCHEMA_VERSION:
            with self._atomic("create the schema") as db:
                steps = ([schema_statements(self._real_type)] if version == 0 else
                         [list(MIGRATIONS[step]) for step in range(version + 1, SCHEMA_VERSION + 1)])
                for statements in steps:
                    for statement in statements:
                        db.execute(statement)
                self._set_schema_version(db, SCHEMA_VERSION)

    @contextlib.contextmanager
    def batch(self, what: str = "write a batch") -> Iterator[None]:
        """Group every write made inside the block into one transaction: all of them are stored when the block exits
        normally, none of them if it raises (the exception propagates). Writes inside a batch return the new progress
        as usual, but it is durable only once the block exits. Batches do not nest (a nested ``batch`` joins the
        outer one)."""
        if self._batch_depth:
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1
            return
        with self._atomic(what):
            self._batch_depth = 1
            try:
                yield
            finally:
                self._batch_depth = 0

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._db_errors as exc:
            raise self._error(what, exc) from exc

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[Statements]:
        if self._batch_depth:  # inside batch(): the batch's one transaction commits or rolls back everything
            with self._translated(what):
                yield self._statements()
            return
        with self._atomic(what) as db:
            yield db

    def _read(self, what: str) -> ContextManager[Statements]:
        """Statements for reads; a backend whose reads need a transaction of their own overrides this."""
        return self._transaction(what)

    # ---- desired state

    def declare(self, desired: Desired) -> Desired:
        """Record a key's declaration, with an empty progress. Idempotent: declaring the same key again with the same
        CE and spec changes nothing and returns the stored declaration (its phase may have moved on since). Raises
        :class:`InvalidSpecError` naming the key if it is already declared with a different CE or spec."""
        text = spec_to_json(desired.spec)
        with self._transaction(f"declare {desired.key!r}") as db:
            row = db.execute("SELECT ce, spec, phase, destination, scrubbed FROM desired WHERE key = ?",
                             (desired.key,)).fetchone()
            if row is not None:
                ce, spec, phase, destination, scrubbed = row
                if ce != desired.ce:
                    raise InvalidSpecError(f"job key {desired.key!r} is already declared on CE {ce!r}, "
                                           f"not {desired.ce!r}")
                # A scrubbed spec kept only its secrets' names: the same declaration is the same spec but for them
                # (the job runs with the secrets it was submitted with whatever is declared now).
                if spec != (scrub_secrets(text) if scrubbed else text):
                    raise InvalidSpecError(f"job key {desired.key!r} is already declared with a different spec")
                return desired_from_row(desired.key, ce, spec, phase, destination)
            db.execute(
                "INSERT INTO desired (key, ce, spec, phase, destination) VALUES (?, ?, ?, ?, ?)",
                (desired.key, desired.ce, text, desired.phase.value,
                 str(desired.destination) if desired.destination is not None else None),
            )
            db.execute("INSERT INTO progress (key) VALUES (?)", (desired.key,))
        return desired

    def set_phase(self, key: str, phase: Phase, destination: Path | None = None) -> Desired:
        """Change the wanted phase (and destination, for COLLECTED); returns the new declaration."""
        with self._transaction(f"set the phase of {key!r}") as db:
            row = db.execute("SELECT ce, spec, phase, destination FROM desired WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise KeyError(key)
            new = desired_from_row(key, *row).with_phase(phase, destination)
            db.execute("UPDATE desired SET phase = ?, destination = ? WHERE key = ?",
                       (new.phase.value, str(new.destination) if new.destination is not None else None, key))
        return new

    def forget(self, key: str) -> None:
        """Drop a key and its progress (its secrets too, for good at the next :meth:`wipe`). Idempotent."""
        with self._transaction(f"forget {key!r}") as db:
            db.execute("DELETE FROM progress WHERE key = ?", (key,))
            db.execute("DELETE FROM desired WHERE key = ?", (key,))
        self._deleted = True

    def wipe(self) -> None:
        """Make scrubbed secrets and forgotten keys unrecoverable as far as the store allows (the executor calls it
        after each plan). Cheap when nothing was deleted since the last wipe."""
        if not self._deleted:
            return
        self._wipe()
        self._deleted = False

    @staticmethod
    def _scrub_in(db: Statements, key: str) -> bool:
        """Blank the stored secrets of ``key``; whether anything changed."""
        row = db.execute("SELECT spec, scrubbed FROM desired WHERE key = ?", (key,)).fetchone()
        if row is None or row[1]:
            return False
        original: str = row[0]
        scrubbed = scrub_secrets(original)
        db.execute("UPDATE desired SET spec = ?, scrubbed = 1 WHERE key = ?", (scrubbed, key))
        return scrubbed != original

    # ---- progress

    def _update(self, key: str, what: str, change: Callable[[Progress], Progress]) -> Progress:
        with self._transaction(f"{what} for {key!r}") as db:
            new = self._update_in(db, key, change)
        return new

    @staticmethod
    def _update_in(db: Statements, key: str, change: Callable[[Progress], Progress]) -> Progress:
        row = db.execute(SELECT_PROGRESS, (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        new = change(progress_from_row(row))
        db.execute(UPDATE_PROGRESS, (*progress_to_row(new), key))
        return new

    def progress(self, key: str) -> Progress:
        """The recorded progress of one key."""
        with self._read(f"read {key!r}") as db:
            row = db.execute(SELECT_PROGRESS, (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return progress_from_row(row)

    def record_submit_intent(self, key: str, attempt: str | None = None) -> Progress:
        """Written *before* the submit: from now on the key is adopted, never submitted again. ``attempt`` (the id
        the submit carries to the resource) is added to the key's attempts."""
        return self._update(key, "record a submit intent", lambda p: p.with_submit_intent(attempt))

    def clear_submit_intent(self, key: str) -> Progress:
        """Adopt found no job carrying the key's tag (or the CE refused the submit): the key may be submitted."""
        return self._update(key, "clear a submit intent", Progress.without_submit_intent)

    def record_job_id(self, key: str, job_id: str) -> Progress:
        """The key's job is known: it is never submitted again, so its secrets are scrubbed in the same step."""
        with self._transaction(f"record a job id for {key!r}") as db:
            new = self._update_in(db, key, lambda p: p.with_job_id(job_id))
            scrubbed = self._scrub_in(db, key)
        self._deleted = self._deleted or scrubbed
        return new

    def record_observation(self, key: str, status: JobStatus, seen_at: float | None = None) -> Progress:
        """Fold one status report into a key's progress (never backwards; see ``Progress.with_observation``).
        ``seen_at`` defaults to the report's ``observed_at``."""
        at = seen_at if seen_at is not None else status.observed_at.timestamp()
        return self._update(key, "record an observation", lambda p: p.with_observation(status, at))

    def record_observations(self, observations: Sequence[Observation], seen_at: float) -> dict[str, Progress]:
        """Fold many status reports in one transaction (one commit per poll, not per job)."""
        result: dict[str, Progress] = {}
        with self._transaction(f"record {len(observations)} observations") as db:
            for obs in observations:
                result[obs.key] = self._update_in(db, obs.key, partial(observed, status=obs.status, at=seen_at))
        return result

    def record_cancel_sent(self, key: str, at: float) -> Progress:
        return self._update(key, "record a cancel", lambda p: p.with_cancel_sent(at))

    def record_manifest(self, key: str, manifest: OutputManifest) -> Progress:
        """Written only after the fetched files were verified under the destination."""
        return self._update(key, "record a manifest", lambda p: p.with_manifest(manifest))

    def record_purged(self, key: str) -> Progress:
        return self._update(key, "record a purge", Progress.with_purged)

    def record_error(self, key: str, error_text: str, *, permanent: bool, next_attempt_at: float | None,
                     attempts: int, clear_submit_intent: bool = False) -> Progress:
        """Record a failed step: a temporary one backs off until ``next_attempt_at``; a permanent one stops the key.
        ``clear_submit_intent`` is for a submit the CE refused outright (it created no job)."""
        return self._update(key, "record an error", lambda p: p.with_error(
            error_text, permanent=permanent, next_attempt_at=next_attempt_at, attempts=attempts,
            clear_submit_intent=clear_submit_intent))

    # ---- restart

    def load(self) -> tuple[dict[str, Desired], dict[str, Progress]]:
        """Everything, for a restarting reconciler: declarations and progress by key."""
        with self._read("load") as db:
            desired = {
                row[0]: desired_from_row(*row)
                for row in db.execute("SELECT key, ce, spec, phase, destination FROM desired ORDER BY key").fetchall()
            }
            progress = {
                row[0]: progress_from_row(row[1:])
                for row in db.execute(
                    f"SELECT key, {', '.join(PROGRESS_COLUMNS)} FROM progress").fetchall()  # noqa: S608
            }
        return desired, progress
