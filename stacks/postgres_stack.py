"""A real PostgreSQL 15 server (Debian bookworm's ``postgresql-15``) for the journal suite and the service tests.

``with start_postgres() as pg:`` builds (once, cached by content) and starts ``stacks/postgres`` on the engine's
bridge network and returns when the role ``intercede`` can log in. The server listens on ``<container ip>:5432``:
reachable from this host, from other containers on the bridge and from every Ray node on this machine. What a
client needs::

    pg.dsn()                  # postgresql://intercede@<ip>:5432/intercede   (no password in it)
    pg.passfile               # a libpq password file (0600) holding the password
    pg.new_database()         # a fresh empty database owned by intercede; its DSN (for one test, one journal)
    pg.stop_server(); pg.start_server()   # an outage: every session is terminated (fast shutdown), then it is back

For the service: ``Settings(journal=pg.new_database(), journal_passfile=pg.passfile, ...)``. In the tests the
session fixture ``postgres`` (tests/conftest.py) starts one per xdist worker and stops it at the end.

The password is made per start (``secrets``) and passed to the container through its environment. Nothing here
skips: when the engine, the image or the server cannot be had, the caller gets the error.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from testcontainers.core.container import DockerContainer

from stacks import harness

__all__ = ["PostgresStack", "start_postgres"]

USER = "intercede"
PORT = 5432
VERSION = "15"


@dataclass
class PostgresStack:
    """A running PostgreSQL server and a password file to reach it as ``intercede``. ``stop`` is idempotent."""

    host: str
    port: int
    user: str
    passfile: Path
    container: DockerContainer = field(repr=False)
    _tmp: Path = field(repr=False)
    _databases: int = field(default=0, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def dsn(self, dbname: str = "intercede") -> str:
        """The connection string of ``dbname``, without the password (it is in :attr:`passfile`)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "intercede") -> psycopg.Connection[Any]:
        """An autocommit connection as ``intercede`` (for tests that look at the server behind the journal)."""
        return psycopg.connect(self.dsn(dbname), passfile=str(self.passfile), autocommit=True, connect_timeout=5)

    def new_database(self) -> str:
        """Create a fresh, empty database owned by ``intercede``; return its DSN."""
        self._databases += 1
        name = f"journal_{self._databases}_{secrets.token_hex(4)}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def exec(self, *argv: str) -> tuple[int, str]:
        """Run ``argv`` as root inside the container; return exit code and output (stdout, then stderr)."""
        result = harness.run_in(self.container, list(argv))
        return result.exit_code, result.stdout + result.stderr

    def stop_server(self) -> None:
        """Stop PostgreSQL (``pg_ctl stop -m fast``): every session is terminated at once; the container stays."""
        harness.check_in(self.container, ["pg-ctl", "stop"])

    def start_server(self, timeout: float = 60.0) -> None:
        """Start PostgreSQL again and wait until ``intercede`` can log in."""
        harness.check_in(self.container, ["pg-ctl", "start"])
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60.0) -> None:
        harness.wait_for(self._answers, f"PostgreSQL on {self.host}:{self.port}", timeout=timeout, interval=0.2)

    def _answers(self) -> bool:
        with self.connect() as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)

    def logs(self) -> str:
        out, err = self.container.get_logs()
        return (out + err).decode(errors="replace")

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        harness.remove(self.container, self._tmp)

    def __enter__(self) -> PostgresStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_postgres(*, suite: str = "bookworm", timeout: float = 90.0) -> PostgresStack:
    """Start the PostgreSQL container with a fresh password; return when ``intercede`` can log in."""
    image = harness.image("postgres", suite)
    tmp = Path(tempfile.mkdtemp(prefix="intercede-postgres-"))
    password = secrets.token_urlsafe(24)  # [A-Za-z0-9_-]: nothing to escape in a password file
    container = DockerContainer(image, init=True, env={"PG_PASSWORD": password})
    passfile = tmp / "pgpass"
    stack = PostgresStack("", PORT, USER, passfile, container, tmp)
    try:
        container.start()
        stack.host = harness.container_address(container)
        passfile.touch(mode=0o600)
        passfile.write_text(f"{stack.host}:{PORT}:*:{USER}:{password}\n")
        stack.wait_ready(timeout)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            exc.add_note(f"postgres container logs:\n{stack.logs()}")
        stack.stop()
        raise
    return stack


if __name__ == "__main__":  # pragma: no cover - manual smoke test: python -m stacks.postgres_stack
    harness.engine()
    t0 = time.monotonic()
    with start_postgres() as pg:
        print(pg, pg.dsn(), f"up in {time.monotonic() - t0:.1f} s")
