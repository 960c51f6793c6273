"""Open the journal a configuration names: the one place that chooses between SQLite and PostgreSQL.

``location`` is a ``postgresql://`` (or ``postgres://``) URL for :class:`~intercede.reconcile.journal_postgres.
PostgresJournal`, anything else the path of an SQLite file for :class:`~intercede.reconcile.journal.Journal`.
psycopg is imported only for a PostgreSQL journal, so the SQLite journal works without it.
"""

from __future__ import annotations

import os

from intercede.errors import JournalError
from intercede.reconcile.journal import Journal
from intercede.reconcile.journal_store import JournalStore

__all__ = ["is_postgres", "open_journal"]

_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a PostgreSQL journal (a ``postgresql://`` or ``postgres://`` URL)."""
    return isinstance(location, str) and location.lower().startswith(_SCHEMES)


def open_journal(location: str | os.PathLike[str], *, passfile: str | os.PathLike[str] | None = None,
                 connect_timeout: float = 10.0) -> JournalStore:
    """Open (creating if need be) and own the journal at ``location``; see the module docstring.

    ``passfile`` (a libpq password file) and ``connect_timeout`` are for PostgreSQL only. Raises
    :class:`JournalError` when the journal cannot be opened or is owned by another reconciler."""
    if not is_postgres(location):
        if passfile is not None:
            raise JournalError(f"journal {location}: a password file is only for a PostgreSQL journal")
        return Journal(location)
    try:
        from intercede.reconcile.journal_postgres import PostgresJournal
    except ImportError as exc:
        raise JournalError("a PostgreSQL journal needs psycopg: pip install 'intercede[service]' "
                           f"(or psycopg[binary]); {exc}") from None
    return PostgresJournal(str(location), passfile=passfile, connect_timeout=connect_timeout)
