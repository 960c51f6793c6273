"""The journal contract, the same tests on SQLite and PostgreSQL (ids ``sqlite``, ``postgresql``): round trips,
refusals, one transaction per write or per batch, one owner, secrets scrubbed at the job id, a versioned schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from intercede.errors import InvalidSpecError, JournalError
from intercede.model import Copy, JobState, JobStatus, ManifestEntry, OutputManifest
from intercede.reconcile import Desired, JournalStore, Observation, Phase, Progress
from tests.journal.conftest import SPEC, Store

pytestmark = pytest.mark.journal


def _consistent(store: Store) -> tuple[dict[str, Desired], dict[str, Progress]]:
    """Load the journal as a new owner and check no key is half there (a declaration without its progress, or the
    reverse)."""
    with store.open() as j:
        desired, progress = j.load()
    assert set(desired) == set(progress)
    return desired, progress


def _stored_specs(store: Store) -> dict[str, str]:
    return {key: spec for key, spec in store.query("SELECT key, spec FROM desired")}


# ---- round trips


def test_a_reopened_journal_loads_every_declaration_and_every_progress_field(store: Store) -> None:
    manifest = OutputManifest(job_id="42", destination=Path("/data/out/k1"),
                              files=[ManifestEntry(name="stdout.txt", size=3, sha256="ab" * 32)], missing=["x.root"])
    with store.open() as j:
        assert isinstance(j, JournalStore)
        j.declare(Desired("k1", "ce-a", SPEC))
        j.declare(Desired("k2", "ce-b", SPEC, Phase.COLLECTED, Path("/data/out/k2")))
        j.record_submit_intent("k1")
        j.record_job_id("k1", "42")
        j.record_observation("k1", JobStatus(job_id="42", state=JobState.DONE, native_state="COMPLETED",
                                             exit_code=3, reason="exit 3"), seen_at=1764595200.123456)
        j.record_cancel_sent("k1", 101.0)
        j.record_manifest("k1", manifest)
        j.record_purged("k1")
        j.record_error("k2", "submit: ConnectivityError: refused", permanent=False, next_attempt_at=200.0,
                       attempts=3)
        written = {"k1": j.progress("k1"), "k2": j.progress("k2")}
    desired, progress = _consistent(store)
    # k1 has a job id, so its secrets were scrubbed (only their names stay); k2 may still be submitted.
    scrubbed = SPEC.model_copy(update={"copies": [Copy(variables={"SEED": "7"}, secrets={"TOKEN": SecretStr("")})]})
    assert desired == {"k1": Desired("k1", "ce-a", scrubbed),
                       "k2": Desired("k2", "ce-b", SPEC, Phase.COLLECTED, Path("/data/out/k2"))}
    assert desired["k2"].spec.copies[0].secrets["TOKEN"].get_secret_value() == "s3cr3t-value"
    assert progress == written
    # A timestamp keeps its microseconds (PostgreSQL's REAL would round it to a minute or so).
    assert progress["k1"] == Progress(job_id="42", submit_intent=True, state=JobState.DONE, native_state="COMPLETED",
                                      exit_code=3, reason="exit 3", last_seen=1764595200.123456,
                                      cancel_sent_at=101.0, manifest=manifest, purged=True)
    assert progress["k2"].attempts == 3 and progress["k2"].next_attempt_at == 200.0
    assert progress["k2"].permanent_error is None


def test_secrets_are_stored_revealed_so_a_resubmit_after_a_restart_still_has_them(store: Store) -> None:
    with store.open() as j:
        j.declare(Desired("k1", "ce", SPEC))
    desired, _ = _consistent(store)
    assert desired["k1"].spec.copies[0].secrets["TOKEN"].get_secret_value() == "s3cr3t-value"
    raw = _stored_specs(store)["k1"]
    assert "s3cr3t-value" in raw and "**********" not in raw


def test_each_record_returns_the_progress_it_wrote(journal: JournalStore) -> None:
    journal.declare(Desired("k", "ce", SPEC))
    assert journal.record_submit_intent("k") == journal.progress("k") == Progress(submit_intent=True)
    assert journal.clear_submit_intent("k") == Progress()


def test_an_observation_never_moves_the_recorded_state_backwards(journal: JournalStore) -> None:
    journal.declare(Desired("k", "ce", SPEC))
    journal.record_observation("k", JobStatus(job_id="1", state=JobState.RUNNING), seen_at=1.0)
    after = journal.record_observation("k", JobStatus(job_id="1", state=JobState.WAITING), seen_at=2.0)
    assert (after.state, after.last_seen) == (JobState.RUNNING, 2.0)


def test_observations_in_bulk_are_written_whole_or_not_at_all(journal: JournalStore) -> None:
    journal.declare(Desired("k", "ce", SPEC))
    with pytest.raises(KeyError):
        journal.record_observations([Observation("k", JobStatus(job_id="1", state=JobState.RUNNING)),
                                     Observation("nope", JobStatus(job_id="2", state=JobState.RUNNING))], 5.0)
    assert journal.progress("k").state is None


def test_a_batch_writes_all_its_records_in_one_transaction_or_none(store: Store, journal: JournalStore) -> None:
    journal.declare(Desired("a", "ce", SPEC))
    journal.declare(Desired("b", "ce", SPEC))
    with journal.batch():
        journal.record_submit_intent("a", "att-a")
        journal.record_job_id("b", "7")
        with journal.batch():  # a nested batch joins the outer one
            journal.declare(Desired("c", "ce", SPEC))
        # Another connection sees nothing before the batch ends.
        assert store.query("SELECT count(*) FROM progress WHERE job_id IS NOT NULL") == [(0,)]
        assert store.query("SELECT count(*) FROM desired") == [(2,)]
    assert journal.progress("a").submit_attempts == ("att-a",) and journal.progress("b").job_id == "7"
    assert store.query("SELECT count(*) FROM desired") == [(3,)]
    with pytest.raises(KeyError), journal.batch():
        journal.record_submit_intent("a", "att-2")
        journal.declare(Desired("d", "ce", SPEC))
        journal.record_job_id("nope", "8")
    assert journal.progress("a").submit_attempts == ("att-a",)  # the failed batch left nothing behind
    desired, progress = journal.load()
    assert set(desired) == set(progress) == {"a", "b", "c"}


# ---- declarations


def test_declaring_the_same_key_and_spec_again_changes_nothing(journal: JournalStore) -> None:
    journal.declare(Desired("k", "ce", SPEC))
    journal.set_phase("k", Phase.CANCELLED)
    again = journal.declare(Desired("k", "ce", SPEC.model_copy()))
    assert again.phase is Phase.CANCELLED
    assert journal.load()[0] == {"k": Desired("k", "ce", SPEC, Phase.CANCELLED)}


def test_declaring_a_key_again_with_a_different_spec_is_refused_naming_the_key(journal: JournalStore) -> None:
    journal.declare(Desired("wms.17", "ce", SPEC))
    other = SPEC.model_copy(update={"copies": [Copy(secrets={"TOKEN": SecretStr("another")})]})
    with pytest.raises(InvalidSpecError, match=r"'wms\.17'.*different spec"):
        journal.declare(Desired("wms.17", "ce", other))
    with pytest.raises(InvalidSpecError, match=r"'wms\.17'.*CE 'ce'"):
        journal.declare(Desired("wms.17", "other-ce", SPEC))
    assert journal.load()[0]["wms.17"].spec == SPEC


def test_collecting_without_a_destination_is_refused_and_nothing_changes(journal: JournalStore) -> None:
    journal.declare(Desired("k", "ce", SPEC))
    with pytest.raises(InvalidSpecError, match="destination"):
        journal.set_phase("k", Phase.COLLECTED)
    assert journal.load()[0]["k"].phase is Phase.RUNNING


def test_records_for_an_undeclared_key_raise_key_error(journal: JournalStore) -> None:
    with pytest.raises(KeyError):
        journal.record_job_id("ghost", "1")
    with pytest.raises(KeyError):
        journal.set_phase("ghost", Phase.CANCELLED)
    with pytest.raises(KeyError):
        journal.progress("ghost")


def test_forget_removes_the_key_and_is_idempotent(store: Store, journal: JournalStore) -> None:
    journal.declare(Desired("k", "ce", SPEC))
    journal.forget("k")
    journal.forget("k")
    journal.wipe()
    assert journal.load() == ({}, {})
    assert store.query("SELECT count(*) FROM desired") == [(0,)]


# ---- one owner


def test_a_second_owner_of_the_same_journal_is_refused(store: Store, journal: JournalStore) -> None:
    with pytest.raises(JournalError, match="only one reconciler"):
        store.open()
    journal.close()
    store.open().close()  # released on close


def test_a_closed_journal_raises_journal_error(journal: JournalStore) -> None:
    journal.close()
    journal.close()
    with pytest.raises(JournalError, match="closed"):
        journal.load()
    with pytest.raises(JournalError, match="closed"):
        journal.declare(Desired("k", "ce", SPEC))


# ---- secrets do not outlive their job (issue 14, item 3)


def test_secrets_are_scrubbed_in_the_transaction_that_records_the_job_id(store: Store, journal: JournalStore) -> None:
    other = SPEC.model_copy(update={"copies": [Copy(secrets={"TOKEN": SecretStr("other-secret-42")})]})
    journal.declare(Desired("k1", "ce-a", SPEC))
    journal.declare(Desired("k2", "ce-a", other))
    journal.record_submit_intent("k1", "0123456789abcdef")
    assert "s3cr3t-value" in _stored_specs(store)["k1"], "stored revealed while a resubmit may need it"
    with pytest.raises(KeyError), journal.batch():  # a job id that is not written scrubs nothing either
        journal.record_job_id("k1", "42")
        journal.record_job_id("ghost", "43")
    assert "s3cr3t-value" in _stored_specs(store)["k1"]
    journal.record_job_id("k1", "42")
    journal.wipe()
    specs = _stored_specs(store)
    assert "s3cr3t-value" not in specs["k1"] and json.loads(specs["k1"])["copies"][0]["secrets"] == {"TOKEN": ""}
    assert "other-secret-42" in specs["k2"], "a key without a job keeps its secrets"
    assert journal.progress("k1").job_id == "42"
    journal.forget("k2")
    journal.wipe()
    assert set(_stored_specs(store)) == {"k1"}
    # The same declaration again is still the same declaration (its secrets are no longer compared).
    assert journal.declare(Desired("k1", "ce-a", SPEC)).spec.copies[0].secrets["TOKEN"].get_secret_value() == ""
    with pytest.raises(InvalidSpecError, match="different spec"):
        journal.declare(Desired("k1", "ce-a", SPEC.model_copy(update={"executable": "other.sh"})))


# ---- schema


def test_a_journal_from_a_newer_intercede_is_refused(store: Store) -> None:
    store.open().close()
    if store.kind == "sqlite":
        store.execute("PRAGMA user_version = 99")
    else:
        store.execute("UPDATE journal_meta SET schema_version = 99")
    with pytest.raises(JournalError, match="upgrade intercede"):
        store.open()
    store.execute("PRAGMA user_version = 2" if store.kind == "sqlite" else "UPDATE journal_meta SET schema_version = 2")
    store.open().close()  # the refused open left no lock behind
