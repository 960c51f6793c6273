"""The journal's tables and rows, shared by every journal backend (SQLite, PostgreSQL): the schema and its upgrades,
and the (de)serialisation of declarations and progress. Pure: no connection, no I/O.

The schema is written once in SQL that both databases accept; the only difference is the type of the timestamps
(``{real}``: SQLite's ``REAL`` is a double, PostgreSQL's is a 4-byte float that would round seconds away, so it gets
``DOUBLE PRECISION``). Booleans are stored as ``0``/``1`` integers on both, so one row format serves both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from intercede.model import JobSpec, JobState, JobStatus, OutputManifest
from intercede.reconcile.state import Desired, Phase, Progress

__all__ = [
    "MIGRATIONS",
    "PROGRESS_COLUMNS",
    "SCHEMA_VERSION",
    "SELECT_PROGRESS",
    "UPDATE_PROGRESS",
    "desired_from_row",
    "observed",
    "progress_from_row",
    "progress_to_row",
    "schema_statements",
    "scrub_secrets",
    "spec_to_json",
]

SCHEMA_VERSION = 2

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
    last_seen        {real},
    cancel_sent_at   {real},
    manifest         TEXT,        -- OutputManifest as JSON
    purged           INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  {real},
    last_error       TEXT,
    permanent_error  TEXT
)
"""

#: Each schema version's upgrade from the one before (a fresh journal gets the whole schema at once).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE desired ADD COLUMN scrubbed INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE progress ADD COLUMN submit_attempts TEXT NOT NULL DEFAULT '[]'"),
}


def schema_statements(real: str = "REAL") -> list[str]:
    """The statements creating a fresh journal, with ``real`` as the type of timestamps."""
    return [s.strip() for s in _SCHEMA.format(real=real).split(";") if s.strip()]


PROGRESS_COLUMNS = (
    "job_id", "submit_intent", "submit_attempts", "state", "native_state", "exit_code", "reason", "last_seen",
    "cancel_sent_at", "manifest", "purged", "attempts", "next_attempt_at", "last_error", "permanent_error",
)
# ``?`` placeholders: the PostgreSQL journal turns them into psycopg's ``%s``.
SELECT_PROGRESS = f"SELECT {', '.join(PROGRESS_COLUMNS)} FROM progress WHERE key = ?"  # noqa: S608 - constants
UPDATE_PROGRESS = f"UPDATE progress SET {', '.join(c + ' = ?' for c in PROGRESS_COLUMNS)} WHERE key = ?"  # noqa: S608


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


def progress_to_row(p: Progress) -> tuple[Any, ...]:
    """The :data:`PROGRESS_COLUMNS` values of ``p``."""
    return (
        p.job_id, int(p.submit_intent), json.dumps(list(p.submit_attempts)),
        p.state.value if p.state is not None else None, p.native_state,
        p.exit_code, p.reason, p.last_seen, p.cancel_sent_at,
        p.manifest.model_dump_json() if p.manifest is not None else None,
        int(p.purged), p.attempts, p.next_attempt_at, p.last_error, p.permanent_error,
    )


def progress_from_row(row: Sequence[Any]) -> Progress:
    """The progress stored in a row of :data:`PROGRESS_COLUMNS` values."""
    (job_id, intent, submit_attempts, state, native, exit_code, reason, last_seen, cancel_sent_at, manifest, purged,
     attempts, next_attempt_at, last_error, permanent_error) = row
    return Progress(
        job_id=job_id, submit_intent=bool(intent), submit_attempts=tuple(json.loads(submit_attempts)),
        state=JobState(state) if state is not None else None,
        native_state=native, exit_code=exit_code, reason=reason, last_seen=last_seen, cancel_sent_at=cancel_sent_at,
        manifest=OutputManifest.model_validate_json(manifest) if manifest is not None else None,
        purged=bool(purged), attempts=attempts, next_attempt_at=next_attempt_at, last_error=last_error,
        permanent_error=permanent_error,
    )


def desired_from_row(key: str, ce: str, spec: str, phase: str, destination: str | None) -> Desired:
    return Desired(key, ce, JobSpec.model_validate_json(spec), Phase(phase),
                   Path(destination) if destination is not None else None)


def observed(progress: Progress, *, status: JobStatus, at: float) -> Progress:
    """``progress`` with one status report folded in (a picklable partial for bulk records)."""
    return progress.with_observation(status, at)
