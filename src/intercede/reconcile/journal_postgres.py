"""The journal on a PostgreSQL server, so that a reconciler can restart on any node of a cluster.

:class:`PostgresJournal` keeps the contract of :class:`~intercede.reconcile.journal_store.JournalStore` (the same
code as the SQLite journal writes the same rows, :class:`~intercede.reconcile.journal_store.SQLJournal`); this module
holds what is PostgreSQL's own:

* **Where**: a libpq connection string, ``postgresql://user@host:port/dbname`` (or ``key=value`` pairs), naming a
  database for the journal alone: it creates the tables ``desired``, ``progress`` and ``journal_meta`` (the schema
  version) there at the first open, in one transaction, and upgrades them in place later.
* **The password never travels in the string**: give libpq a password file (``passfile=``, else ``PGPASSFILE``, else
  ``~/.pgpass``; libpq's format, mode 0600). A password in the string still works, but it is redacted from every
  message, log line and repr, which name the journal as ``postgresql://user@host:port/dbname``.
* **One transaction per public write** (or per :meth:`~PostgresJournal.batch`): ``BEGIN`` ... ``COMMIT`` on one
  connection; any failure, a failing statement or a connection cut or a server stopped mid-batch, rolls everything
  back on the server. A connection lost *at* ``COMMIT`` leaves that one write's outcome unknown to this process (the
  server knows): the error says so, and the caller's next step rereads nothing from memory it did not get back.
* **One owner**: the owning session holds a session-level advisory lock (``pg_try_advisory_lock``) on a key fixed for
  intercede's journal, in that database. A second journal on the same database, from any process on any node, is
  refused naming the holder; the server releases the lock when the owner closes the journal or its session ends
  (its process died, its connection was cut). Every write goes through the session that holds the lock.
* **Reconnects**: after the connection is lost (server restarted, network cut), the next call opens a new session
  and takes the lock again, so the reconciler's loop resumes by itself; if another owner took the journal meanwhile,
  every call is refused.
* **Secrets**: scrubbed in the transaction that records the job id, as with SQLite. PostgreSQL keeps old row
  versions until they are vacuumed, and has no ``secure_delete``: :meth:`~PostgresJournal.wipe` vacuums the tables,
  so scrubbed and forgotten content is unreachable through SQL at once and its space is reused, but its bytes may stay
  in the server's data files, WAL, replicas and backups until overwritten. Protect the server's storage as you
  protect the secrets.

The API is synchronous (psycopg 3's blocking connection): the journal is written once or a few times per reconcile
step, each write a few short round trips on an open connection, and a synchronous write keeps "journaled before
acting" a plain sequence. A dead server cannot block a call for long: TCP keepalives and ``tcp_user_timeout`` drop
a connection whose peer stopped answering (about 30 s), and connecting gives up after ``connect_timeout``.

Every :class:`psycopg.Error` is raised as :class:`~intercede.errors.JournalError` saying what to do (server not
reachable, authentication failed, no such database, no privilege, disk full, read-only standby).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg.pq import TransactionStatus

from intercede.errors import JournalError
from intercede.reconcile.journal_store import Rows, SQLJournal, Statements

__all__ = ["PostgresJournal", "redact_conninfo"]

# The advisory lock every intercede journal takes in its database (two 31-bit halves, so pg_locks shows them as
# classid/objid and a refusal can name the holder).
_LOCK_KEY = hashlib.sha256(b"intercede.reconcile.journal").digest()
_LOCK = (int.from_bytes(_LOCK_KEY[:4]) & 0x7FFFFFFF, int.from_bytes(_LOCK_KEY[4:8]) & 0x7FFFFFFF)
_APPLICATION = "intercede-journal"
# A peer that stops acknowledging (server host gone, network cut) drops the connection after this long.
_TCP_USER_TIMEOUT_MS = 30_000


def redact_conninfo(conninfo: str) -> str:
    """``postgresql://user@host:port/dbname`` for a connection string: what messages may show (never a password).
    A string libpq cannot parse is shown as ``<an invalid connection string>``."""
    try:
        params = pg_conninfo.conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "<an invalid connection string>"
    return _display(params)


def _display(params: dict[str, Any]) -> str:
    user = f"{params['user']}@" if params.get("user") else ""
    host = str(params.get("host") or params.get("hostaddr") or "")
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}{host}{port}/{params.get('dbname') or ''}"


class _Statements:
    """:class:`Statements` on a psycopg connection: the shared SQL's ``?`` placeholders become ``%s``."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Rows:
        # The shared SQL has no literal '?' or '%' (checked by the journal suite running it on both backends).
        return self._conn.execute(sql.replace("?", "%s"), tuple(parameters) or None)


class PostgresJournal(SQLJournal):
    """Durable desired state and progress of every key, in a PostgreSQL database. See the module docstring.

    ``conninfo`` is a libpq connection string; ``passfile`` a libpq password file (mode 0600); ``connect_timeout``
    bounds each connection attempt (whole seconds, at least 2). Opening connects, takes the owner's lock and creates or
    upgrades the schema; raises :class:`JournalError` when any of that fails, and ``KeyError`` when a
    ``record_*``/``set_phase`` names a key that was never declared (or was forgotten).
    """

    _db_errors = (psycopg.Error,)
    _real_type = "DOUBLE PRECISION"

    def __init__(self, conninfo: str, *, passfile: str | os.PathLike[str] | None = None,
                 connect_timeout: float = 10.0) -> None:
        super().__init__()
        try:
            params = pg_conninfo.conninfo_to_dict(conninfo)
        except psycopg.Error:
            # libpq's message may quote the string, password and all: say only what is wrong with it.
            raise JournalError("journal: not a valid PostgreSQL connection string; write it as "
                               "postgresql://user@host:port/dbname") from None
        self.location = _display(params)
        self._secret = str(params.get("password") or "")
        self._passfile = Path(passfile) if passfile is not None else None
        self._params: dict[str, Any] = params | {
            "connect_timeout": max(2, round(connect_timeout)), "application_name": _APPLICATION,
            "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
            "tcp_user_timeout": _TCP_USER_TIMEOUT_MS,
        }
        if self._passfile is not None:
            self._params["passfile"] = str(self._passfile)
        self._conn: psycopg.Connection[Any] | None = None
        self._tx: psycopg.Connection[Any] | None = None  # the connection of the open transaction, if any
        self._closed = False
        try:
            self._check_passfile()
            self._connect()
            self._ensure_schema()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresJournal({self.location!r})"

    def _where(self) -> str:
        return self.location

    # ---- the session and its lock

    def _check_passfile(self) -> None:
        # libpq silently ignores a missing password file, and one that others can read: the user would only see
        # "no password supplied". Say what is wrong with the file instead.
        if self._passfile is None:
            return
        try:
            mode = self._passfile.stat().st_mode
        except OSError as exc:
            raise JournalError(f"journal {self.location}: cannot read the password file {self._passfile}: "
                               f"{exc.strerror or exc}; check journal_passfile") from None
        if stat.S_IMODE(mode) & 0o077:
            raise JournalError(f"journal {self.location}: the password file {self._passfile} is readable by others "
                               "and libpq ignores it: chmod 0600 it")

    def _connect(self) -> None:
        """Open a session and take the owner's lock in it; on any failure no session is left open."""
        try:
            conn = psycopg.connect(**self._params, autocommit=True)
        except psycopg.Error as exc:
            raise self._error("connect", exc) from None
        try:
            locked = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", _LOCK).fetchone()
            if not (locked and locked[0]):
                raise JournalError(f"journal {self.location}: already owned by another reconciler "
                                   f"({self._holder(conn)} holds its lock); only one reconciler may own a journal: "
                                   "stop the other one or use another database")
        except psycopg.Error as exc:
            with contextlib.suppress(psycopg.Error):
                conn.close()
            raise self._error("take the journal's lock", exc) from None
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                conn.close()
            raise
        self._conn = conn

    @staticmethod
    def _holder(conn: psycopg.Connection[Any]) -> str:
        row = conn.execute(
            "SELECT a.pid, host(a.client_addr), a.application_name FROM pg_locks l JOIN pg_stat_activity a "
            "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s AND l.objsubid = 2 "
            "AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            _LOCK).fetchone()
        if row is None:
            return "another session"
        pid, client, application = row
        return f"server process {pid}, client {client or 'local'}, application {application or '?'}"

    @property
    def _db(self) -> psycopg.Connection[Any]:
        """The owning session; a lost one is replaced (and the lock taken again) here, never inside a transaction."""
        if self._closed:
            raise JournalError(f"journal {self.location}: it is closed")
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._drop()
            self._connect()
        assert self._conn is not None
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()  # ends the session: the server releases the lock
            self._conn = None

    def close(self) -> None:
        """Close the session (the server releases the lock). Idempotent."""
        self._closed = True
        self._drop()

    # ---- transactions

    @contextlib.contextmanager
    def _atomic(self, what: str) -> Iterator[Statements]:
        # BEGIN/COMMIT by hand, not psycopg's transaction(): on a lost connection its exit neither commits nor
        # raises, and a batch whose writes were lost must fail.
        conn = self._db
        try:
            conn.execute("BEGIN")
            self._tx = conn
            try:
                yield _Statements(conn)
            finally:
                self._tx = None
            if conn.info.transaction_status == TransactionStatus.INERROR:
                # A statement failed and its error was caught inside the batch: PostgreSQL aborted the whole
                # transaction (COMMIT would silently roll it back), so the batch fails whole.
                raise JournalError(f"journal {self.location}: cannot {what}: a statement inside it failed, so "
                                   "PostgreSQL rolled the whole transaction back; nothing of it was written")
            conn.execute("COMMIT")
        except BaseException as exc:
            if not (conn.closed or conn.broken) and conn.info.transaction_status != TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, psycopg.Error):
                raise self._error(what, exc) from None
            raise

    def _statements(self) -> Statements:
        # Only inside a batch: its writes must use the batch's connection (a replacement session would commit them
        # outside the batch's transaction); a lost connection fails them, and the batch with them.
        if self._tx is None:
            raise JournalError(f"journal {self.location}: internal error: no transaction is open")
        return _Statements(self._tx)

    def _schema_version(self, db: Statements) -> int:
        if db.execute("SELECT to_regclass('journal_meta')").fetchone()[0] is None:
            return 0
        row = db.execute("SELECT schema_version FROM journal_meta").fetchone()
        return int(row[0]) if row is not None else 0

    def _set_schema_version(self, db: Statements, version: int) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS journal_meta (schema_version INTEGER NOT NULL)")
        db.execute("DELETE FROM journal_meta")
        db.execute("INSERT INTO journal_meta (schema_version) VALUES (?)", (version,))

    def _wipe(self) -> None:
        # VACUUM cannot run in a transaction: the session is in autocommit mode outside one here.
        try:
            self._db.execute("VACUUM desired, progress")
        except psycopg.Error as exc:
            raise self._error("vacuum the journal's tables", exc) from None

    # ---- errors

    def _error(self, what: str, exc: BaseException) -> JournalError:
        """A :class:`JournalError` saying what failed and what to do; never the password, never the raw string.

        Raised ``from None`` by the callers: psycopg's exception (its connection string, its attributes) is not
        chained to a message that may be logged with its cause."""
        sqlstate = str(getattr(exc, "sqlstate", None) or "")
        text = " ".join(str(exc).split())
        if self._secret:
            text = text.replace(self._secret, "***")
        low = text.lower()
        if sqlstate in ("28P01", "28000") or "password" in low or "authentication failed" in low:
            advice = ("authentication failed: check the user in the connection string and the password file "
                      "(journal_passfile or PGPASSFILE; libpq's format host:port:dbname:user:password, mode 0600)")
        elif sqlstate == "3D000" or ("database" in low and "does not exist" in low):
            advice = "the database does not exist: create it (createdb -O <user> <dbname>) or fix the dbname"
        elif sqlstate == "42501":
            advice = "the user lacks a privilege on the journal's database or tables: grant it, or use the owner"
        elif sqlstate == "25P02":
            advice = ("an earlier statement of this batch failed, so PostgreSQL aborted its transaction: the whole "
                      "batch is rolled back when it ends; nothing of it is written")
        elif sqlstate == "53100":
            advice = "the server's disk is full; nothing of this write was committed. Free space on the server"
        elif sqlstate == "25006":
            advice = "the server is read-only (a standby?); point the journal at the primary"
        elif sqlstate == "53300" or "too many" in low:
            advice = "the server has no connection slot left; raise max_connections or close idle sessions"
        elif sqlstate.startswith(("08", "57P")) or isinstance(exc, psycopg.OperationalError):
            advice = "the PostgreSQL server cannot be reached (stopped, restarting, or the network is cut)"
            if what != "connect":
                advice += ("; nothing of this write was committed (a connection lost at COMMIT leaves that one write "
                           "unknown until the journal is reread); the next call reconnects")
            advice += ". Check that the server runs, and its host and port"
        else:
            advice = "unexpected PostgreSQL error"
        return JournalError(f"journal {self.location}: cannot {what}: {text} ({sqlstate or type(exc).__name__}): "
                            f"{advice}")
