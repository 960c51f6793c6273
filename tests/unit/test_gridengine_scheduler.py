"""GridEngineScheduler: argv builders, and parsers run on real outputs recorded from Son of Grid Engine 8.1.9.

The recordings live in ``tests/data/sge/<version>/`` (regenerate: ``.venv/bin/python -m tests.data.sge.record``);
``captures.json`` names each job by the role it played. Test ids name the version.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from intercede.backends.schedulers import Scheduler
from intercede.backends.schedulers.base import BatchJob, SubmitRequest
from intercede.backends.schedulers.gridengine import GridEngineScheduler, state_of
from intercede.backends.transports.base import CommandResult
from intercede.errors import CommandError, ConnectivityError, InvalidSpecError
from intercede.model import JobState, Resources

DATA = Path(__file__).resolve().parents[1] / "data" / "sge"
VERSIONS = sorted(p.parent.name for p in DATA.glob("*/captures.json"))
ROOT = "/home/tester/jobs"
S = GridEngineScheduler(ROOT)


class Recording:
    def __init__(self, version: str) -> None:
        self.folder = DATA / version
        self.meta: dict[str, Any] = json.loads((self.folder / "captures.json").read_text())

    def result(self, name: str) -> CommandResult:
        capture = self.meta["captures"][name]
        stderr = self.folder / f"{name}.stderr"
        return CommandResult(tuple(capture["argv"]), capture["exit_status"], (self.folder / f"{name}.txt").read_bytes(),
                             stderr.read_bytes() if stderr.exists() else b"", 0.1)

    def job(self, role: str) -> BatchJob:
        return BatchJob(self.meta["jobs"][role], f"{ROOT}/{role}")

    def roles(self, found: dict[str, Any]) -> dict[str, Any]:
        names = {v: k for k, v in self.meta["jobs"].items()}
        return {names.get(i, i): v for i, v in found.items()}


@pytest.fixture(params=VERSIONS, ids=[f"sge-{v}" for v in VERSIONS])
def rec(request: pytest.FixtureRequest) -> Recording:
    return Recording(request.param)


def test_every_version_is_recorded() -> None:
    assert VERSIONS == ["8.1.9"]


def test_the_scheduler_satisfies_the_protocol() -> None:
    assert isinstance(S, Scheduler)


def test_submit_maps_resources_and_names_the_job_after_its_tag_and_attempt() -> None:
    request = SubmitRequest("/r/ab12/job.sh", "/r/ab12", "key-1.0",
                            Resources(cores=4, memory_mb=8000, wall_time=timedelta(minutes=90), queue="long.q",
                                      account="lhcb", native=["-P", "prod"]))
    argv = S.submit_argv(request)
    assert argv[:3] == ["qsub", "-terse", "-w"] and argv[-1] == "/r/ab12/job.sh"
    assert argv[argv.index("-N") + 1] == "key-1.0~ab12"
    assert argv[argv.index("-pe") + 1:argv.index("-pe") + 3] == ["smp", "4"]
    assert argv[argv.index("-l") + 1] == "h_vmem=2000M,h_rt=5400"  # h_vmem is per slot
    assert argv[argv.index("-q") + 1] == "long.q" and argv[argv.index("-A") + 1] == "lhcb"
    assert argv[-3:-1] == ["-P", "prod"]


@pytest.mark.parametrize("tag", ["a b", "a,b", "a/b", "a:b", "a@b", "a*", "a?", "a[1]", "a~b", "123", "a'b"])
def test_tags_grid_engine_cannot_name_or_search_are_refused(tag: str) -> None:
    with pytest.raises(InvalidSpecError, match="Grid Engine job name"):
        S.submit_argv(SubmitRequest("/r/u/job.sh", "/r/u", tag, Resources()))
    with pytest.raises(InvalidSpecError):
        S.find_argvs([tag])


def test_gpus_and_several_nodes_need_the_sites_own_request() -> None:
    for resources in (Resources(gpus=1), Resources(nodes=2)):
        with pytest.raises(InvalidSpecError, match="native"):
            S.submit_argv(SubmitRequest("/r/u/job.sh", "/r/u", "t", resources))


def test_qsub_prints_the_id_of_a_job_and_of_an_array(rec: Recording) -> None:
    assert S.parse_submit(rec.result("qsub_ok")) == rec.meta["jobs"]["ok"]
    assert S.parse_submit(rec.result("qsub_array")) == rec.meta["jobs"]["array"]


@pytest.mark.parametrize(("capture", "word"), [("qsub_bad_queue", "unknown queue"),
                                               ("qsub_too_many_cores", "no suitable queues")])
def test_a_job_that_could_never_run_is_refused_at_submit_with_qsubs_reason(rec: Recording, capture: str,
                                                                          word: str) -> None:
    with pytest.raises(CommandError, match=word) as info:
        S.parse_submit(rec.result(capture))
    assert not isinstance(info.value, ConnectivityError)


def test_every_command_with_the_master_down_is_a_connectivity_error(rec: Recording) -> None:
    with pytest.raises(ConnectivityError, match="may have been submitted"):
        S.parse_submit(rec.result("qsub_master_down"))
    with pytest.raises(ConnectivityError):
        S.parse_status(rec.result("qstat_master_down"), [rec.job("ok")])
    with pytest.raises(ConnectivityError):
        S.parse_cancel(rec.result("qdel_master_down"), [rec.job("ok")])


def test_qstat_reports_each_live_state_of_the_callers_jobs(rec: Recording) -> None:
    jobs = [rec.job(r) for r in ("running", "held", "error", "cancel_run", "cancel_pending", "array", "ok")]
    found = rec.roles(S.parse_status(rec.result("qstat_live"), jobs))
    assert {r: (s.state, s.native_state) for r, s in found.items()} == {
        "running": (JobState.RUNNING, "r"), "held": (JobState.WAITING, "hqw"), "error": (JobState.FAILED, "Eqw"),
        "cancel_run": (JobState.RUNNING, "r"), "cancel_pending": (JobState.WAITING, "hqw"),
        "array": (JobState.RUNNING, "r"),
    }  # "ok" had finished: it is not in the queue
    assert found["held"].reason == "held" and "qstat -j" in found["error"].reason


def test_history_gives_exit_codes_kills_and_jobs_deleted_before_they_ran(rec: Recording) -> None:
    jobs = [rec.job(r) for r in ("ok", "fail", "cancel_run", "cancel_pending")] + [BatchJob("99999", f"{ROOT}/x")]
    found = rec.roles(S.parse_history(rec.result("history"), jobs))
    assert {r: (s.state, s.exit_code) for r, s in found.items()} == {
        "ok": (JobState.DONE, 0), "fail": (JobState.FAILED, 3), "cancel_run": (JobState.ABORTED, 137),
        "cancel_pending": (JobState.ABORTED, None),
    }  # the unknown id is in neither accounting nor the zombie list
    assert "qdel" in found["cancel_run"].reason and "before it started" in found["cancel_pending"].reason


def test_a_zombie_whose_script_ran_waits_for_the_accounting_file() -> None:
    text = b"=== job 5\nerror: job id 5 not found\n=== claimed 5\n=== zombies\n<?xml version='1.0'?><job_info>" \
           b"<job_info><job_list state='zombie'><JB_job_number>5</JB_job_number></job_list></job_info></job_info>"
    result = CommandResult(("sh",), 0, text, b"", 0.1)
    assert S.parse_history(result, [BatchJob("5", f"{ROOT}/u")]) == {}


def test_qdel_reports_unknown_ids_per_id_and_is_not_a_failure_as_a_whole(rec: Recording) -> None:
    jobs = [rec.job("cancel_run"), rec.job("cancel_pending"), BatchJob("99999", f"{ROOT}/x")]
    assert S.parse_cancel(rec.result("qdel_mixed"), jobs) == {"99999": 'job "99999" does not exist (unknown or '
                                                                       'finished)'}


def test_tags_are_found_in_the_queue_with_their_directory_and_in_accounting(rec: Recording) -> None:
    queue = S.parse_find([rec.result("find_queue"), CommandResult(("sh",), 0, b"", b"", 0.1)],
                         ["rec-running", "rec-held", "rec-nope"])
    assert queue == {"rec-running": [rec.job("running")], "rec-held": [rec.job("held")], "rec-nope": []}
    history = S.parse_find([CommandResult(("qstat",), 1, b"", b"Following jobs do not exist", 0.1),
                            rec.result("find_history")], ["rec-ok", "rec-cancel_run", "rec-nope"])
    assert history == {"rec-ok": [rec.job("ok")], "rec-cancel_run": [rec.job("cancel_run")], "rec-nope": []}


def test_a_queued_job_whose_directory_is_not_the_one_its_name_claims_is_not_ours() -> None:
    xml = (b"<detailed_job_info><djob_info><element><JB_job_number>9</JB_job_number>"
           b"<JB_job_name>key~abcd</JB_job_name><JB_cwd>/elsewhere</JB_cwd></element></djob_info></detailed_job_info>")
    found = S.parse_find([CommandResult(("qstat",), 0, xml, b"", 0.1), CommandResult(("sh",), 0, b"", b"", 0.1)],
                         ["key"])
    assert found == {"key": []}


def test_load_counts_slots_and_the_callers_jobs(rec: Recording) -> None:
    load = S.parse_load(rec.result("load"))
    assert load.total_cores == 8 and 0 <= (load.free_cores or 0) <= 8
    assert load.running >= 3 and load.queued >= 1


@pytest.mark.parametrize(("letters", "state"), [("qw", JobState.WAITING), ("hqw", JobState.WAITING),
                                                ("r", JobState.RUNNING), ("t", JobState.RUNNING),
                                                ("Rr", JobState.RUNNING), ("s", JobState.RUNNING),
                                                ("dr", JobState.RUNNING), ("Eqw", JobState.FAILED),
                                                ("z", JobState.DONE), ("", JobState.UNKNOWN)])
def test_state_letters(letters: str, state: JobState) -> None:
    assert state_of(letters) is state


def test_garbled_xml_is_a_command_error_never_a_state() -> None:
    with pytest.raises(CommandError, match="not XML"):
        S.parse_status(CommandResult(("qstat",), 0, b"<job_info><job_list>", b"", 0.1), [BatchJob("1", "/w")])
