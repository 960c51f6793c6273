"""The ARC parsers on A-REX's real answers, recorded per release by ``tests/data/arc/record.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from intercede.backends.arc import _parse
from intercede.model import JobState, JobStatus

DATA = Path(__file__).resolve().parents[1] / "data" / "arc"
RELEASES = ["6.17", "7.0", "7.2"]


def load(release: str, name: str) -> Any:
    return json.loads((DATA / release / f"{name}.json").read_text())


@pytest.fixture(params=RELEASES, ids=[f"arc-{r}" for r in RELEASES])
def release(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_versions_are_negotiated_to_the_newest_both_speak(release: str) -> None:
    offered = _parse.versions(load(release, "rest_versions"))
    assert _parse.pick_version(offered) == ("1.0" if release == "6.17" else "1.1")
    assert _parse.pick_version(["2.0"]) is None


def test_a_submit_answer_gives_an_id_per_accepted_description_and_the_reason_per_refused_one(release: str) -> None:
    entries = _parse.submitted(load(release, "submit"), 4)
    assert [e.ok for e in entries] == [True, True, True, False]
    assert all(e.job_id for e in entries[:3]) and entries[3].job_id is None
    assert "queue" in entries[3].reason.lower()
    with pytest.raises(ValueError, match="4 entries for 5"):
        _parse.submitted(load(release, "submit"), 5)


def test_final_info_maps_to_done_failed_and_aborted_with_exit_codes(release: str) -> None:
    jobs = load(release, "captures")["jobs"]
    entries = _parse.bulk(load(release, "info_final"))
    status = {role: _parse.job_status(_parse.activity(entries[i])) for role, i in jobs.items()}  # type: ignore[arg-type]
    assert (status["ok"].state, status["ok"].exit_code, status["ok"].native_state) == (JobState.DONE, 0, "FINISHED")
    assert (status["fail"].state, status["fail"].exit_code) == (JobState.FAILED, 3)
    assert "exit code" in status["fail"].reason
    assert (status["sleep"].state, status["sleep"].native_state) == (JobState.ABORTED, "KILLED")
    assert _parse.activity(entries["ffffffffffff"]) is None and entries["ffffffffffff"].code == 404


def test_the_stand_in_for_a_job_just_created_is_told_from_written_information(release: str) -> None:
    jobs = load(release, "captures")["jobs"]
    fresh = _parse.bulk(load(release, "info_fresh"))
    written = {role: act.written for role, i in jobs.items() if (act := _parse.activity(fresh[i])) is not None}
    # Recorded right after the submit: A-REX 7.x had not written the second job's information yet (its stand-in
    # has a state but no Name), 6.17 had written both; by the end every job's is written.
    assert written == {"ok": True, "fail": release == "6.17", "sleep": release == "6.17"}, written
    assert all(a.state for i in jobs.values() if (a := _parse.activity(fresh[i])) is not None)
    final = _parse.bulk(load(release, "info_final"))
    assert all(a.written for i in jobs.values() if (a := _parse.activity(final[i])) is not None)


def test_bulk_answers_are_matched_by_id_not_position(release: str) -> None:
    doc = load(release, "status_final")
    reversed_doc = {"job": list(reversed(doc["job"]))}
    assert _parse.bulk(doc) == _parse.bulk(reversed_doc)
    assert {e.code for e in _parse.bulk(load(release, "info_cleaned")).values()} == {404}
    assert {e.code for e in _parse.bulk(load(release, "clean")).values()} == {202, 404}


def test_a_running_job_is_running_and_every_state_seen_is_mapped(release: str) -> None:
    (entry,) = _parse.bulk(load(release, "info_running")).values()
    act = _parse.activity(entry)
    assert act is not None and _parse.job_status(act).state is JobState.RUNNING and act.name == "rec-sleep"
    for trace in load(release, "states").values():
        for word in trace:
            if not word.startswith("<"):
                assert _parse.job_status(_parse.Activity("x", word)).state is not JobState.UNKNOWN, word


def test_the_session_listing_nests_and_the_glue2_document_gives_load(release: str) -> None:
    top = _parse.listing(load(release, "list_session"))
    assert {"stdout.txt", "stderr.txt"} <= set(top.files) and top.dirs == ["d"] and not top.refused
    assert _parse.listing(load(release, "list_session_d_e")).files == ["f"]
    busy = _parse.load(load(release, "glue2_info_busy"))
    assert busy.running >= 1 and busy.total_cores == 2 and busy.free_cores is not None
    assert _parse.load(load(release, "glue2_info_idle")).running == 0


@pytest.mark.parametrize("state", ["HELD", "EXITINGLRMS", "OTHER", "EXECUTED", "FINISHING", "QUEUING", "PREPARING"])
def test_non_terminal_states_stay_non_terminal(state: str) -> None:
    assert not _parse.job_status(_parse.Activity("x", state)).state.is_terminal


def test_wiped_keeps_the_last_state_and_finished_with_an_exit_code_is_failed() -> None:
    last = JobStatus(job_id="x", state=JobState.DONE, exit_code=0, native_state="FINISHED")
    wiped = _parse.job_status(_parse.Activity("x", "WIPED"), last)
    assert (wiped.state, wiped.exit_code, wiped.native_state) == (JobState.DONE, 0, "WIPED")
    assert _parse.job_status(_parse.Activity("x", "WIPED")).state is JobState.UNKNOWN
    assert _parse.job_status(_parse.Activity("x", "FINISHED", exit_code=2)).state is JobState.FAILED
    assert _parse.job_status(_parse.Activity("x", "NEWWORD")).reason == "unrecognised ARC state 'NEWWORD'"


def test_hostile_names_in_a_listing_are_refused_per_entry() -> None:
    got = _parse.listing({"file": ["ok.txt", "../../etc/passwd", "/etc/shadow", "a/b", "..", ".", "", "x\0y",
                                   "\u00c3\u00a9.txt"], "dir": ["..", "sub"]})
    assert got.files == ["ok.txt", "é.txt"] and got.dirs == ["sub"]
    assert set(got.refused) == {"../../etc/passwd", "/etc/shadow", "a/b", "..", ".", "", "x\0y"}
    assert _parse.file_name("\u00e9") == "\u00e9"  # not UTF-8 as bytes: kept as it came
    assert _parse.rest_state(["nordugrid:FAILED::INLRMS", "file:inlrms"]) == "FAILED"


def test_an_instances_answer_gives_each_copy_a_job_or_the_refusal() -> None:
    # the shape A-REX 7.2 answers POST jobs?action=new&instances=N with (recorded by hand from the stack)
    made = {"job": [{"status-code": "201", "reason": "Created", "id": f"cbafb590cb1{i}", "state": "ACCEPTING"}
                    for i in range(2)]}
    entries = _parse.instances(made, 3)
    assert [e.job_id for e in entries[:2]] == ["cbafb590cb10", "cbafb590cb11"]
    assert not entries[2].ok and "no more jobs allowed" in entries[2].reason.lower()
    refused = {"job": [{"status-code": "500", "reason": "Requested queue x is not allowed for this user"}]}
    assert [e.reason for e in _parse.instances(refused, 2)] == ["Requested queue x is not allowed for this user"] * 2
    with pytest.raises(ValueError, match="entries for 1 instances"):
        _parse.instances(made, 1)


@pytest.mark.parametrize("name", ["a\nb", "tab\there", "del\x7f", "sub\n/f"])
def test_an_output_name_with_a_control_character_is_one_arex_cannot_keep(name: str) -> None:
    assert "control character" in (_parse.unkeepable(name) or "")


@pytest.mark.parametrize("name", ["out.txt", "-rf", "$(touch pwned);x", "a b;c&d|e>f", "é/ü.txt"])
def test_other_output_names_are_kept(name: str) -> None:
    assert _parse.unkeepable(name) is None
