"""GridEngineScheduler: argv builders, and parsers run on real outputs recorded from Son of Grid Engine 8.1.9.

The recordings live in ``tests/data/sge/<version>/`` (regenerate: ``.venv/bin/python -m tests.data.sge.record``);
``captures.json`` names each job by the role it played. Test ids name the version.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from intercede.backends.registry import BatchConfig
from intercede.backends.schedulers import Scheduler
from intercede.backends.schedulers.base import BatchJob, BulkRequest, BulkScheduler, SubmitRequest, UsageScheduler
from intercede.backends.schedulers.gridengine import GridEngineScheduler, state_of
from intercede.backends.transports.base import CommandResult
from intercede.errors import CommandError, ConnectivityError, InvalidSpecError
from intercede.model import JobState, Resources, Usage
from tests.data.recordings import Recording as _Recording

DATA = Path(__file__).resolve().parents[1] / "data" / "sge"
VERSIONS = sorted(p.parent.name for p in DATA.glob("*/captures.json"))
ROOT = "/home/tester/jobs"
S = GridEngineScheduler(ROOT)


class Recording(_Recording):
    def __init__(self, version: str) -> None:
        super().__init__(DATA / version)
        self.prefixes: dict[str, str] = json.loads((self.folder / "copies.json").read_text())

    def job(self, role: str) -> BatchJob:
        """The job that played ``role``; ``<array>.<k>`` is copy k of an array (task k + 1), in its copy's directory."""
        base, _, k = role.partition(".")
        workdir = f"{ROOT}/{self.prefixes[base]}{int(k):04d}" if base in self.prefixes else f"{ROOT}/{role}"
        return BatchJob(self.meta["jobs"][role], workdir)

    def roles(self, found: dict[str, Any]) -> dict[str, Any]:
        names = {v: k for k, v in self.meta["jobs"].items()}
        return {names.get(i, i): v for i, v in found.items()}


@pytest.fixture(params=VERSIONS, ids=[f"sge-{v}" for v in VERSIONS])
def rec(request: pytest.FixtureRequest) -> Recording:
    return Recording(request.param)


def test_every_version_is_recorded() -> None:
    assert VERSIONS == ["8.1.9"]


def test_the_scheduler_satisfies_the_protocol() -> None:
    assert isinstance(S, Scheduler) and isinstance(S, BulkScheduler) and isinstance(S, UsageScheduler)


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
    roles = ("running", "held", "error", "cancel_run", "cancel_pending", "array", "ok", "arr.0", "arr.1", "arr.2",
             "harr.0", "harr.1")
    found = rec.roles(S.parse_status(rec.result("qstat_live"), [rec.job(r) for r in roles]))
    assert {r: (s.state, s.native_state) for r, s in found.items()} == {
        "running": (JobState.RUNNING, "r"), "held": (JobState.WAITING, "hqw"), "error": (JobState.FAILED, "Eqw"),
        "cancel_run": (JobState.RUNNING, "r"), "cancel_pending": (JobState.WAITING, "hqw"),
        "array": (JobState.RUNNING, "r"),  # an array asked about by its job number: its first (running) task
        "arr.1": (JobState.RUNNING, "r"), "arr.2": (JobState.RUNNING, "r"),
        "harr.0": (JobState.WAITING, "hqw"), "harr.1": (JobState.WAITING, "hqw"),  # pending tasks, one entry each
    }  # "ok" and the array's copy 0 had finished: they are not in the queue
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
    assert load.running >= 3 and load.queued >= 4  # held, cancel_pending and each task of the held array


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


# -- job arrays ------------------------------------------------------------------------------------------------------
def _bulk(count: int = 3, tag: str | None = "key", first: int = 0, **resources: Any) -> BulkRequest:
    workdirs = tuple(f"{ROOT}/abcdef012345{k:04d}" for k in range(count))
    return BulkRequest(ROOT, "abcdef012345", first, count, tag, Resources(**resources), workdirs,
                       tuple(f"{w}/job.sh" for w in workdirs), f"{ROOT}/abcdef012345ffff")


def test_copies_are_one_array_named_after_the_tag_the_first_copy_and_the_prefix_working_in_the_anchor() -> None:
    argv = S.submit_bulk_argv(_bulk(first=1000, cores=2, queue="long.q"))
    assert argv[:4] == ["qsub", "-terse", "-w", "e"] and argv[-1] == f"{ROOT}/abcdef012345ffff/array.sh"
    assert argv[argv.index("-N") + 1] == "key~1000~abcdef012345"
    assert argv[argv.index("-wd") + 1] == f"{ROOT}/abcdef012345ffff"
    assert argv[argv.index("-t") + 1] == "1-3" and "-tc" not in argv
    assert argv[argv.index("-o") + 1] == argv[argv.index("-e") + 1] == "/dev/null"
    assert argv[argv.index("-pe") + 1:argv.index("-pe") + 3] == ["smp", "2"] and "long.q" in argv
    throttled = GridEngineScheduler(ROOT, array_throttle=5).submit_bulk_argv(_bulk(tag=None))
    assert throttled[throttled.index("-tc") + 1] == "5" and throttled[throttled.index("-N") + 1] == "intercede"
    with pytest.raises(InvalidSpecError):
        S.submit_bulk_argv(_bulk(tag="a b"))
    with pytest.raises(ValueError, match="array_max"):
        GridEngineScheduler(ROOT, array_max=10_001)


def test_the_launcher_runs_the_copy_of_its_task_in_the_copys_directory(tmp_path: Path) -> None:
    request = dataclasses.replace(_bulk(), root=str(tmp_path))
    for k in range(3):
        (tmp_path / f"abcdef012345{k:04d}").mkdir()
        (tmp_path / f"abcdef012345{k:04d}" / "job.sh").write_text(f'echo "copy {k} in $(pwd)"; echo err >&2\n')
    launcher = tmp_path / "array.sh"
    launcher.write_text(S.bulk_launcher(request) or "")
    run = subprocess.run(["/bin/sh", str(launcher)], env={"SGE_TASK_ID": "2", "PATH": "/usr/bin:/bin"}, check=True,
                         capture_output=True, text=True)
    assert run.stdout == run.stderr == ""  # redirected into the copy's directory
    copy = tmp_path / "abcdef0123450001"
    assert (copy / ".sge.out").read_text() == f"copy 1 in {copy}\n" and (copy / ".sge.err").read_text() == "err\n"
    unset = subprocess.run(["/bin/sh", str(launcher)], env={"PATH": "/usr/bin:/bin"}, capture_output=True)
    assert unset.returncode != 0 and not (tmp_path / "abcdef012345-001").exists()


def test_qsub_of_an_array_gives_one_id_per_task(rec: Recording) -> None:
    ids = S.parse_submit_bulk(rec.result("qsub_bulk"), _bulk())
    assert ids == [rec.meta["jobs"][f"arr.{k}"] for k in range(3)]
    assert [i.partition(".")[2] for i in ids] == ["1", "2", "3"]
    with pytest.raises(CommandError, match="not an array of 4 tasks"):
        S.parse_submit_bulk(rec.result("qsub_bulk"), _bulk(count=4))
    with pytest.raises(CommandError, match="unknown queue"):
        S.parse_submit_bulk(rec.result("qsub_bad_queue"), _bulk())


def test_qdel_of_tasks_reports_a_finished_task_and_an_unknown_job_per_id(rec: Recording) -> None:
    jobs = [rec.job("arr.0"), rec.job("arr.1"), rec.job("harr.0"), BatchJob("99999.1", f"{ROOT}/x")]
    assert S.cancel_argv(jobs) == ["qdel", *(j.native_id for j in jobs)]
    failed = rec.roles(S.parse_cancel(rec.result("qdel_tasks"), jobs))
    assert set(failed) == {"arr.0", "99999.1"}  # the running and the held task were deleted
    assert "task" in failed["arr.0"] and "does not exist" in failed["99999.1"]


def test_a_deleted_task_leaves_the_queue_while_the_other_tasks_stay(rec: Recording) -> None:
    roles = ("arr.1", "arr.2", "harr.0", "harr.1")
    found = rec.roles(S.parse_status(rec.result("qstat_after_task_deletion"), [rec.job(r) for r in roles]))
    assert {r: s.native_state for r, s in found.items()} == {"arr.2": "r", "harr.1": "hqw"}


def test_history_of_array_tasks_per_task_and_tasks_deleted_before_they_ran(rec: Recording) -> None:
    roles = ("arr.0", "arr.1", "arr.2", "harr.0", "harr.1")
    argv = S.history_argv([rec.job(r) for r in roles]) or []
    numbers = argv[4:argv.index("--")]
    assert numbers == [rec.meta["jobs"]["arr.0"].split(".")[0], rec.meta["jobs"]["harr.0"].split(".")[0]]
    found = rec.roles(S.parse_history(rec.result("history"), [rec.job(r) for r in roles]))
    assert {r: (s.state, s.exit_code) for r, s in found.items()} == {
        "arr.0": (JobState.DONE, 0), "arr.1": (JobState.ABORTED, 137), "arr.2": (JobState.ABORTED, 137),
        "harr.0": (JobState.ABORTED, None), "harr.1": (JobState.ABORTED, None),
    }


def test_every_copy_of_an_array_is_found_by_its_tag_in_the_queue_and_in_accounting(rec: Recording) -> None:
    tags = ["rec-running", "rec-held", "rec-nope", "rec-arr.1", "rec-arr.2", "rec-harr.0", "rec-harr.5"]
    assert rec.meta["captures"]["find_queue"]["argv"][2].split(",") == [
        "rec-running~*", "rec-held~*", "rec-nope~*", "rec-arr.*~*", "rec-arr~*~*", "rec-harr.*~*", "rec-harr~*~*"]
    empty = CommandResult(("sh",), 0, b"", b"", 0.1)
    queue = S.parse_find([rec.result("find_queue"), empty], tags)
    assert queue == {"rec-running": [rec.job("running")], "rec-held": [rec.job("held")], "rec-nope": [],
                     "rec-arr.1": [rec.job("arr.1")], "rec-arr.2": [rec.job("arr.2")],
                     "rec-harr.0": [rec.job("harr.0")], "rec-harr.5": []}  # the held array has copies 0 and 1
    tags = ["rec-ok", "rec-cancel_run", "rec-nope", "rec-arr.0", "rec-arr.2", "rec-harr.0"]
    gone = CommandResult(("qstat",), 1, b"", b"Following jobs do not exist", 0.1)
    history = S.parse_find([gone, rec.result("find_history")], tags)
    assert history == {"rec-ok": [rec.job("ok")], "rec-cancel_run": [rec.job("cancel_run")], "rec-nope": [],
                       "rec-arr.0": [rec.job("arr.0")], "rec-arr.2": [rec.job("arr.2")],
                       "rec-harr.0": []}  # deleted before it ran: no accounting record


def test_an_array_whose_name_is_not_ours_is_not_read() -> None:
    xml = (b"<detailed_job_info><djob_info><element><JB_job_number>9</JB_job_number>"
           b"<JB_job_name>key~0~abcdef012345</JB_job_name><JB_cwd>/elsewhere</JB_cwd><JB_ja_structure><task_id_range>"
           b"<RN_min>1</RN_min><RN_max>2</RN_max><RN_step>1</RN_step></task_id_range></JB_ja_structure></element>"
           b"<element><JB_job_number>10</JB_job_number><JB_job_name>key~0~not-a-prefix</JB_job_name>"
           b"<JB_cwd>/elsewhere</JB_cwd></element></djob_info></detailed_job_info>")
    found = S.parse_find([CommandResult(("qstat",), 0, xml, b"", 0.1), CommandResult(("sh",), 0, b"", b"", 0.1)],
                         ["key.0", "key.1"])
    assert found == {"key.0": [], "key.1": []}


# -- usage -----------------------------------------------------------------------------------------------------------
def test_usage_of_finished_jobs_and_array_tasks_from_qacct(rec: Recording) -> None:
    roles = ("busy", "ok", "fail", "cancel_run", "cancel_pending", "arr.0", "arr.1", "harr.0")
    jobs = [rec.job(r) for r in roles]
    numbers = [j.native_id.split(".")[0] for j in jobs]
    assert S.usage_argv(jobs)[4:] == list(dict.fromkeys(numbers))  # one qacct per job: an array's tasks share it
    found = rec.roles(S.parse_usage(rec.result("usage"), jobs))
    assert set(found) == {"busy", "ok", "fail", "cancel_run", "arr.0", "arr.1"}  # never ran: no record
    busy = found["busy"]
    assert busy.node == "sgehost" and busy.cpu_seconds is not None and busy.cpu_seconds > 0.1
    assert busy.wall_seconds is not None and busy.wall_seconds >= 1
    assert busy.peak_memory_mb is not None and 0 < busy.peak_memory_mb < 1024
    assert busy.started_at is not None and busy.ended_at is not None and busy.started_at <= busy.ended_at
    assert busy.started_at.tzinfo is not None
    for usage in found.values():
        assert usage.node == "sgehost" and usage.ended_at is not None and usage.wall_seconds is not None


def test_usage_fields_units_and_a_failed_query() -> None:
    text = (b"=== job 5\n==============================================================\nhostname     node7\n"
            b"jobnumber    5\ntaskid       undefined\nstart_time   Tue Dec  1 16:28:50 2026\n"
            b"end_time     Tue Dec  1 16:29:53 2026\nru_wallclock 63s\nru_utime     1.500s\nru_stime     0.250s\n"
            b"maxvmem      1.500GB\n")
    (usage,) = S.parse_usage(CommandResult(("sh",), 0, text, b"", 0.1), [BatchJob("5", f"{ROOT}/u")]).values()
    assert usage == Usage(wall_seconds=63, cpu_seconds=1.75, peak_memory_mb=1536, node="node7",
                          started_at=datetime(2026, 12, 1, 16, 28, 50, tzinfo=UTC),
                          ended_at=datetime(2026, 12, 1, 16, 29, 53, tzinfo=UTC))  # no "cpu": utime + stime
    with pytest.raises(CommandError):
        S.parse_usage(CommandResult(("sh",), 2, b"", b"sh: qacct: not found", 0.1), [BatchJob("5", f"{ROOT}/u")])


def test_the_ce_config_sets_the_array_limits() -> None:
    backend = BatchConfig(name="cell", scheduler="sge", root=ROOT, array_max=50, array_throttle=4).build()
    scheduler = backend.scheduler
    assert isinstance(scheduler, GridEngineScheduler)
    assert (scheduler.bulk_max, scheduler.array_throttle) == (50, 4)
