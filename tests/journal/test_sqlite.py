"""What only the SQLite journal has: its files (modes, WAL, secrets gone from the bytes) and failing whole on a
read-only or full disk or a corrupt file; its schema upgrade. The contract both journals keep is test_journal.py."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from intercede.errors import InvalidSpecError, JournalError
from intercede.model import Copy
from intercede.reconcile import Desired, Journal, Progress
from intercede.reconcile.journal import spec_to_json
from tests.journal.conftest import SPEC

pytestmark = pytest.mark.journal


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def journal(path: Path) -> Iterator[Journal]:
    with Journal(path) as j:
        yield j


def _consistent(path: Path) -> tuple[dict[str, Desired], dict[str, Progress]]:
    """Load a journal and check no key is half there (a declaration without its progress or the reverse)."""
    with Journal(path) as j:
        desired, progress = j.load()
    assert set(desired) == set(progress)
    return desired, progress


# ---- the file


def test_the_journal_and_its_companions_are_private_files(path: Path) -> None:
    old = os.umask(0o022)
    try:
        with Journal(path) as j:
            j.declare(Desired("k", "ce", SPEC))
            companions = [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm", ".lock")]
            for file in companions:
                assert file.exists(), file
                assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    finally:
        os.umask(old)


def test_an_existing_journal_readable_by_others_is_made_private(path: Path) -> None:
    Journal(path).close()
    path.chmod(0o644)
    Journal(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_journal_runs_in_wal_mode_with_full_sync(journal: Journal) -> None:
    conn = journal._db
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL




def test_a_journal_in_a_missing_directory_raises_journal_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="directory exists"):
        Journal(tmp_path / "nowhere" / "journal.db")


# ---- failing whole

_READ_ONLY_PROBE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from intercede.errors import JournalError
    from intercede.model import JobSpec
    from intercede.reconcile import Desired, Journal
    try:
        journal = Journal(Path(sys.argv[1]))
        journal.declare(Desired("k2", "ce", JobSpec(executable="/bin/true")))
    except JournalError as exc:
        print(json.dumps({"error": str(exc)}))
    else:
        print(json.dumps({"error": None}))
""")


def _probe_without_root_powers(path: Path) -> str | None:
    """Open and write the journal in a process that obeys file modes. Root ignores them, so as root the probe runs
    with the capabilities that bypass permission checks dropped."""
    argv = [sys.executable, "-c", _READ_ONLY_PROBE, str(path)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "running as root: setpriv (util-linux) is needed to test a read-only journal"
        caps = "-dac_override,-dac_read_search,-fowner"
        argv = [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}", "--", *argv]
    result = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
    error: str | None = json.loads(result.stdout)["error"]
    return error


@pytest.mark.parametrize("read_only", ["file", "directory"])
def test_a_read_only_journal_raises_journal_error_and_writes_nothing(tmp_path: Path, read_only: str) -> None:
    directory = tmp_path / "state"
    directory.mkdir()
    path = directory / "journal.db"
    with Journal(path) as j:
        j.declare(Desired("k1", "ce", SPEC))
    target = path if read_only == "file" else directory
    mode = target.stat().st_mode
    target.chmod(0o400 if read_only == "file" else 0o500)
    try:
        error = _probe_without_root_powers(path)
    finally:
        target.chmod(stat.S_IMODE(mode))
    assert error is not None and "writable" in error, error
    desired, _ = _consistent(path)
    assert set(desired) == {"k1"}


def test_a_journal_turned_read_only_under_a_running_reconciler_refuses_the_whole_write(journal: Journal) -> None:
    journal.declare(Desired("k1", "ce", SPEC))
    journal._db.execute("PRAGMA query_only = ON")  # SQLite answers SQLITE_READONLY, as for a read-only remount
    with pytest.raises(JournalError, match="read-only"):
        journal.declare(Desired("k2", "ce", SPEC))
    with pytest.raises(JournalError, match="read-only"):
        journal.record_submit_intent("k1")
    journal._db.execute("PRAGMA query_only = OFF")
    desired, progress = journal.load()
    assert set(desired) == set(progress) == {"k1"}
    assert progress["k1"] == Progress()


def test_a_full_disk_raises_journal_error_with_nothing_half_written(path: Path) -> None:
    journal = Journal(path)
    conn = journal._db
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 8}")  # a few pages left: SQLITE_FULL comes soon
    big = SPEC.model_copy(update={"arguments": ["x" * 3000]})
    declared = []
    with pytest.raises(JournalError, match="full") as info:
        for i in range(1000):
            journal.declare(Desired(f"k{i}", "ce", big))
            declared.append(f"k{i}")
    assert "Free space" in str(info.value)
    assert declared, "the limit left no room for even one key: raise it"
    with pytest.raises(JournalError, match="full"):
        journal.record_error(declared[0], "e" * 100_000, permanent=False, next_attempt_at=1.0, attempts=1)
    journal.close()
    desired, progress = _consistent(path)
    assert sorted(desired) == sorted(declared)
    assert all(p == Progress() for p in progress.values())


def test_a_corrupt_journal_raises_journal_error_saying_what_to_do(path: Path) -> None:
    path.write_bytes(b"this is not a database, just some bytes of a broken file" * 100)
    with pytest.raises(JournalError, match="move it aside"):
        Journal(path)
    Path(f"{path}.lock").unlink()  # the failed open released it
    with pytest.raises(JournalError, match="corrupt"):
        Journal(path)



def _journal_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file())


def test_secrets_are_gone_from_the_journal_files_once_the_job_id_is_recorded_and_after_forget(path: Path) -> None:
    secret = b"s3cr3t-value"
    other = SPEC.model_copy(update={"copies": [Copy(secrets={"TOKEN": SecretStr("other-secret-42")})]})
    with Journal(path) as j:
        j.declare(Desired("k1", "ce-a", SPEC))
        j.declare(Desired("k2", "ce-a", other))
        j.record_submit_intent("k1", "0123456789abcdef")
        assert secret in _journal_bytes(path), "stored revealed while a resubmit may need it"
        j.record_job_id("k1", "42")
        j.wipe()
        raw = _journal_bytes(path)
        assert secret not in raw, "scrubbed from the database, its free pages and its WAL"
        assert b"other-secret-42" in raw, "a key without a job keeps its secrets"
        assert j.progress("k1").job_id == "42"
        j.forget("k2")
        j.wipe()
        assert b"other-secret-42" not in _journal_bytes(path), "a forgotten key's secrets are gone too"
        # The same declaration again is still the same declaration (its secrets are no longer compared).
        assert j.declare(Desired("k1", "ce-a", SPEC)).spec.copies[0].secrets["TOKEN"].get_secret_value() == ""
        with pytest.raises(InvalidSpecError, match="different spec"):
            j.declare(Desired("k1", "ce-a", SPEC.model_copy(update={"executable": "other.sh"})))
    assert secret not in _journal_bytes(path)


def test_a_version_1_journal_is_upgraded_in_place_keeping_every_key(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE desired (key TEXT PRIMARY KEY, ce TEXT NOT NULL, spec TEXT NOT NULL, phase TEXT NOT NULL,
                              destination TEXT);
        CREATE TABLE progress (key TEXT PRIMARY KEY REFERENCES desired(key), job_id TEXT,
            submit_intent INTEGER NOT NULL DEFAULT 0, state TEXT, native_state TEXT NOT NULL DEFAULT '',
            exit_code INTEGER, reason TEXT NOT NULL DEFAULT '', last_seen REAL, cancel_sent_at REAL, manifest TEXT,
            purged INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL,
            last_error TEXT, permanent_error TEXT);
        PRAGMA user_version = 1;
    """)
    conn.execute("INSERT INTO desired VALUES ('old', 'ce-a', ?, 'running', NULL)", (spec_to_json(SPEC),))
    conn.execute("INSERT INTO progress (key, submit_intent) VALUES ('old', 1)")
    conn.commit()
    conn.close()
    with Journal(path) as j:
        desired, progress = j.load()
        assert desired["old"].spec == SPEC
        assert progress["old"] == Progress(submit_intent=True)  # an intent from before attempt ids: none recorded
        assert j.record_submit_intent("old", "0123456789abcdef").submit_attempts == ("0123456789abcdef",)
    with Journal(path) as j:
        assert j.progress("old").submit_attempts == ("0123456789abcdef",)
