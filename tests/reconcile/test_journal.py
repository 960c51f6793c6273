"""The SQLite journal: round trips, refusals, and failing whole (read-only, full disk, corruption)."""

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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from intercede.errors import InvalidSpecError, JournalError
from intercede.model import Copy, JobSpec, JobState, JobStatus, ManifestEntry, OutputManifest, Resources, Usage
from intercede.reconcile import Desired, Journal, Observation, Phase, Progress
from intercede.reconcile.journal import spec_to_json

pytestmark = pytest.mark.actors

SPEC = JobSpec(
    executable="run.sh",
    arguments=["--n", "3"],
    environment={"MODE": "fast"},
    resources=Resources(cores=4, memory_mb=2048, wall_time=timedelta(hours=2), queue="short"),
    copies=[Copy(variables={"SEED": "7"}, secrets={"TOKEN": SecretStr("s3cr3t-value")})],
)


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


# ---- round trips

USAGE = Usage(wall_seconds=12.0, cpu_seconds=3.5, peak_memory_mb=20.0, node="n1",
              started_at=datetime(2026, 12, 1, 13, 0, tzinfo=UTC),
              ended_at=datetime(2026, 12, 1, 13, 0, 12, tzinfo=UTC))


def test_a_reopened_journal_loads_every_declaration_and_every_progress_field(path: Path) -> None:
    manifest = OutputManifest(job_id="42", destination=Path("/data/out/k1"),
                              files=[ManifestEntry(name="stdout.txt", size=3, sha256="ab" * 32)], missing=["x.root"])
    with Journal(path) as j:
        j.declare(Desired("k1", "ce-a", SPEC))
        j.declare(Desired("k2", "ce-b", SPEC, Phase.COLLECTED, Path("/data/out/k2")))
        j.record_submit_intent("k1")
        j.record_job_id("k1", "42")
        j.record_observation("k1", JobStatus(job_id="42", state=JobState.DONE, native_state="COMPLETED",
                                             exit_code=3, reason="exit 3", usage=USAGE), seen_at=100.5)
        j.record_cancel_sent("k1", 101.0, "waiting longer than max_waiting (60 s)")
        j.record_manifest("k1", manifest)
        j.record_purged("k1")
        j.record_error("k2", "submit: ConnectivityError: refused", permanent=False, next_attempt_at=200.0,
                       attempts=3)
        written = {"k1": j.progress("k1"), "k2": j.progress("k2")}
    desired, progress = _consistent(path)
    # k1 has a job id, so its secrets were scrubbed (only their names stay); k2 may still be submitted.
    scrubbed = SPEC.model_copy(update={"copies": [Copy(variables={"SEED": "7"}, secrets={"TOKEN": SecretStr("")})]})
    assert desired == {"k1": Desired("k1", "ce-a", scrubbed),
                       "k2": Desired("k2", "ce-b", SPEC, Phase.COLLECTED, Path("/data/out/k2"))}
    assert desired["k2"].spec.copies[0].secrets["TOKEN"].get_secret_value() == "s3cr3t-value"
    assert progress == written
    assert progress["k1"] == Progress(job_id="42", submit_intent=True, state=JobState.DONE, native_state="COMPLETED",
                                      exit_code=3, reason="exit 3", last_seen=100.5, cancel_sent_at=101.0,
                                      manifest=manifest, purged=True, state_since=100.5, usage=USAGE,
                                      policy_reason="waiting longer than max_waiting (60 s)")
    assert progress["k2"].attempts == 3 and progress["k2"].next_attempt_at == 200.0
    assert progress["k2"].permanent_error is None


def test_secrets_are_stored_revealed_so_a_resubmit_after_a_restart_still_has_them(path: Path) -> None:
    with Journal(path) as j:
        j.declare(Desired("k1", "ce", SPEC))
    desired, _ = _consistent(path)
    assert desired["k1"].spec.copies[0].secrets["TOKEN"].get_secret_value() == "s3cr3t-value"
    raw = sqlite3.connect(path).execute("SELECT spec FROM desired").fetchone()[0]
    assert "s3cr3t-value" in raw and "**********" not in raw


def test_each_record_returns_the_progress_it_wrote(journal: Journal) -> None:
    journal.declare(Desired("k", "ce", SPEC))
    assert journal.record_submit_intent("k") == journal.progress("k") == Progress(submit_intent=True)
    assert journal.clear_submit_intent("k") == Progress()


def test_an_observation_never_moves_the_recorded_state_backwards(journal: Journal) -> None:
    journal.declare(Desired("k", "ce", SPEC))
    journal.record_observation("k", JobStatus(job_id="1", state=JobState.RUNNING), seen_at=1.0)
    after = journal.record_observation("k", JobStatus(job_id="1", state=JobState.WAITING), seen_at=2.0)
    assert (after.state, after.last_seen) == (JobState.RUNNING, 2.0)


def test_observations_in_bulk_are_written_whole_or_not_at_all(journal: Journal) -> None:
    journal.declare(Desired("k", "ce", SPEC))
    with pytest.raises(KeyError):
        journal.record_observations([Observation("k", JobStatus(job_id="1", state=JobState.RUNNING)),
                                     Observation("nope", JobStatus(job_id="2", state=JobState.RUNNING))], 5.0)
    assert journal.progress("k").state is None


def test_a_batch_writes_all_its_records_in_one_transaction_or_none(path: Path, journal: Journal) -> None:
    journal.declare(Desired("a", "ce", SPEC))
    journal.declare(Desired("b", "ce", SPEC))
    with journal.batch():
        journal.record_submit_intent("a", "att-a")
        journal.record_job_id("b", "7")
        reader = sqlite3.connect(path)  # another connection sees nothing before the batch ends
        assert reader.execute("SELECT count(*) FROM progress WHERE job_id IS NOT NULL").fetchone()[0] == 0
        reader.close()
    assert journal.progress("a").submit_attempts == ("att-a",) and journal.progress("b").job_id == "7"
    with pytest.raises(KeyError), journal.batch():
        journal.record_submit_intent("a", "att-2")
        journal.record_job_id("nope", "8")
    assert journal.progress("a").submit_attempts == ("att-a",)  # the failed batch left nothing behind


# ---- declarations


def test_declaring_the_same_key_and_spec_again_changes_nothing(journal: Journal) -> None:
    journal.declare(Desired("k", "ce", SPEC))
    journal.set_phase("k", Phase.CANCELLED)
    again = journal.declare(Desired("k", "ce", SPEC.model_copy()))
    assert again.phase is Phase.CANCELLED
    assert journal.load()[0] == {"k": Desired("k", "ce", SPEC, Phase.CANCELLED)}


def test_declaring_a_key_again_with_a_different_spec_is_refused_naming_the_key(journal: Journal) -> None:
    journal.declare(Desired("wms.17", "ce", SPEC))
    other = SPEC.model_copy(update={"copies": [Copy(secrets={"TOKEN": SecretStr("another")})]})
    with pytest.raises(InvalidSpecError, match=r"'wms\.17'.*different spec"):
        journal.declare(Desired("wms.17", "ce", other))
    with pytest.raises(InvalidSpecError, match=r"'wms\.17'.*CE 'ce'"):
        journal.declare(Desired("wms.17", "other-ce", SPEC))
    assert journal.load()[0]["wms.17"].spec == SPEC


def test_collecting_without_a_destination_is_refused_and_nothing_changes(journal: Journal) -> None:
    journal.declare(Desired("k", "ce", SPEC))
    with pytest.raises(InvalidSpecError, match="destination"):
        journal.set_phase("k", Phase.COLLECTED)
    assert journal.load()[0]["k"].phase is Phase.RUNNING


def test_records_for_an_undeclared_key_raise_key_error(journal: Journal) -> None:
    with pytest.raises(KeyError):
        journal.record_job_id("ghost", "1")
    with pytest.raises(KeyError):
        journal.set_phase("ghost", Phase.CANCELLED)


def test_forget_removes_the_key_and_is_idempotent(journal: Journal) -> None:
    journal.declare(Desired("k", "ce", SPEC))
    journal.forget("k")
    journal.forget("k")
    assert journal.load() == ({}, {})


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


def test_a_second_owner_of_the_same_journal_is_refused(journal: Journal, path: Path) -> None:
    with pytest.raises(JournalError, match="only one reconciler"):
        Journal(path)
    journal.close()
    Journal(path).close()  # released on close


def test_a_closed_journal_raises_journal_error(journal: Journal) -> None:
    journal.close()
    journal.close()
    with pytest.raises(JournalError, match="closed"):
        journal.load()


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


def test_a_journal_from_a_newer_intercede_is_refused(path: Path) -> None:
    Journal(path).close()
    sqlite3.connect(path).execute("PRAGMA user_version = 99").connection.close()
    with pytest.raises(JournalError, match="upgrade intercede"):
        Journal(path)


# ---- secrets do not outlive their job (issue 14, item 3)


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
