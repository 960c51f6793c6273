"""The durable journal of a reconciler: desired state and progress per key, in SQLite (WAL mode).

Every public write is one transaction (or part of the one transaction of a :meth:`Journal.batch`): it either happens
whole or not at all, so a crash, a full disk or a read-only
file never leaves a half-written key. Progress is changed by reading the row, applying a pure
:class:`~intercede.reconcile.state.Progress` transition and writing the row back, inside that one transaction; each
``record_*`` method returns the new progress, so the caller's memory is exactly what is on disk.

**The file holds secrets, for as short a time as it can.** A spec's ``SecretStr`` values are stored *revealed*,
because a key resubmitted after a crash needs them. Once a key has a job id it is never submitted again, so its secrets
are scrubbed from the stored spec in the same transaction that records the job id (and forgetting a key deletes its
rows). With ``secure_delete`` on, SQLite zeroes what it deletes, and :meth:`Journal.wipe` (the executor calls it after
each plan) checkpoints the WAL and truncates it, so scrubbed or forgotten secrets are gone from the database file, its
free pages and its WAL. Until then the journal is created with mode 0600 (an existing journal readable by others is
tightened to 0600), SQLite gives its ``-wal``/``-shm`` files the same mode, and the directory should be private too.

One reconciler owns a journal: a second :class:`Journal` on the same path (in this or another process) is refused,
because two owners could both submit the same key. The lock is an advisory ``flock`` on ``<path>.lock``, released
when the journal is closed or the process dies.

Every :class:`sqlite3.Error` is raised as :class:`~intercede.errors.JournalError` saying what to do. Calls block the
event loop for one fsync; the journal is written once per step, not per poll (see ``Reconciler.observe``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from pydantic import SecretStr

from intercede.errors import InvalidSpecError, JournalError
from intercede.model import JobSpec, JobState, JobStatus, OutputManifest, Usage
from intercede.reconcile.state import Desired, Observation, Phase, Progress

__all__ = ["Journal"]

_SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS desired (
    key          TEXT PRIMARY KEY,
    ce           TEXT NOT NULL,
    spec         TEXT NOT NULL,   -- JobSpec as canonical JSON, secrets revealed
    phase        TEXT NOT NULL,
    destination  TEXT,
    scrubbed     INTEGER NOT NULL DEFAULT 0  -- 1 once the spec's secrets were blanked (the key has a job id)
);
CREATE TABLE IF NOT EXISTS progress (
    key              TEXT PRIMARY KEY REFERENCES desired(key),
    job_id           TEXT,
    submit_intent    INTEGER NOT NULL DEFAULT 0,
    submit_attempts  TEXT NOT NULL DEFAULT '[]',  -- JSON list of every attempt id journaled for the key
    state            TEXT,
    native_state     TEXT NOT NULL DEFAULT '',
    exit_code        INTEGER,
    reason           TEXT NOT NULL DEFAULT '',
    last_seen        REAL,
    cancel_sent_at   REAL,
    manifest         TEXT,        -- OutputManifest as JSON
    purged           INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL,
    last_error       TEXT,
    permanent_error  TEXT,
    state_since      REAL,        -- when state was first observed (per-state timeouts count from it)
    usage            TEXT,        -- Usage as JSON (what the resource says a finished job used)
    policy_reason    TEXT         -- why intercede ended the job itself (a per-state timeout, lost)
);
"""

# Each schema version's upgrade from the one before (a fresh journal gets _SCHEMA at once).
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE desired ADD COLUMN scrubbed INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE progress ADD COLUMN submit_attempts TEXT NOT NULL DEFAULT '[]'"),
    3: ("ALTER TABLE progress ADD COLUMN state_since REAL",
        "ALTER TABLE progress ADD COLUMN usage TEXT",
        "ALTER TABLE progress ADD COLUMN policy_reason TEXT"),
}

_PROGRESS_COLUMNS = (
    "job_id", "submit_intent", "submit_attempts", "state", "native_state", "exit_code", "reason", "last_seen",
    "cancel_sent_at", "manifest", "purged", "attempts", "next_attempt_at", "last_error", "permanent_error",
    "state_since", "usage", "policy_reason",
)
_SELECT_PROGRESS = f"SELECT {', '.join(_PROGRESS_COLUMNS)} FROM progress WHERE key = ?"  # noqa: S608 - constants
_UPDATE_PROGRESS = (
    f"UPDATE progress SET {', '.join(c + ' = ?' for c in _PROGRESS_COLUMNS)} WHERE key = ?"  # noqa: S608
)


# ---- (de)serialisation


def _reveal(python: Any, dumped: Any) -> Any:
    """``dumped`` (JSON mode, secrets masked) with each secret put back from the parallel ``python`` dump."""
    if isinstance(python, SecretStr):
        return python.get_secret_value()
    if isinstance(python, dict) and isinstance(dumped, dict):
        return {k: _reveal(python[k], v) for k, v in dumped.items()}
    if isinstance(python, list | tuple) and isinstance(dumped, list):
        return [_reveal(p, d) for p, d in zip(python, dumped, strict=True)]
    return dumped


def spec_to_json(spec: JobSpec) -> str:
    """Canonical JSON of a spec with its secrets revealed: equal specs give equal text."""
    revealed = _reveal(spec.model_dump(mode="python"), spec.model_dump(mode="json"))
    return json.dumps(revealed, sort_keys=True, separators=(",", ":"))


def scrub_secrets(text: str) -> str:
    """:func:`spec_to_json` text with every secret value blanked (the names stay)."""
    data = json.loads(text)
    for copy in data.get("copies", []):
        copy["secrets"] = dict.fromkeys(copy.get("secrets", {}), "")
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _progress_to_row(p: Progress) -> tuple[Any, ...]:
    return (
        p.job_id, int(p.submit_intent), json.dumps(list(p.submit_attempts)),
        p.state.value if p.state is not None else None, p.native_state,
        p.exit_code, p.reason, p.last_seen, p.cancel_sent_at,
        p.manifest.model_dump_json() if p.manifest is not None else None,
        int(p.purged), p.attempts, p.next_attempt_at, p.last_error, p.permanent_error,
        p.state_since, p.usage.model_dump_json() if p.usage is not None else None, p.policy_reason,
    )


def _progress_from_row(row: Sequence[Any]) -> Progress:
    (job_id, intent, submit_attempts, state, native, exit_code, reason, last_seen, cancel_sent_at, manifest, purged,
     attempts, next_attempt_at, last_error, permanent_error, state_since, usage, policy_reason) = row
    return Progress(
        job_id=job_id, submit_intent=bool(intent), submit_attempts=tuple(json.loads(submit_attempts)),
        state=JobState(state) if state is not None else None,
        native_state=native, exit_code=exit_code, reason=reason, last_seen=last_seen, cancel_sent_at=cancel_sent_at,
        manifest=OutputManifest.model_validate_json(manifest) if manifest is not None else None,
        purged=bool(purged), attempts=attempts, next_attempt_at=next_attempt_at, last_error=last_error,
        permanent_error=permanent_error, state_since=state_since,
        usage=Usage.model_validate_json(usage) if usage is not None else None, policy_reason=policy_reason,
    )


def _desired_from_row(key: str, ce: str, spec: str, phase: str, destination: str | None) -> Desired:
    return Desired(key, ce, JobSpec.model_validate_json(spec), Phase(phase),
                   Path(destination) if destination is not None else None)


def _observed(progress: Progress, *, status: JobStatus, at: float) -> Progress:
    return progress.with_observation(status, at)


# ---- errors


def _journal_error(path: Path, what: str, exc: sqlite3.Error | OSError) -> JournalError:
    name = getattr(exc, "sqlite_errorname", "") or ""
    errno_ = getattr(exc, "errno", None)
    if name.startswith("SQLITE_FULL") or errno_ == 28:
        advice = ("the disk (or the journal's size limit) is full; nothing was written. Free space on the filesystem "
                  "holding the journal and retry")
    elif name.startswith("SQLITE_READONLY") or errno_ in (13, 30):
        advice = "the journal is read-only; make the file, its -wal/-shm files and its directory writable by this user"
    elif name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        advice = ("the journal is corrupt or not a journal; move it aside (keep it for inspection) and restore a "
                  "backup. Starting on an empty journal forgets which keys were already submitted")
    elif name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        advice = "the journal is locked by another process; only one reconciler may own a journal"
    elif name.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")) or errno_ == 2:
        advice = "the journal cannot be opened; check that its directory exists and is writable by this user"
    elif name.startswith("SQLITE_IOERR") or isinstance(exc, OSError):
        advice = "the disk reported an I/O error; check the filesystem holding the journal"
    else:
        advice = "unexpected SQLite error"
    return JournalError(f"journal {path}: cannot {what}: {exc} ({name or type(exc).__name__}): {advice}")


class Journal:
    """Durable desired state and progress of every key. See the module docstring for the guarantees.

    Raises :class:`JournalError` when the file cannot be created, opened, read or written, and ``KeyError`` when a
    ``record_*``/``set_phase`` names a key that was never declared (or was forgotten).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._conn: sqlite3.Connection | None = None
        self._deleted = False  # secrets were scrubbed or rows deleted since the last wipe()
        self._batch_depth = 0  # > 0 inside batch(): writes join its one transaction
        try:
            self._create_private()
            self._lock()
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._configure()
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise _journal_error(self.path, "open", exc) from exc
        except BaseException:
            self.close()
            raise

    # ---- lifecycle

    def _create_private(self) -> None:
        # Created 0600 before SQLite sees it: SQLite would create it 0644, and it holds revealed secrets.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)

    def _lock(self) -> None:
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalError(
                f"journal {self.path}: already owned by another reconciler (lock {self.path}.lock is held); "
                "only one reconciler may own a journal: stop the other one or use another path"
            ) from None
        self._lock_fd = fd

    def _configure(self) -> None:
        conn = self._db
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(f"journal {self.path}: SQLite refused WAL mode ({mode}); put it on a local filesystem")
        # FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on power loss, and a lost submit intent is
        # a job submitted twice. One fsync per step is cheap next to a remote submit.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        # Deleted content (scrubbed secrets, forgotten keys) is overwritten with zeros, not left in free space.
        conn.execute("PRAGMA secure_delete=ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise JournalError(f"journal {self.path}: schema version {version} is newer than this intercede "
                               f"({_SCHEMA_VERSION}); upgrade intercede")
        if version < _SCHEMA_VERSION:
            with self._transaction("create the schema"):
                # Not executescript: it COMMITs first, which would split the schema over transactions.
                if version == 0:
                    for statement in filter(str.strip, _SCHEMA.split(";")):
                        conn.execute(statement)
                else:
                    for step in range(version + 1, _SCHEMA_VERSION + 1):
                        for statement in _MIGRATIONS[step]:
                            conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the database and release the lock. Idempotent."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError(f"journal {self.path}: it is closed")
        return self._conn

    @contextlib.contextmanager
    def batch(self, what: str = "write a batch") -> Iterator[None]:
        """Group every write made inside the block into one transaction (one fsync): all of them are on disk when the
        block exits normally, none of them if it raises (the exception propagates). Writes inside a batch return the
        new progress as usual, but it is durable only once the block exits. Batches do not nest (a nested ``batch``
        joins the outer one)."""
        if self._batch_depth:
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1
            return
        with self._transaction(what):
            self._batch_depth = 1
            try:
                yield
            finally:
                self._batch_depth = 0

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        conn = self._db
        if self._batch_depth:  # inside batch(): the batch's one transaction commits or rolls back everything
            try:
                yield conn
            except sqlite3.Error as exc:
                raise _journal_error(self.path, what, exc) from exc
            return
        try:
            # IMMEDIATE takes the write lock up front, so a read-then-write cannot be interleaved.
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise _journal_error(self.path, what, exc) from exc
            raise

    # ---- desired state

    def declare(self, desired: Desired) -> Desired:
        """Record a key's declaration, with an empty progress. Idempotent: declaring the same key again with the same
        CE and spec changes nothing and returns the stored declaration (its phase may have moved on since). Raises
        :class:`InvalidSpecError` naming the key if it is already declared with a different CE or spec."""
        text = spec_to_json(desired.spec)
        with self._transaction(f"declare {desired.key!r}") as conn:
            row = conn.execute("SELECT ce, spec, phase, destination, scrubbed FROM desired WHERE key = ?",
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
                return _desired_from_row(desired.key, ce, spec, phase, destination)
            conn.execute(
                "INSERT INTO desired (key, ce, spec, phase, destination) VALUES (?, ?, ?, ?, ?)",
                (desired.key, desired.ce, text, desired.phase.value,
                 str(desired.destination) if desired.destination is not None else None),
            )
            conn.execute("INSERT INTO progress (key) VALUES (?)", (desired.key,))
        return desired

    def set_phase(self, key: str, phase: Phase, destination: Path | None = None) -> Desired:
        """Change the wanted phase (and destination, for COLLECTED); returns the new declaration."""
        with self._transaction(f"set the phase of {key!r}") as conn:
            row = conn.execute("SELECT ce, spec, phase, destination FROM desired WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise KeyError(key)
            new = _desired_from_row(key, *row).with_phase(phase, destination)
            conn.execute("UPDATE desired SET phase = ?, destination = ? WHERE key = ?",
                         (new.phase.value, str(new.destination) if new.destination is not None else None, key))
        return new

    def forget(self, key: str) -> None:
        """Drop a key and its progress (its secrets too, for good at the next :meth:`wipe`). Idempotent."""
        with self._transaction(f"forget {key!r}") as conn:
            conn.execute("DELETE FROM progress WHERE key = ?", (key,))
            conn.execute("DELETE FROM desired WHERE key = ?", (key,))
        self._deleted = True

    def wipe(self) -> None:
        """Make deleted data unrecoverable from the files: checkpoint the WAL into the database and truncate it
        (``secure_delete`` already zeroed the deleted content in the pages). Cheap when nothing was deleted."""
        if not self._deleted:
            return
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            raise _journal_error(self.path, "checkpoint the WAL", exc) from exc
        self._deleted = False

    @staticmethod
    def _scrub_in(conn: sqlite3.Connection, key: str) -> bool:
        """Blank the stored secrets of ``key``; whether anything changed."""
        row = conn.execute("SELECT spec, scrubbed FROM desired WHERE key = ?", (key,)).fetchone()
        if row is None or row[1]:
            return False
        original: str = row[0]
        scrubbed = scrub_secrets(original)
        conn.execute("UPDATE desired SET spec = ?, scrubbed = 1 WHERE key = ?", (scrubbed, key))
        return scrubbed != original

    # ---- progress

    def _update(self, key: str, what: str, change: Callable[[Progress], Progress]) -> Progress:
        with self._transaction(f"{what} for {key!r}") as conn:
            new = self._update_in(conn, key, change)
        return new

    @staticmethod
    def _update_in(conn: sqlite3.Connection, key: str, change: Callable[[Progress], Progress]) -> Progress:
        row = conn.execute(_SELECT_PROGRESS, (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        new = change(_progress_from_row(row))
        conn.execute(_UPDATE_PROGRESS, (*_progress_to_row(new), key))
        return new

    def progress(self, key: str) -> Progress:
        """The recorded progress of one key."""
        try:
            row = self._db.execute(_SELECT_PROGRESS, (key,)).fetchone()
        except sqlite3.Error as exc:
            raise _journal_error(self.path, f"read {key!r}", exc) from exc
        if row is None:
            raise KeyError(key)
        return _progress_from_row(row)

    def record_submit_intent(self, key: str, attempt: str | None = None) -> Progress:
        """Written *before* the submit: from now on the key is adopted, never submitted again. ``attempt`` (the id
        the submit carries to the resource) is added to the key's attempts."""
        return self._update(key, "record a submit intent", lambda p: p.with_submit_intent(attempt))

    def clear_submit_intent(self, key: str) -> Progress:
        """Adopt found no job carrying the key's tag (or the CE refused the submit): the key may be submitted."""
        return self._update(key, "clear a submit intent", Progress.without_submit_intent)

    def record_job_id(self, key: str, job_id: str) -> Progress:
        """The key's job is known: it is never submitted again, so its secrets are scrubbed in the same step."""
        with self._transaction(f"record a job id for {key!r}") as conn:
            new = self._update_in(conn, key, lambda p: p.with_job_id(job_id))
            scrubbed = self._scrub_in(conn, key)
        self._deleted = self._deleted or scrubbed
        return new

    def record_observation(self, key: str, status: JobStatus, seen_at: float | None = None) -> Progress:
        """Fold one status report into a key's progress (never backwards; see ``Progress.with_observation``).
        ``seen_at`` defaults to the report's ``observed_at``."""
        at = seen_at if seen_at is not None else status.observed_at.timestamp()
        return self._update(key, "record an observation", lambda p: p.with_observation(status, at))

    def record_observations(self, observations: Sequence[Observation], seen_at: float) -> dict[str, Progress]:
        """Fold many status reports in one transaction (one fsync per poll, not per job)."""
        result: dict[str, Progress] = {}
        with self._transaction(f"record {len(observations)} observations") as conn:
            for obs in observations:
                result[obs.key] = self._update_in(conn, obs.key, partial(_observed, status=obs.status, at=seen_at))
        return result

    def record_cancel_sent(self, key: str, at: float, reason: str = "") -> Progress:
        """A cancel was sent; ``reason`` is a per-state timeout's (kept as the key's policy reason)."""
        return self._update(key, "record a cancel", lambda p: p.with_cancel_sent(at, reason))

    def record_lost(self, key: str, reason: str, at: float) -> Progress:
        """The key's job stayed unknown past the grace: its final state is recorded as lost, with ``reason``."""
        return self._update(key, "record a lost job", lambda p: p.with_lost(reason, at))

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
        try:
            conn = self._db
            desired = {
                row[0]: _desired_from_row(*row)
                for row in conn.execute("SELECT key, ce, spec, phase, destination FROM desired ORDER BY key")
            }
            progress = {
                row[0]: _progress_from_row(row[1:])
                for row in conn.execute(f"SELECT key, {', '.join(_PROGRESS_COLUMNS)} FROM progress")  # noqa: S608
            }
        except sqlite3.Error as exc:
            raise _journal_error(self.path, "load", exc) from exc
        return desired, progress
