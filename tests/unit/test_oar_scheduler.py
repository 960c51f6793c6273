"""OARScheduler: argv builders, and parsers run on real outputs recorded from OAR 2.5.9.

The recordings live in ``tests/data/oar/<version>/`` (regenerate: ``.venv/bin/python -m tests.data.oar.record``);
``captures.json`` names each job by the role it played. Test ids name the version.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from intercede.backends.schedulers import Scheduler
from intercede.backends.schedulers.base import BatchJob, BulkRequest, BulkScheduler, SubmitRequest
from intercede.backends.schedulers.oar import OARScheduler, exit_code_of, status_of
from intercede.backends.transports.base import CommandResult
from intercede.errors import CommandError, ConnectivityError, InvalidSpecError
from intercede.model import JobState, Resources
from tests.data.recordings import Recording as _Recording

DATA = Path(__file__).resolve().parents[1] / "data" / "oar"
VERSIONS = sorted(p.parent.name for p in DATA.glob("*/captures.json"))
ROOT = "/home/tester/jobs"
PREFIX = "0123456789ab"
S = OARScheduler(ROOT)


class Recording(_Recording):
    def __init__(self, version: str) -> None:
        super().__init__(DATA / version)

    def job(self, role: str) -> BatchJob:
        if role.startswith("array"):
            return BatchJob(self.meta["jobs"][role], f"{ROOT}/{PREFIX}{int(role[5:]):04d}")
        return BatchJob(self.meta["jobs"][role], f"{ROOT}/{role}")

    def roles(self, found: dict[str, Any]) -> dict[str, Any]:
        names = {v: k for k, v in self.meta["jobs"].items()}
        return {names.get(i, i): v for i, v in found.items()}


@pytest.fixture(params=VERSIONS, ids=[f"oar-{v}" for v in VERSIONS])
def rec(request: pytest.FixtureRequest) -> Recording:
    return Recording(request.param)


def _bulk(count: int = 3, tag: str | None = "key", first: int = 0) -> BulkRequest:
    dirs = tuple(f"{ROOT}/{PREFIX}{k:04d}" for k in range(count))
    return BulkRequest(ROOT, PREFIX, first, count, tag, Resources(), dirs, tuple(f"{d}/job.sh" for d in dirs),
                       f"{ROOT}/{PREFIX}ffff")


def test_every_version_is_recorded() -> None:
    assert VERSIONS == ["2.5.9"]


def test_the_scheduler_satisfies_the_protocols() -> None:
    assert isinstance(S, Scheduler) and isinstance(S, BulkScheduler)


def test_submit_maps_resources_names_the_job_after_its_tag_and_quotes_the_command() -> None:
    request = SubmitRequest("/r/a b/job.sh", "/r/a b", "key-1.0",
                            Resources(cores=4, nodes=2, wall_time=timedelta(minutes=90, seconds=1), queue="long",
                                      account="lhcb", native=["-p", "cluster='x'"]))
    argv = S.submit_argv(request)
    assert argv[0] == "oarsub" and argv[argv.index("-n") + 1] == "key-1.0"
    assert argv[argv.index("-d") + 1] == "/r/a b" and argv[argv.index("-O") + 1] == "/r/a b/.oar.out"
    assert argv[argv.index("-l") + 1] == "/nodes=2/core=4,walltime=1:30:01"
    assert argv[argv.index("-q") + 1] == "long" and argv[argv.index("--project") + 1] == "lhcb"
    assert argv[-3:] == ["-p", "cluster='x'", "/bin/sh '/r/a b/job.sh'"]  # oarsub's command is a shell line


def test_memory_and_gpus_need_the_sites_own_request() -> None:
    for resources in (Resources(memory_mb=1000), Resources(gpus=1)):
        with pytest.raises(InvalidSpecError, match="native"):
            S.submit_argv(SubmitRequest("/r/u/job.sh", "/r/u", "t", resources))


@pytest.mark.parametrize("tag", ["a b", "a'b", "a\\b", "a,b", "a)b", "123", "", "-x"])
def test_names_oar_cannot_take_or_sql_cannot_hold_are_refused(tag: str) -> None:
    with pytest.raises(InvalidSpecError, match="OAR job name"):
        S.submit_argv(SubmitRequest("/r/u/job.sh", "/r/u", tag or "'", Resources()))
    with pytest.raises(InvalidSpecError):
        S.find_argvs([tag or "'"])


def test_oarsub_prints_the_id_of_a_job_and_of_each_job_of_an_array(rec: Recording) -> None:
    assert S.parse_submit(rec.result("oarsub_ok")) == rec.meta["jobs"]["ok"]
    ids = S.parse_submit_bulk(rec.result("oarsub_array"), _bulk())
    assert ids == [rec.meta["jobs"][f"array{k}"] for k in range(3)]
    with pytest.raises(ConnectivityError, match="may have been submitted"):
        S.parse_submit_bulk(rec.result("oarsub_array"), _bulk(count=4))


@pytest.mark.parametrize(("capture", "word"), [("oarsub_bad_queue", "queue no-such-queue does not exist"),
                                               ("oarsub_too_many_cores", "not enough resources")])
def test_a_job_that_could_never_run_is_refused_at_submit_with_oarsubs_reason(rec: Recording, capture: str,
                                                                           word: str) -> None:
    with pytest.raises(CommandError, match=word) as info:
        S.parse_submit(rec.result(capture))
    assert not isinstance(info.value, ConnectivityError)


def test_with_the_server_down_a_submit_may_have_landed_and_a_cancel_is_a_connectivity_error(rec: Recording) -> None:
    with pytest.raises(ConnectivityError, match="may have been submitted"):
        S.parse_submit(rec.result("oarsub_server_down"))
    with pytest.raises(ConnectivityError):
        S.parse_cancel(rec.result("oardel_server_down"), [rec.job("fail")])


def test_oarstat_reports_each_live_state(rec: Recording) -> None:
    jobs = [rec.job(r) for r in ("running", "held", "cancel_run", "cancel_held")] + [BatchJob("99999", f"{ROOT}/x")]
    found = rec.roles(S.parse_status(rec.result("oarstat_live"), jobs))
    assert {r: (s.state, s.native_state, s.exit_code) for r, s in found.items()} == {
        "running": (JobState.RUNNING, "Running", None), "held": (JobState.WAITING, "Hold", None),
        "cancel_run": (JobState.RUNNING, "Running", None), "cancel_held": (JobState.WAITING, "Hold", None),
    }  # the unknown id is simply absent
    assert found["held"].reason == "held"


def test_oarstat_gives_exit_codes_kills_walltimes_and_launch_failures_of_finished_jobs(rec: Recording) -> None:
    roles = ("ok", "fail", "error", "walltime", "cancel_run", "cancel_held", "array0", "array1", "array2")
    found = rec.roles(S.parse_status(rec.result("oarstat_final"), [rec.job(r) for r in roles]))
    assert {r: (s.state, s.exit_code) for r, s in found.items()} == {
        "ok": (JobState.DONE, 0), "fail": (JobState.FAILED, 3), "error": (JobState.FAILED, None),
        "walltime": (JobState.FAILED, None), "cancel_run": (JobState.ABORTED, None),
        "cancel_held": (JobState.ABORTED, None), "array0": (JobState.DONE, 0), "array1": (JobState.FAILED, 1),
        "array2": (JobState.FAILED, 2),
    }
    assert "working directory" in found["error"].reason and found["walltime"].reason == "walltime exceeded"
    assert "oardel" in found["cancel_run"].reason


def test_an_unknown_id_is_an_empty_answer(rec: Recording) -> None:
    assert S.parse_status(rec.result("oarstat_unknown"), [BatchJob("99999", f"{ROOT}/x")]) == {}


def test_oardel_reports_unknown_ids_per_id_and_is_not_a_failure_as_a_whole(rec: Recording) -> None:
    jobs = [rec.job("cancel_run"), rec.job("cancel_held"), BatchJob("99999", f"{ROOT}/x")]
    assert S.parse_cancel(rec.result("oardel_mixed"), jobs) == {"99999": "You are not the right user."}
    finished = S.parse_cancel(rec.result("oardel_finished"), [rec.job("ok"), rec.job("cancel_run")])
    assert list(finished) == [rec.meta["jobs"]["cancel_run"]]  # Terminated is "REGISTERED"; Error is refused


def test_tags_are_found_with_their_directory_and_array_copies_with_their_copys(rec: Recording) -> None:
    tags = ["rec-running", "rec-ok", "rec-array.1", "rec-nope"]
    found = S.parse_find([rec.result("find")], tags)
    assert found == {"rec-running": [rec.job("running")], "rec-ok": [rec.job("ok")],
                     "rec-array.1": [rec.job("array1")], "rec-nope": []}


def test_a_job_working_outside_the_root_is_not_ours() -> None:
    text = json.dumps({"9": {"name": "key", "launchingDirectory": "/elsewhere/ab12", "array_index": 1}}).encode()
    assert S.parse_find([CommandResult(("oarstat",), 0, text, b"", 0.1)], ["key"]) == {"key": []}


def test_load_counts_alive_and_free_cores_and_the_callers_jobs(rec: Recording) -> None:
    load = S.parse_load(rec.result("load"))
    # "running" holds 2 cores and "cancel_run" 1; the two held jobs are the queued ones
    assert load.total_cores == 8 and load.free_cores is not None and 0 <= load.free_cores <= 8 - 3
    assert load.running >= 2 and load.queued >= 2


def test_the_array_launcher_runs_copy_k_for_oar_array_index_k_plus_one() -> None:
    launcher = S.bulk_launcher(_bulk()) or ""
    assert '"$((${OAR_ARRAY_INDEX:?} - 1))"' in launcher and f"cd {ROOT}/{PREFIX}\"$k\"" in launcher
    argv = S.submit_bulk_argv(_bulk(first=1000))
    assert argv[argv.index("--array") + 1] == "3" and argv[argv.index("-n") + 1] == "key.*1000"
    assert argv[argv.index("-d") + 1] == f"{ROOT}/{PREFIX}ffff" and argv[-1] == f"/bin/sh {ROOT}/{PREFIX}ffff/array.sh"


@pytest.mark.parametrize(("status", "code"), [(0, 0), (768, 3), (32512, 127), (9, 137), (15, 143), (None, None)])
def test_exit_codes_are_decoded_from_the_wait_status(status: int | None, code: int | None) -> None:
    assert exit_code_of(status) == code


@pytest.mark.parametrize(("state", "expected"), [("Waiting", JobState.WAITING), ("Hold", JobState.WAITING),
                                                 ("toLaunch", JobState.WAITING), ("Launching", JobState.WAITING),
                                                 ("toAckReservation", JobState.WAITING),
                                                 ("Running", JobState.RUNNING), ("Finishing", JobState.RUNNING),
                                                 ("Suspended", JobState.RUNNING), ("Resuming", JobState.RUNNING),
                                                 ("toError", JobState.FAILED), ("Error", JobState.FAILED),
                                                 ("Nonsense", JobState.UNKNOWN)])
def test_states(state: str, expected: JobState) -> None:
    assert status_of({"state": state, "events": []}).state is expected


def test_garbled_json_is_a_command_error_never_a_state() -> None:
    with pytest.raises(CommandError, match="not JSON"):
        S.parse_status(CommandResult(("oarstat",), 0, b'{"1": {', b"", 0.1), [BatchJob("1", "/w")])
