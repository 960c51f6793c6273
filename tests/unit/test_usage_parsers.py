"""Usage records of finished jobs, parsed from real outputs: Slurm's sacct, HTCondor's history ads, the Direct
wrapper's ``.usage`` file.

Recordings: ``tests/data/slurm/<version>/sacct_usage.txt`` + ``usage.json`` (``python -m tests.data.slurm.record
--usage <version>``) and ``tests/data/htcondor/<release>/bindings_usage.json`` + ``usage.json`` (``python -m
tests.data.htcondor.record --usage <release>``). Each names its jobs by role: ``busy`` held ~40 MB and used some CPU
for ~20 s, ``completed`` and ``failed`` ended at once, ``running`` (Slurm) had not ended.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from intercede.backends.htcondor import _htcondor as core
from intercede.backends.jobscript import render
from intercede.backends.schedulers.base import BatchJob
from intercede.backends.schedulers.direct import parse_usage_line
from intercede.backends.schedulers.slurm import parse_usage, usage_argv
from intercede.backends.transports.base import CommandResult
from intercede.errors import CommandError
from intercede.model import JobSpec, JobState, Usage

pytestmark = pytest.mark.policy

DATA = Path(__file__).resolve().parents[1] / "data"
SLURM = sorted(p.parent.name for p in (DATA / "slurm").glob("*/sacct_usage.txt"))
CONDOR = sorted(p.parent.name for p in (DATA / "htcondor").glob("*/bindings_usage.json"))


def _meta(path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(path.read_text())
    return meta


# ---- Slurm


@pytest.mark.parametrize("version", SLURM, ids=[f"slurm-{v}" for v in SLURM])
def test_slurm_usage_of_finished_jobs_comes_from_sacct_and_a_running_job_has_none(version: str) -> None:
    folder = DATA / "slurm" / version
    meta = _meta(folder / "usage.json")
    jobs = {role: BatchJob(job_id, f"/home/tester/jobs/{role}") for role, job_id in meta["jobs"].items()}
    argv = meta["captures"]["sacct_usage"]["argv"]
    assert argv == usage_argv(list(jobs.values()))
    result = CommandResult(tuple(argv), 0, (folder / "sacct_usage.txt").read_bytes(), b"", 0.1)
    found = parse_usage(result, list(jobs.values()))
    assert set(found) == {jobs[r].native_id for r in ("busy", "completed", "failed")}, "no usage while it runs"
    busy = found[jobs["busy"].native_id]
    assert busy.wall_seconds is not None and busy.wall_seconds >= 7  # it slept 7 s
    assert busy.cpu_seconds is not None and busy.cpu_seconds > found[jobs["completed"].native_id].cpu_seconds  # type: ignore[operator]
    assert busy.node == "slurmhost"
    assert busy.started_at is not None and busy.ended_at is not None
    assert (busy.ended_at - busy.started_at).total_seconds() == busy.wall_seconds
    # This stack's jobacct_gather/linux records no MaxRSS for these steps (the field is empty): no peak, not 0.
    assert all(u.peak_memory_mb is None for u in found.values())


def test_slurm_usage_only_answers_for_the_ids_asked_and_refuses_garbage() -> None:
    text = b"12|5|01:02.500|2048K|n1|2026-12-01T13:00:00|2026-12-01T13:00:05\n12.batch|5|01:02.500|10M|n1|" \
           b"2026-12-01T13:00:00|2026-12-01T13:00:05\n13|1|00:00:01||n1|2026-12-01T13:00:00|2026-12-01T13:00:01\n"
    found = parse_usage(CommandResult(("sacct",), 0, text, b"", 0.1), [BatchJob("12", "/w")])
    assert found == {"12": Usage(wall_seconds=5.0, cpu_seconds=62.5, peak_memory_mb=10.0, node="n1",
                                 started_at=datetime(2026, 12, 1, 13, 0, tzinfo=UTC),
                                 ended_at=datetime(2026, 12, 1, 13, 0, 5, tzinfo=UTC))}
    with pytest.raises(CommandError, match="unexpected usage line"):
        parse_usage(CommandResult(("sacct",), 0, b"garbage\n", b"", 0.1), [BatchJob("12", "/w")])
    with pytest.raises(CommandError, match="usage"):
        parse_usage(CommandResult(("sacct",), 1, b"", b"sacct: error", 0.1), [BatchJob("12", "/w")])


# ---- HTCondor


@pytest.mark.parametrize("release", CONDOR, ids=[f"htcondor-{r}" for r in CONDOR])
def test_htcondor_usage_comes_from_the_history_ad(release: str) -> None:
    folder = DATA / "htcondor" / release
    roles = {v: k for k, v in _meta(folder / "usage.json")["jobs"].items()}
    ads = {roles[f"{ad['ClusterId']}.{ad['ProcId']}"]: ad for ad in json.loads((folder / "bindings_usage.json")
                                                                              .read_text())}
    statuses = {role: core.job_status(f"{ad['ClusterId']}.{ad['ProcId']}", ad) for role, ad in ads.items()}
    assert statuses["failed"].state is JobState.FAILED and statuses["completed"].state is JobState.DONE
    busy = statuses["busy"].usage
    assert busy is not None
    assert busy.wall_seconds is not None and busy.wall_seconds >= 7
    assert busy.cpu_seconds is not None  # whole seconds: the busy job's < 1 s is recorded as 0.0
    # MemoryUsage comes back from the history as its expression, unevaluated: the peak is ResidentSetSize (KiB).
    assert isinstance(ads["busy"]["MemoryUsage"], str)
    assert busy.peak_memory_mb == pytest.approx(ads["busy"]["ResidentSetSize"] / 1024)
    assert busy.peak_memory_mb > 30  # it held ~40 MB
    assert busy.node and "@" in busy.node  # the slot: slot1@<host>
    assert busy.started_at is not None and busy.ended_at is not None and busy.started_at <= busy.ended_at
    assert all(s.usage is not None and s.usage.ended_at is not None for s in statuses.values())


def test_a_job_that_has_not_ended_carries_no_usage() -> None:
    ad = {"ClusterId": 1, "ProcId": 0, "JobStatus": 2, "RemoteWallClockTime": 5.0, "RemoteUserCpu": 1.0}
    assert core.job_status("1.0", ad).usage is None
    # Seen on 23.9: a completed spooled job's queue ad before its completion figures are set (wall 0, no end).
    early = {"ClusterId": 1, "ProcId": 0, "JobStatus": 4, "ExitCode": 0, "RemoteWallClockTime": 0.0,
             "RemoteUserCpu": 0.0, "RemoteSysCpu": 0.0, "ResidentSetSize": 5000, "LastRemoteHost": "slot1_1@h",
             "JobStartDate": 1796132574}
    assert core.job_status("1.0", early).usage is None


# ---- Direct (the job wrapper)


def test_the_wrapper_usage_line_parses_into_usage() -> None:
    line = "4242 start=1795298910 end=1795298917 node=host-1 0m0.001s 0m0.002s 0m1.250000s 0m0.250000s"
    pid, usage = parse_usage_line(line) or ("", Usage())
    assert pid == "4242"
    assert usage == Usage(wall_seconds=7.0, cpu_seconds=1.5, node="host-1",
                          started_at=datetime.fromtimestamp(1795298910, UTC),
                          ended_at=datetime.fromtimestamp(1795298917, UTC))
    assert parse_usage_line("4242 start=1795298910") is None  # still being written


def test_the_job_script_records_start_end_node_and_cpu_of_its_payload(tmp_path: Path) -> None:
    """The real wrapper under the system's /bin/sh: its .usage file parses, and the CPU time is the payload's."""
    work = tmp_path / "job1"
    work.mkdir()
    spec = JobSpec(executable="/bin/sh", arguments=["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
    (work / "job.sh").write_text(render(spec, spec.copies[0], str(work)))
    subprocess.run(["/bin/sh", str(work / "job.sh")], check=True, timeout=60)
    text = (work / ".usage").read_text()
    parsed = parse_usage_line("1 " + " ".join(text.split("\n")))
    assert parsed is not None
    usage = parsed[1]
    assert usage.cpu_seconds is not None and usage.cpu_seconds > 0.05, text
    assert usage.node and usage.wall_seconds is not None and usage.wall_seconds >= 0
    assert (work / ".exitcode").read_text() == "0\n"
