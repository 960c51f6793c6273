"""The durable journal of a reconciler: desired state and progress per key, in SQLite (WAL mode): the embedded
default. :class:`Journal` keeps the contract of :class:`~intercede.reconcile.journal_store.JournalStore` (shared with
the PostgreSQL journal, :mod:`intercede.reconcile.journal_postgres`); this module holds what is SQLite's own.

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
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path

from intercede.errors import JournalError
from intercede.reconcile.journal_rows import scrub_secrets, spec_to_json
from intercede.reconcile.journal_store import SQLJournal, Statements

__all__ = ["Journal", "scrub_secrets", "spec_to_json"]


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


class Journal(SQLJournal):
    """Durable desired state and progress of every key, in one SQLite file. See the module docstring for the
    guarantees.

    Raises :class:`JournalError` when the file cannot be created, opened, read or written, and ``KeyError`` when a
    ``record_*``/``set_phase`` names a key that was never declared (or was forgotten).
    """

    _db_errors = (sqlite3.Error,)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._conn: sqlite3.Connection | None = None
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

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    def _where(self) -> str:
        return str(self.path)

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
        self._ensure_schema()

    def _schema_version(self, db: Statements) -> int:
        version: int = db.execute("PRAGMA user_version").fetchone()[0]
        return version

    def _set_schema_version(self, db: Statements, version: int) -> None:
        db.execute(f"PRAGMA user_version = {int(version)}")

    def close(self) -> None:
        """Close the database and release the lock. Idempotent."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError(f"journal {self.path}: it is closed")
        return self._conn

    def _statements(self) -> Statements:
        return self._db

    def _error(self, what: str, exc: BaseException) -> JournalError:
        assert isinstance(exc, sqlite3.Error | OSError)
        return _journal_error(self.path, what, exc)

    @contextlib.contextmanager
    def _atomic(self, what: str) -> Iterator[Statements]:
        conn = self._db
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

    def _read(self, what: str) -> ContextManager[Statements]:
        # A read needs no transaction (nor the write lock BEGIN IMMEDIATE would take): WAL gives each statement a
        # consistent snapshot, and this process is the only writer.
        return self._reading(what)

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[Statements]:
        with self._translated(what):
            yield self._db

    def _wipe(self) -> None:
        # secure_delete already zeroed the deleted content in the pages; checkpointing and truncating the WAL drops
        # the copies the WAL still held.
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            raise _journal_error(self.path, "checkpoint the WAL", exc) from exc
