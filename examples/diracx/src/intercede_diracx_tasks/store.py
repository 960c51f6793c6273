"""The WMS's own pilot records, which this example keeps in SQLite (DiracX keeps them in its PilotAgentsDB).

A pilot is created here first, with the WMS's id, and only then declared to intercede under that id as its key: a
crash in between leaves a pilot that :class:`~intercede_diracx_tasks.tasks.CheckPilotsTask` declares again (a
declare of the same key and spec is idempotent), never a job at a CE that the WMS does not know.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from pathlib import Path
from typing import Protocol

FINAL = ("Done", "Failed", "Aborted")


class PilotStore(Protocol):
    """What the tasks need of the WMS's pilot records."""

    async def new_pilots(self, ce: str, count: int) -> list[str]: ...

    async def active(self) -> dict[str, str]: ...

    async def set_status(self, statuses: dict[str, str]) -> None: ...

    async def all(self) -> dict[str, tuple[str, str]]: ...


class SQLitePilotStore:
    """Pilots ``(id, ce, status)`` in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS pilots "
                       "(id TEXT PRIMARY KEY, ce TEXT NOT NULL, status TEXT NOT NULL)")

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path)

    async def new_pilots(self, ce: str, count: int) -> list[str]:
        """Create ``count`` pilot records for ``ce`` (status Submitted) and return their ids."""
        ids = [f"pilot-{secrets.token_hex(10)}" for _ in range(count)]

        def write() -> None:
            with self._db() as db:
                db.executemany("INSERT INTO pilots VALUES (?, ?, 'Submitted')", [(i, ce) for i in ids])
        await asyncio.to_thread(write)
        return ids

    async def active(self) -> dict[str, str]:
        """Pilot id -> CE of the pilots not in a final state."""
        def read() -> dict[str, str]:
            with self._db() as db:
                marks = ",".join("?" * len(FINAL))
                return dict(db.execute(f"SELECT id, ce FROM pilots WHERE status NOT IN ({marks})", FINAL))  # noqa: S608
        return await asyncio.to_thread(read)

    async def set_status(self, statuses: dict[str, str]) -> None:
        def write() -> None:
            with self._db() as db:
                db.executemany("UPDATE pilots SET status = ? WHERE id = ?", [(s, i) for i, s in statuses.items()])
        await asyncio.to_thread(write)

    async def all(self) -> dict[str, tuple[str, str]]:
        """Pilot id -> (CE, status)."""
        def read() -> dict[str, tuple[str, str]]:
            with self._db() as db:
                return {i: (ce, s) for i, ce, s in db.execute("SELECT id, ce, status FROM pilots ORDER BY id")}
        return await asyncio.to_thread(read)
