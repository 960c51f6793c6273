"""What only the PostgreSQL journal has, against the real server of stacks/postgres: a connection cut or the server
stopped mid-batch fails the batch whole and the journal reconnects; a statement the server refuses fails its whole
batch; a second owner in another process is refused until the owner dies; every failure says what to do, and the
password is never in a message, a traceback or a repr."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from intercede.errors import JournalError
from intercede.reconcile import Desired, Progress
from intercede.reconcile.journal_postgres import PostgresJournal, redact_conninfo
from stacks.postgres_stack import PostgresStack
from tests.journal.conftest import SPEC, Store, postgres_store

pytestmark = pytest.mark.journal


@pytest.fixture
def pg_store(postgres: PostgresStack, suite_database: str) -> Store:
    """The suite's PostgreSQL store, emptied."""
    return postgres_store(postgres, suite_database)


@pytest.fixture
def owned(pg_store: Store) -> Iterator[PostgresJournal]:
    with pg_store.open() as j:
        assert isinstance(j, PostgresJournal)
        j.declare(Desired("before", "ce", SPEC))
        yield j


def _password(pg: PostgresStack) -> str:
    return pg.passfile.read_text().strip().rsplit(":", 1)[1]


def _backend_pid(journal: PostgresJournal) -> int:
    conn = journal._conn
    assert conn is not None
    return int(conn.info.backend_pid)


def test_a_connection_cut_mid_batch_fails_the_batch_whole_and_the_next_call_reconnects(
        postgres: PostgresStack, pg_store: Store, owned: PostgresJournal) -> None:
    first = _backend_pid(owned)
    with pytest.raises(JournalError, match="cannot be reached") as info, owned.batch():
        owned.record_submit_intent("before", "att-1")
        owned.declare(Desired("during", "ce", SPEC))
        pg_store.execute(f"SELECT pg_terminate_backend({first})")
        owned.record_job_id("before", "42")
    assert "reconnects" in str(info.value)
    # Nothing of the batch is stored, and the same journal goes on on a new session holding the lock again.
    assert owned.progress("before") == Progress()
    assert set(owned.load()[0]) == {"before"}
    assert _backend_pid(owned) != first
    with pytest.raises(JournalError, match="only one reconciler"):
        pg_store.open()


def test_a_write_whose_error_is_caught_inside_a_batch_still_fails_the_batch_whole(
        pg_store: Store, owned: PostgresJournal) -> None:
    # The server refuses one statement (a constraint stands for any server-side refusal: a full disk, a trigger).
    pg_store.execute("ALTER TABLE progress ADD CONSTRAINT few_attempts CHECK (attempts < 5)")
    with pytest.raises(JournalError, match="rolled the whole transaction back"), owned.batch():
        owned.record_submit_intent("before", "att-1")
        with pytest.raises(JournalError, match="few_attempts"):
            owned.record_error("before", "boom", permanent=False, next_attempt_at=1.0, attempts=9)
        with pytest.raises(JournalError, match="earlier statement of this batch failed"):
            owned.declare(Desired("after", "ce", SPEC))  # the server aborted the transaction: nothing more goes in
    assert owned.progress("before") == Progress()
    assert set(owned.load()[0]) == {"before"}


def test_a_server_stopped_mid_batch_raises_journal_error_with_nothing_half_written(
        postgres: PostgresStack, owned: PostgresJournal) -> None:
    try:
        with pytest.raises(JournalError, match="cannot be reached"), owned.batch():
            owned.record_submit_intent("before", "att-1")
            owned.declare(Desired("during", "ce", SPEC))
            postgres.stop_server()
            owned.record_job_id("before", "42")
        t0 = time.monotonic()
        with pytest.raises(JournalError, match="cannot be reached"):  # while it is down: refused, promptly
            owned.declare(Desired("down", "ce", SPEC))
        assert time.monotonic() - t0 < 15
    finally:
        postgres.start_server()
    assert owned.load()[0].keys() == {"before"}
    assert owned.progress("before") == Progress()
    owned.record_submit_intent("before", "att-2")  # the same journal resumes once the server is back
    assert owned.progress("before").submit_attempts == ("att-2",)


_OWNER = textwrap.dedent("""
    import sys, time
    from intercede.reconcile.journal_postgres import PostgresJournal
    journal = PostgresJournal(sys.argv[1], passfile=sys.argv[2])
    print("owned", flush=True)
    time.sleep(600)
""")


def test_a_second_owner_in_another_process_is_refused_until_the_owner_dies(
        postgres: PostgresStack, pg_store: Store, suite_database: str) -> None:
    pg_store.open().close()  # the schema exists: the other process only takes the lock
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, suite_database, str(postgres.passfile)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "owned"
        with pytest.raises(JournalError, match="only one reconciler") as info:
            pg_store.open()
        assert "application intercede-journal" in str(info.value)  # the refusal names the holder
        os.kill(owner.pid, signal.SIGKILL)  # no close: the server releases the lock when the session ends
        owner.wait(timeout=30)
        deadline = time.monotonic() + 30
        while True:
            try:
                pg_store.open().close()
                break
            except JournalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        owner.kill()
        owner.wait(timeout=30)


def test_the_password_is_never_in_a_message_a_traceback_or_a_repr(postgres: PostgresStack,
                                                                 suite_database: str) -> None:
    password = _password(postgres)
    with_password = suite_database.replace("intercede@", f"intercede:{password}@")
    with PostgresJournal(with_password) as j:  # works, but shows no password anywhere
        assert password not in repr(j) and repr(j) == f"PostgresJournal({suite_database!r})"
        assert password not in redact_conninfo(with_password)
        j.close()
        with pytest.raises(JournalError) as closed:
            j.load()
    wrong = "Wr0ng-" + password
    with pytest.raises(JournalError, match="authentication failed") as info:
        PostgresJournal(suite_database.replace("intercede@", f"intercede:{wrong}@"))
    for exc in (closed.value, info.value):
        shown = "".join(traceback.format_exception(exc)) + repr(exc)
        assert password not in shown and wrong not in shown
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_no_password_at_all_says_to_use_a_password_file(suite_database: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(JournalError, match="password file"):
        PostgresJournal(suite_database)


def test_a_password_file_that_is_missing_or_readable_by_others_is_refused_saying_so(
        postgres: PostgresStack, suite_database: str, tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="cannot read the password file"):
        PostgresJournal(suite_database, passfile=tmp_path / "missing")
    loose = tmp_path / "pgpass"
    loose.write_text(postgres.passfile.read_text())
    loose.chmod(0o644)
    with pytest.raises(JournalError, match="chmod 0600"):
        PostgresJournal(suite_database, passfile=loose)


def test_an_unreachable_server_and_a_missing_database_raise_journal_error_saying_what_to_do(
        postgres: PostgresStack) -> None:
    t0 = time.monotonic()
    with pytest.raises(JournalError, match=r"cannot be reached.*host and port"):
        PostgresJournal(f"postgresql://intercede@127.0.0.1:{_closed_port()}/x", passfile=postgres.passfile)
    assert time.monotonic() - t0 < 15
    with pytest.raises(JournalError, match="does not exist: create it"):
        PostgresJournal(postgres.dsn("no_such_db"), passfile=postgres.passfile)
    with pytest.raises(JournalError, match="not a valid PostgreSQL connection string"):
        PostgresJournal("postgresql://intercede@[broken")


def _closed_port() -> int:
    from stacks import harness

    return harness.free_port()
