"""HTCondor's parsers on real outputs recorded from 23.9 and 25.x, through the CLI and through the bindings.

The recordings live in ``tests/data/htcondor/<release>/`` (regenerate: ``.venv/bin/python -m
tests.data.htcondor.record``); ``captures.json`` names each job by the role it played. Test ids name the release.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from intercede.backends.capabilities import LoadReport
from intercede.backends.htcondor import _htcondor as core
from intercede.backends.schedulers.base import BatchJob
from intercede.backends.schedulers.htcondor import HTCondorScheduler
from intercede.backends.transports.base import CommandResult
from intercede.errors import CommandError, ConnectivityError
from intercede.model import JobState
from tests.data.recordings import Recording as _Recording

DATA = Path(__file__).resolve().parents[1] / "data" / "htcondor"
RELEASES = {"23.9": "23.9", "25": "25.x"}
S = HTCondorScheduler()

pytestmark = pytest.mark.htcondor

#: role -> (state, exit code, a word the reason must contain) for every job the recorder left in a known state.
EXPECTED: dict[str, tuple[JobState, int | None, str]] = {
    "completed": (JobState.DONE, 0, ""),
    "failed": (JobState.FAILED, 3, ""),
    "running": (JobState.RUNNING, None, ""),
    "wide": (JobState.WAITING, None, ""),
    "held": (JobState.ABORTED, None, "site maintenance"),
    "exit_hold": (JobState.FAILED, 3, "JobPolicy"),
    "signalled": (JobState.FAILED, None, "signal 9"),
    "removed": (JobState.ABORTED, None, "condor_rm"),
    "spooling": (JobState.WAITING, None, "SpoolingInput"),
}


class Recording(_Recording):
    def __init__(self, release: str) -> None:
        super().__init__(DATA / release)

    def job(self, role: str) -> BatchJob:
        return BatchJob(self.id(role), f"/home/tester/jobs/{role}")

    def ads(self, name: str) -> list[dict[str, Any]]:
        ads: list[dict[str, Any]] = json.loads((self.folder / f"{name}.json").read_text())
        return ads


@pytest.fixture(params=list(RELEASES), ids=list(RELEASES.values()))
def rec(request: pytest.FixtureRequest) -> Recording:
    return Recording(request.param)


def _check(role: str, status: Any) -> None:
    state, exit_code, word = EXPECTED[role]
    assert (status.state, status.exit_code) == (state, exit_code), (role, status)
    assert word in status.reason, (role, status)


def test_the_recordings_are_from_the_release_their_folder_names(rec: Recording) -> None:
    assert rec.meta["condor_version"].startswith(rec.folder.name + ".")


def test_submit_prints_the_job_id(rec: Recording) -> None:
    assert S.parse_submit(rec.result("submit_ok")) == rec.id("completed")


def test_a_submit_the_schedd_refuses_raises_with_its_reason(rec: Recording) -> None:
    with pytest.raises(CommandError, match="no container jobs") as info:
        S.parse_submit(rec.result("submit_refused"))
    assert not isinstance(info.value, ConnectivityError)


def test_every_queued_job_maps_to_its_state(rec: Recording) -> None:
    found = S.parse_status(rec.result("q_mixed"), [])
    roles = {r for r in EXPECTED if rec.id(r) in found}
    assert roles == {"running", "wide", "held", "exit_hold", "spooling"}
    for role in roles:
        _check(role, found[rec.id(role)])
    assert rec.meta["unknown"] not in found


def test_a_queue_listing_of_only_unknown_jobs_is_empty_output_not_json(rec: Recording) -> None:
    assert rec.result("q_unknown").stdout == b""
    assert S.parse_status(rec.result("q_unknown"), []) == {}


def test_every_finished_job_is_in_the_history_with_its_exit(rec: Recording) -> None:
    found = S.parse_history(rec.result("history_mixed"), [])
    for role in ("completed", "failed", "signalled", "removed"):
        _check(role, found[rec.id(role)])


def test_the_bindings_read_the_same_states_as_the_command_line(rec: Recording) -> None:
    ads = rec.ads("bindings_queue") + rec.ads("bindings_history")
    by_id = {f"{ad['ClusterId']}.{ad['ProcId']}": core.job_status("x", ad) for ad in ads}
    for role in EXPECTED:
        _check(role, by_id[rec.id(role)])


def test_held_for_spooling_is_waiting_not_a_failure(rec: Recording) -> None:
    (ad,) = [a for a in rec.ads("bindings_queue") if a.get(core.TAG) == "rec-spooling"]
    assert (ad["JobStatus"], ad["HoldReasonCode"]) == (5, 16)
    assert core.native_status(ad).state is JobState.WAITING


def test_cancel_reports_each_job_it_could_not_reach(rec: Recording) -> None:
    failed = S.parse_cancel(rec.result("rm_mixed"), [rec.job("running"), rec.job("completed")])
    assert set(failed) == {rec.id("completed"), rec.meta["unknown"]}
    assert all("no such job" in why for why in failed.values())
    assert S.parse_cancel(rec.result("rm_unknown"), []) == {rec.meta["unknown"]: failed[rec.meta["unknown"]]}


def test_a_bare_cluster_id_is_never_handed_to_condor_rm(rec: Recording) -> None:
    jobs = [BatchJob("999999", "/x"), BatchJob("-all", "/y")]
    assert S.cancel_argv(jobs) == ["true"]
    assert set(S.parse_cancel(CommandResult(("true",), 0, b"", b"", 0.0), jobs)) == {"999999", "-all"}


def test_jobs_are_found_by_tag_in_the_queue_and_the_history(rec: Recording) -> None:
    found = S.parse_find([rec.result("find_q"), rec.result("find_history")], rec.meta["find_tags"])
    assert found == {rec.meta["tags"]["completed"]: [rec.job("completed")],
                     rec.meta["tags"]["running"]: [rec.job("running")], "rec-absent": []}


def test_load_counts_the_partitionable_slot_once(rec: Recording) -> None:
    assert S.parse_load(rec.result("load")) == LoadReport(total_cores=4, free_cores=3, running=1, queued=1)


@pytest.mark.parametrize("capture", ["q_schedd_down", "rm_schedd_down", "submit_schedd_down"])
def test_a_schedd_that_is_down_is_unreachable_not_a_failed_job(rec: Recording, capture: str) -> None:
    with pytest.raises(ConnectivityError, match="schedd cannot be reached"):
        if capture.startswith("submit"):
            S.parse_submit(rec.result(capture))
        elif capture.startswith("rm"):
            S.parse_cancel(rec.result(capture), [rec.job("held")])
        else:
            S.parse_status(rec.result(capture), [rec.job("running")])


def test_the_stock_client_sets_the_release_s_own_leave_in_queue(rec: Recording) -> None:
    """What a spooled submit gets without intercede's leave_in_queue (see docs/htcondor.md): from 25.x on, the client
    adds ``(StageOutFinish ?: 0) < EnteredCurrentStatus`` and the job leaves the queue once its output is fetched."""
    stock = (rec.folder / "stock_leave_in_queue.txt").read_text()
    assert ("StageOutFinish" in stock) is rec.folder.name.startswith("25")
