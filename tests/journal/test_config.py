"""Choosing the journal in the configuration: the SQLite file under data_dir by default, a PostgreSQL URL (with a
password file, never a password), field-by-field errors that never echo the URL, and the reconciler actor opening
what the settings name (on the real PostgreSQL server)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from intercede.actors.reconciler import JobRequest, ReconcilerActor
from intercede.actors.seam import LocalSeam
from intercede.actors.settings import Settings, load_settings
from intercede.errors import InvalidSpecError, JournalError
from intercede.reconcile import Journal, open_journal
from intercede.reconcile.journal_postgres import PostgresJournal
from stacks.postgres_stack import PostgresStack
from tests.journal.conftest import SPEC

pytestmark = pytest.mark.journal


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "ces.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n{body}')
    return path


def test_the_default_journal_is_the_sqlite_file_under_data_dir(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path, ""))
    assert settings.journal_location == tmp_path / "data" / "journal.sqlite"
    other = load_settings(_config(tmp_path, f'journal = "{tmp_path / "elsewhere.db"}"\n'))
    assert other.journal_location == tmp_path / "elsewhere.db"
    (tmp_path / "data").mkdir()
    with open_journal(settings.journal_location) as journal:
        assert isinstance(journal, Journal)


def test_a_postgresql_url_with_a_password_file_selects_the_postgresql_journal(tmp_path: Path) -> None:
    url = "postgresql://intercede@db.example.org:5432/journal"
    settings = load_settings(_config(tmp_path, f'journal = "{url}"\njournal_passfile = "/etc/intercede/pgpass"\n'))
    assert settings.journal_location == url
    assert settings.journal_passfile == Path("/etc/intercede/pgpass")


def test_a_password_in_the_journal_url_is_refused_without_echoing_it(tmp_path: Path) -> None:
    config = _config(tmp_path, 'journal = "postgresql://intercede:hunter2-secret@db:5432/journal"\n')
    with pytest.raises(InvalidSpecError, match=r"journal: a password in the journal URL is refused") as info:
        load_settings(config)
    assert str(config) in str(info.value) and "journal_passfile" in str(info.value)
    assert "hunter2-secret" not in str(info.value)
    with pytest.raises(ValueError, match="password") as direct:
        Settings(journal="postgresql://intercede:hunter2-secret@db/journal")
    assert "hunter2-secret" not in str(direct.value)


def test_a_bad_journal_url_or_a_password_file_without_postgresql_is_refused_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpecError, match=r"journal: not a valid PostgreSQL URL"):
        load_settings(_config(tmp_path, 'journal = "postgresql://intercede@[db"\n'))
    with pytest.raises(InvalidSpecError, match="journal_passfile is only for a PostgreSQL journal"):
        load_settings(_config(tmp_path, 'journal_passfile = "/etc/intercede/pgpass"\n'))
    with pytest.raises(JournalError, match="only for a PostgreSQL journal"):
        open_journal(tmp_path / "j.db", passfile=tmp_path / "pgpass")


async def test_the_reconciler_actor_journals_where_the_settings_say(postgres: PostgresStack, tmp_path: Path) -> None:
    dsn = postgres.new_database()
    embedded = Settings.embedded(tmp_path / "data", job_root=tmp_path / "jobs")
    settings = Settings.model_validate(embedded.model_dump() | {"journal": dsn, "journal_passfile": postgres.passfile})
    actor = ReconcilerActor(settings, seam=LocalSeam(f"journal-{uuid.uuid4().hex[:8]}"), start=False)
    try:
        journal = actor.reconciler._journal
        assert isinstance(journal, PostgresJournal) and journal.location == dsn
        await actor.declare([JobRequest("k", "local", SPEC)])
        with postgres.connect(dsn.rsplit("/", 1)[1]) as conn:  # journaled on the server before declare returned
            assert conn.execute("SELECT key, ce FROM desired").fetchall() == [("k", "local")]
    finally:
        actor.close()
    with PostgresJournal(dsn, passfile=postgres.passfile) as again:  # closing the actor released the journal
        assert set(again.load()[0]) == {"k"}


def test_journal_node_is_for_the_sqlite_journal_only(tmp_path: Path) -> None:
    node = "ab" * 28
    assert load_settings(_config(tmp_path, f'journal_node = "{node}"\n')).journal_on_a_node
    with pytest.raises(InvalidSpecError, match="journal_node is only for an SQLite journal"):
        load_settings(_config(tmp_path, f'journal = "postgresql://intercede@db:5432/j"\njournal_node = "{node}"\n'))
    with pytest.raises(InvalidSpecError, match="journal_node"):
        load_settings(_config(tmp_path, 'journal_node = "not a node id"\n'))
