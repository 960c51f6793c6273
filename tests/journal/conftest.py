"""The journal suite's fixtures: one ``store`` fixture over both journals, ids ``sqlite`` and ``postgresql``.

A :class:`Store` opens journals on one empty store (a fresh SQLite file; the suite's PostgreSQL database, emptied
before each test) and reads it through a connection of its own, as another process would. PostgreSQL is the real
server of ``stacks/postgres`` (the session fixture ``postgres`` in tests/conftest.py); nothing skips.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from intercede.model import Copy, JobSpec, Resources
from intercede.reconcile import Journal, JournalStore
from intercede.reconcile.journal_postgres import PostgresJournal
from stacks.postgres_stack import PostgresStack

pytestmark = pytest.mark.journal

#: A spec with a secret, a variable and resources: every field a journal stores.
SPEC = JobSpec(
    executable="run.sh",
    arguments=["--n", "3"],
    environment={"MODE": "fast"},
    resources=Resources(cores=4, memory_mb=2048, wall_time=timedelta(hours=2), queue="short"),
    copies=[Copy(variables={"SEED": "7"}, secrets={"TOKEN": SecretStr("s3cr3t-value")})],
)


@dataclass
class Store:
    """Where one test's journal lives, and a second connection onto it."""

    kind: str
    open: Callable[[], JournalStore]
    query: Callable[[str], list[tuple[Any, ...]]]  # a read through a connection of its own
    execute: Callable[[str], None]  # a write through a connection of its own (e.g. to plant a newer schema)


@pytest.fixture(scope="session")
def suite_database(postgres: PostgresStack) -> str:
    """One database for the suite (creating a database costs seconds here; emptying one, milliseconds)."""
    return postgres.new_database()


def _sqlite_store(path: Path) -> Store:
    def query(sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as conn:
            return conn.execute(sql).fetchall()

    def execute(sql: str) -> None:
        conn = sqlite3.connect(path)
        try:
            conn.execute(sql)
            conn.commit()
        finally:
            conn.close()

    return Store("sqlite", lambda: Journal(path), query, execute)


def postgres_store(pg: PostgresStack, dsn: str) -> Store:
    dbname = dsn.rsplit("/", 1)[1]
    with pg.connect(dbname) as conn:
        conn.execute("DROP TABLE IF EXISTS progress, desired, journal_meta")

    def query(sql: str) -> list[tuple[Any, ...]]:
        with pg.connect(dbname) as conn:
            return conn.execute(sql).fetchall()

    def execute(sql: str) -> None:
        with pg.connect(dbname) as conn:
            conn.execute(sql)

    return Store("postgresql", lambda: PostgresJournal(dsn, passfile=pg.passfile), query, execute)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return _sqlite_store(tmp_path / "journal.db")
    return postgres_store(request.getfixturevalue("postgres"), request.getfixturevalue("suite_database"))


@pytest.fixture
def journal(store: Store) -> Iterator[JournalStore]:
    with store.open() as j:
        yield j
