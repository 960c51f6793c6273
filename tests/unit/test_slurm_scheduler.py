"""SlurmScheduler: argv builders, and parsers run on real outputs recorded from Slurm 22.05, 24.11 and 26.05.

The recordings live in ``tests/data/slurm/<version>/`` (regenerate: ``.venv/bin/python -m tests.data.slurm.record``);
``captures.json`` names each job by the role it played (completed, failed, held, ...). Test ids name the version.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intercede.backends.capabilities import LoadReport
from intercede.backends.schedulers import Scheduler
from intercede.backends.schedulers.base import BatchJob, NativeStatus, SubmitRequest
from intercede.backends.schedulers.slurm import STATES, SlurmScheduler
from intercede.backends.transports.base import CommandResult
from intercede.errors import CommandError, ConnectivityError, InvalidSpecError
from intercede.model import JobState, Resources
from tests.data.recordings import Recording as _Recording

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"
VERSIONS = sorted(p.parent.name for p in DATA.glob("*/captures.json"))
S = SlurmScheduler()


class Recording(_Recording):
    """One version's recorded outputs."""

    def __init__(self, version: str) -> None:
        super().__init__(DATA / version)

    @cached_property
    def everyone(self) -> list[BatchJob]:
        return [BatchJob(i, "/w") for i in self.meta["jobs"].values()] + [BatchJob(self.meta["unknown"], "/w")]

    def by_role(self, found: dict[str, NativeStatus]) -> dict[str, tuple[JobState, str]]:
        roles = {v: k for k, v in self.meta["jobs"].items()}
        return {roles[i]: (s.state, s.native_state) for i, s in found.items()}


@pytest.fixture(params=VERSIONS, ids=[f"slurm-{v}" for v in VERSIONS])
def rec(request: pytest.FixtureRequest) -> Recording:
    return Recording(request.param)


def test_every_version_is_recorded() -> None:
    assert VERSIONS == ["22.05", "24.11", "26.05"]


def test_slurm_scheduler_satisfies_the_protocol() -> None:
    assert isinstance(S, Scheduler)


def test_recordings_were_made_with_the_formats_the_scheduler_pins_today(rec: Recording) -> None:
    pinned = {a for argv in (S.status_argv([BatchJob("1", "/w")]), S.history_argv([BatchJob("1", "/w")]) or [],
                             *S.find_argvs(["t"])) for a in argv if a.startswith("--format=")}
    for name, capture in rec.meta["captures"].items():
        formats = [a for a in capture["argv"] if a.startswith("--format=")]
        assert set(formats) <= pinned, name


# -- submit -----------------------------------------------------------------------------------------------------------
def test_sbatch_output_parses_to_the_job_id(rec: Recording) -> None:
    assert S.parse_submit(rec.result("sbatch_ok")) == rec.id("completed")


def test_sbatch_refusing_a_partition_raises_command_error_with_sbatchs_reason(rec: Recording) -> None:
    with pytest.raises(CommandError, match="Invalid partition name specified") as err:
        S.parse_submit(rec.result("sbatch_bad_partition"))
    assert err.value.exit_status == 1 and "partition" in err.value.stderr


def test_too_much_memory_is_refused_at_submit(rec: Recording) -> None:
    with pytest.raises(CommandError, match="Requested node configuration is not available"):
        S.parse_submit(rec.result("sbatch_too_much_memory"))


def test_too_many_cpus_is_refused_by_24_11_and_left_pending_by_22_05_and_26_05(rec: Recording) -> None:
    result = rec.result("sbatch_too_many_cpus")
    if rec.version == "24.11":
        with pytest.raises(CommandError, match="Requested node configuration is not available"):
            S.parse_submit(result)
    else:
        job_id = S.parse_submit(result)
        final = S.parse_status(rec.result("squeue_final"), [BatchJob(job_id, "/w")])
        assert final[job_id] == NativeStatus(JobState.WAITING, "PENDING", None, "PartitionConfig")


def test_a_submission_refused_for_its_memory_still_leaves_a_job_under_its_tag(rec: Recording) -> None:
    found = S.parse_find([rec.result("find_squeue"), rec.result("find_sacct")], rec.meta["find_tags"])
    assert len(found["rec-too_much_memory"]) == 1


def test_sbatch_with_slurmctld_down_raises_a_temporary_connectivity_error(rec: Recording) -> None:
    with pytest.raises(ConnectivityError, match="Unable to contact slurm controller"):  # temporary: retried later
        S.parse_submit(rec.result("sbatch_ctld_down"))


# -- status -----------------------------------------------------------------------------------------------------------
def test_squeue_reports_each_live_state_and_leaves_unknown_ids_out(rec: Recording) -> None:
    found = S.parse_status(rec.result("squeue_mixed"), rec.everyone)
    assert rec.meta["unknown"] not in found
    by_role = rec.by_role(found)
    assert by_role["completed"] == (JobState.DONE, "COMPLETED")
    assert by_role["failed"] == (JobState.FAILED, "FAILED")
    assert by_role["launch_failure"] == (JobState.FAILED, "FAILED")
    for role in ("running", "cancel_running", "timeout"):
        assert by_role[role] == (JobState.RUNNING, "RUNNING")
    for role in ("held", "cancel_pending", "deadline", "wide"):
        assert by_role[role] == (JobState.WAITING, "PENDING")
    assert found[rec.id("held")].reason == "JobHeldUser"
    assert found[rec.id("failed")].reason == "NonZeroExitCode"
    assert found[rec.id("completed")].exit_code == 0 and found[rec.id("failed")].exit_code is None


def test_a_missing_working_directory_fails_the_job_with_a_version_specific_reason(rec: Recording) -> None:
    reason = S.parse_status(rec.result("squeue_mixed"), rec.everyone)[rec.id("launch_failure")].reason
    assert reason == ("JobLaunchFailure" if rec.version == "22.05" else "RaisedSignal:53(Real-time signal 19)")


def test_squeue_keeps_finished_jobs_with_their_final_states(rec: Recording) -> None:
    by_role = rec.by_role(S.parse_status(rec.result("squeue_final"), rec.everyone))
    assert by_role["cancel_running"] == by_role["cancel_pending"] == by_role["wide"] == (JobState.ABORTED, "CANCELLED")
    assert by_role["timeout"] == (JobState.FAILED, "TIMEOUT")
    assert by_role["deadline"] == (JobState.FAILED, "DEADLINE")
    assert by_role["running"] == (JobState.RUNNING, "RUNNING")


def test_squeue_refusing_a_single_unknown_id_is_an_empty_answer(rec: Recording) -> None:
    result = rec.result("squeue_unknown_one")
    assert result.exit_status == 1 and b"Invalid job id specified" in result.stderr
    assert S.parse_status(result, [BatchJob(rec.meta["unknown"], "/w")]) == {}


def test_squeue_with_only_unknown_ids_answers_nothing(rec: Recording) -> None:
    result = rec.result("squeue_unknown_two")
    assert result.exit_status == 0
    assert S.parse_status(result, [BatchJob("999998", "/w"), BatchJob(rec.meta["unknown"], "/w")]) == {}


def test_jobs_purged_from_the_queue_are_found_in_accounting(rec: Recording) -> None:
    queue = rec.by_role(S.parse_status(rec.result("squeue_after_purge"), rec.everyone))
    history = rec.by_role(S.parse_history(rec.result("sacct_after_purge"), rec.everyone))
    assert "completed" not in queue and "failed" not in queue and "running" in queue
    assert history["completed"] == (JobState.DONE, "COMPLETED")
    assert history["failed"] == (JobState.FAILED, "FAILED")
    assert history["timeout"] == (JobState.FAILED, "TIMEOUT")
    assert history["deadline"] == (JobState.FAILED, "DEADLINE")
    assert history["cancel_running"] == history["cancel_pending"] == (JobState.ABORTED, "CANCELLED")


def test_a_reconfigure_of_24_11_and_26_05_rewrites_cancelled_jobs_in_accounting(rec: Recording) -> None:
    # The recorder lowered MinJobAge with `scontrol reconfigure`; 24.11 and 26.05 then re-send the job records, and
    # sacct drops "by <uid>" and shows the batch step's signal (22.05 does the same after a slurmctld restart).
    job = S.parse_history(rec.result("sacct_after_purge"), rec.everyone)[rec.id("cancel_running")]
    if rec.version == "22.05":
        assert (job.exit_code, job.reason) == (0, "cancelled by uid 2000")
    else:
        assert (job.exit_code, job.reason) == (128 + 15, "")


def test_squeue_with_slurmctld_down_raises_instead_of_reporting_states(rec: Recording) -> None:
    with pytest.raises(ConnectivityError, match="Unable to contact slurm controller"):  # temporary: retried later
        S.parse_status(rec.result("squeue_ctld_down"), [BatchJob(rec.id("running"), "/w")])


# -- history ----------------------------------------------------------------------------------------------------------
def test_sacct_reports_final_states_exit_codes_and_who_cancelled(rec: Recording) -> None:
    found = S.parse_history(rec.result("sacct_final"), rec.everyone)
    assert rec.meta["unknown"] not in found
    assert found[rec.id("completed")] == NativeStatus(JobState.DONE, "COMPLETED", 0, "")
    assert found[rec.id("failed")] == NativeStatus(JobState.FAILED, "FAILED", 3, "")
    assert found[rec.id("cancel_running")] == NativeStatus(JobState.ABORTED, "CANCELLED", 0, "cancelled by uid 2000")
    assert found[rec.id("timeout")] == NativeStatus(JobState.FAILED, "TIMEOUT", 0, "")
    assert found[rec.id("deadline")] == NativeStatus(JobState.FAILED, "DEADLINE", 1, "JobHeldUser")
    assert found[rec.id("running")].state is JobState.RUNNING
    assert found[rec.id("held")].state is JobState.WAITING
    launch = found[rec.id("launch_failure")]
    assert launch.state is JobState.FAILED and launch.exit_code == 128 + 53


# -- cancel -----------------------------------------------------------------------------------------------------------
def test_scancel_reports_finished_and_unknown_ids_and_nothing_for_cancelled_ones(rec: Recording) -> None:
    jobs = [BatchJob(rec.id(r), "/w") for r in ("cancel_running", "cancel_pending", "completed")]
    errors = S.parse_cancel(rec.result("scancel_mixed"), [*jobs, BatchJob(rec.meta["unknown"], "/w")])
    assert errors == {rec.id("completed"): "Job/step already completing or completed",
                      rec.meta["unknown"]: "Invalid job id specified"}


def test_scancel_of_an_unknown_id_exits_0_and_is_a_per_id_error(rec: Recording) -> None:
    result = rec.result("scancel_unknown")
    assert result.exit_status == 0
    assert S.parse_cancel(result, [BatchJob(rec.meta["unknown"], "/w")]) == {rec.meta["unknown"]:
                                                                             "Invalid job id specified"}


def test_scancel_with_slurmctld_down_raises(rec: Recording) -> None:
    result = rec.result("scancel_ctld_down")
    assert result.exit_status != 0
    with pytest.raises(ConnectivityError, match="Unable to contact slurm controller"):  # temporary: retried later
        S.parse_cancel(result, [BatchJob(rec.id("running"), "/w"), BatchJob(rec.id("held"), "/w")])


# -- find and load ----------------------------------------------------------------------------------------------------
def test_find_combines_queue_and_accounting_and_matches_names_exactly(rec: Recording) -> None:
    tags = rec.meta["find_tags"]
    found = S.parse_find([rec.result("find_squeue"), rec.result("find_sacct")], tags)
    assert set(found) == set(tags)
    assert found["rec-completed"] == [BatchJob(rec.id("completed"), "/home/tester/jobs/completed")]
    assert found["rec-running"] == [BatchJob(rec.id("running"), "/home/tester/jobs/running")]
    assert b"rec-failed" in rec.result("find_sacct").stdout  # sacct matched REC-FAILED case-insensitively ...
    assert found["REC-FAILED"] == []  # ... and the parser does not
    assert found["rec-absent"] == []


def test_load_counts_cores_and_our_jobs(rec: Recording) -> None:
    pending_too_wide = 0 if rec.version == "24.11" else 1  # the 64-CPU job, accepted by 22.05 and 26.05
    assert S.parse_load(rec.result("load")) == LoadReport(total_cores=4, free_cores=1, running=3,
                                                          queued=4 + pending_too_wide)


def test_load_with_slurmctld_down_raises(rec: Recording) -> None:
    with pytest.raises(ConnectivityError, match="Unable to contact slurm controller"):  # temporary: retried later
        S.parse_load(rec.result("load_ctld_down"))


# -- argv builders and parsers on hand-made outputs (no version) -------------------------------------------------------
def result(argv: list[str], exit_status: int = 0, stdout: str = "", stderr: str = "") -> CommandResult:
    return CommandResult(tuple(argv), exit_status, stdout.encode(), stderr.encode(), 0.1)


def request(tag: str | None = "wms-42", workdir: str = "/scratch/j1", **resources: Any) -> SubmitRequest:
    return SubmitRequest(f"{workdir}/job.sh", workdir, tag, Resources(**resources))


def test_submit_maps_every_resource_then_native_options_then_the_script() -> None:
    argv = S.submit_argv(request(cores=4, memory_mb=2048, wall_time=timedelta(hours=1, seconds=1), gpus=2, nodes=3,
                                 queue="long", account="lhcb", native=["--qos=low", "--exclusive"]))
    assert argv == ["sbatch", "--parsable", "--job-name=wms-42", "--chdir=/scratch/j1",
                    "--output=/scratch/j1/.slurm.out", "--error=/scratch/j1/.slurm.err", "--nodes=3",
                    "--cpus-per-task=4", "--mem=2048M", "--time=61", "--gres=gpu:2", "--partition=long",
                    "--account=lhcb", "--qos=low", "--exclusive", "/scratch/j1/job.sh"]


def test_submit_defaults_name_untagged_jobs_and_leave_optional_resources_out() -> None:
    argv = S.submit_argv(request(tag=None))
    assert "--job-name=intercede" in argv
    assert not [a for a in argv if a.startswith(("--mem", "--time", "--gres", "--partition", "--account"))]
    assert SlurmScheduler(job_name="pilot").submit_argv(request(tag=None))[2] == "--job-name=pilot"


@pytest.mark.parametrize(("seconds", "minutes"), [(1, 1), (59, 1), (60, 1), (61, 2), (86400, 1440)])
def test_wall_time_is_whole_minutes_rounded_up(seconds: int, minutes: int) -> None:
    assert f"--time={minutes}" in S.submit_argv(request(wall_time=timedelta(seconds=seconds)))


def test_a_percent_in_the_workdir_is_escaped_in_output_patterns_only() -> None:
    argv = S.submit_argv(request(workdir="/data/100%j"))
    assert "--chdir=/data/100%j" in argv and "--output=/data/100%%j/.slurm.out" in argv


HOSTILE = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), min_size=1)  # valid text


@given(HOSTILE, HOSTILE)
def test_hostile_partition_and_account_strings_stay_single_argv_elements(queue: str, account: str) -> None:
    argv = S.submit_argv(request(queue=queue, account=account))
    assert argv[8:] == [f"--partition={queue}", f"--account={account}", "/scratch/j1/job.sh"]


@given(HOSTILE)
def test_hostile_tags_stay_one_job_name_element(tag: str) -> None:
    argv = S.submit_argv(request(tag=tag))
    assert argv[2] == f"--job-name={tag}" and len(argv) == 9


@pytest.mark.parametrize(("stdout", "job_id"), [("123\n", "123"), ("77;cluster2\n", "77"), ("\n5\n\n", "5")])
def test_parsable_output_gives_the_id_with_or_without_a_cluster(stdout: str, job_id: str) -> None:
    assert S.parse_submit(result(["sbatch"], 0, stdout)) == job_id


@pytest.mark.parametrize("stdout", ["", "Submitted batch job 12\n", "abc\n", "0\n"])
def test_submit_output_without_an_id_raises_command_error(stdout: str) -> None:
    with pytest.raises(CommandError, match="no job id"):
        S.parse_submit(result(["sbatch"], 0, stdout))


def test_ids_that_are_not_slurm_job_ids_never_reach_a_command_line() -> None:
    jobs = [BatchJob("12", "/w"), BatchJob("0", "/w"), BatchJob("", "/w"), BatchJob("1,2", "/w"),
            BatchJob("--all", "/w"), BatchJob("13", "/w")]
    assert S.status_argv(jobs)[3] == "--jobs=12,13"
    assert (S.history_argv(jobs) or [])[4] == "--jobs=12,13"
    assert S.cancel_argv(jobs) == ["scancel", "--verbose", "12", "13"]
    # an empty --jobs= (squeue) or --jobs=0 (sacct) would list every job: refuse rather than widen the query
    for build in (S.status_argv, S.history_argv, S.cancel_argv):
        with pytest.raises(InvalidSpecError):
            build([BatchJob("0", "/w")])
        with pytest.raises(InvalidSpecError):
            build([])


def test_cancel_reports_ids_that_are_not_slurm_job_ids() -> None:
    errors = S.parse_cancel(result(["scancel"], 0, "", "scancel: Terminating job 12\n"),
                            [BatchJob("12", "/w"), BatchJob("x", "/w")])
    assert errors == {"x": "not a Slurm job id"}


def test_a_truncated_or_garbled_queue_line_raises_instead_of_becoming_a_state() -> None:
    jobs = [BatchJob("12", "/w")]
    for stdout in ("12|RUNN\n", "Welcome to the cluster!\n12|RUNNING|None\n", "<html>\n"):
        with pytest.raises(CommandError, match="unexpected output line"):
            S.parse_status(result(["squeue"], 0, stdout), jobs)


def test_an_unknown_state_word_maps_to_unknown_and_other_ids_are_ignored() -> None:
    found = S.parse_status(result(["squeue"], 0, "12|WEIRD|None\n13|RUNNING|None\n12_3|RUNNING|None\n"),
                           [BatchJob("12", "/w")])
    assert found == {"12": NativeStatus(JobState.UNKNOWN, "WEIRD", None, "")}


def test_a_failed_queue_query_other_than_unknown_ids_raises() -> None:
    with pytest.raises(CommandError, match="queue query failed"):
        S.parse_status(result(["squeue"], 1, "", "squeue: error: Invalid user: nobody\n"), [BatchJob("1", "/w")])


@pytest.mark.parametrize(("exit_field", "code"), [("0:0", 0), ("3:0", 3), ("0:9", 137), ("", None), ("x:y", None)])
def test_sacct_exit_codes_become_the_status_or_128_plus_the_signal(exit_field: str, code: int | None) -> None:
    found = S.parse_history(result(["sacct"], 0, f"7|FAILED|{exit_field}|None\n"), [BatchJob("7", "/w")])
    assert found["7"].exit_code == code


def test_garbled_or_failed_accounting_raises() -> None:
    with pytest.raises(CommandError, match="unexpected output line"):
        S.parse_history(result(["sacct"], 0, "7|COMPLETED\n"), [BatchJob("7", "/w")])
    with pytest.raises(CommandError, match="Connection refused"):
        S.parse_history(result(["sacct"], 1, "", "sacct: error: Problem talking to the database: Connection refused"),
                        [BatchJob("7", "/w")])


def test_cancel_errors_from_a_non_zero_exit_are_per_id_when_some_ids_were_reached() -> None:
    stderr = ("scancel: error: Kill job error on job id 13: Access/permission denied\n"
              "scancel: error: Kill job error on job id 99: Invalid job id specified\n")
    jobs = [BatchJob("12", "/w"), BatchJob("13", "/w"), BatchJob("99", "/w")]
    assert S.parse_cancel(result(["scancel"], 210, "", stderr), jobs) == {
        "13": "Access/permission denied", "99": "Invalid job id specified"}


def test_cancel_failing_without_any_per_id_error_raises() -> None:
    with pytest.raises(CommandError, match="Invalid job id abc"):
        S.parse_cancel(result(["scancel"], 1, "", "scancel: error: Invalid job id abc\n"), [BatchJob("12", "/w")])


def test_find_asks_our_queue_and_a_week_of_accounting_by_name() -> None:
    squeue, sacct = S.find_argvs(["a.0", "a.1"])
    # a.0 and a.1 may also be copies of a job array named a.* (see test_bulk.py)
    assert squeue[:4] == ["squeue", "--noheader", "--states=all", "--me"] and "--name=a.0,a.1,a.*" in squeue
    assert "--name=a.0,a.1,a.*" in sacct and "--starttime=now-7days" in sacct
    assert "--starttime=now-2days" in SlurmScheduler(find_window_days=2).find_argvs(["a"])[1]
    assert S.find_argvs([]) == [] and S.parse_find([], []) == {}


@pytest.mark.parametrize("tag", ["a,b", "", "a b", "a|b"])
def test_tags_that_cannot_be_a_name_filter_are_refused(tag: str) -> None:
    with pytest.raises(InvalidSpecError):
        S.find_argvs(["ok", tag])


def test_find_prefers_the_queues_workdir_and_keeps_jobs_accounting_has_not_placed_yet() -> None:
    queue = result(["squeue"], 0, "5|t|/w/5\n")
    history = result(["sacct"], 0, "5|t|\n6|t|\n7|T|/w/7\n8|other|/w/8\n")
    assert S.parse_find([queue, history], ["t", "u"]) == {"t": [BatchJob("5", "/w/5"), BatchJob("6", "")], "u": []}


def test_a_failed_lookup_raises_so_nothing_is_submitted_twice() -> None:
    with pytest.raises(CommandError):
        S.parse_find([result(["squeue"], 0), result(["sacct"], 1, "", "slurmdbd down")], ["t"])


def test_load_passes_the_partition_as_an_argument_never_into_the_script() -> None:
    argv = SlurmScheduler(partition="x; rm -rf ~").load_argv() or []
    assert argv[:2] == ["sh", "-c"] and argv[3:] == ["sh", "x; rm -rf ~"] and "x;" not in argv[2]
    assert (S.load_argv() or [])[3:] == ["sh"]


@pytest.mark.parametrize("stdout", ["", "RUNNING\n", "1/2/3\n", "a/b/c/d\n"])
def test_load_without_cpu_counts_raises(stdout: str) -> None:
    with pytest.raises(CommandError, match="no CPU counts"):
        S.parse_load(result(["sh"], 0, stdout))


def test_the_state_table_follows_dirac() -> None:
    expected = {JobState.WAITING: ["PENDING", "SUSPENDED", "CONFIGURING"], JobState.RUNNING: ["RUNNING", "COMPLETING"],
                JobState.ABORTED: ["CANCELLED", "PREEMPTED"], JobState.DONE: ["COMPLETED"],
                JobState.FAILED: ["FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"]}
    assert {word: state for state, words in expected.items() for word in words}.items() <= STATES.items()
