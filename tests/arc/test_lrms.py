"""A-REX in front of a real batch system (ARC 7.0 with its slurm and condor LRMS, stacks/arc_slurm and
stacks/arc_htcondor): the job really runs as a Slurm / HTCondor job, and what A-REX reports about it comes back.

The batch system is asked directly (``scontrol`` / ``condor_history`` inside the stack's container) for the local id
A-REX recorded in the job's control file, so a job A-REX ran with the fork LRMS by mistake would fail the test.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from intercede.backends.arc import ARCBackend
from intercede.model import JobSpec, JobState
from stacks.arc_stack import ARCStack
from tests.contract.cases_arc import backend_for
from tests.contract.waiting import until_terminal

pytestmark = [pytest.mark.arc, pytest.mark.remote]

#: LRMS -> (the stack fixture, the command that must know the local id, what its answer must hold)
LRMS = {
    "slurm": ("arc_slurm", "scontrol -o show job {id}", "JobState=COMPLETED"),
    "condor": ("arc_htcondor", "condor_history -af JobStatus ExitCode -match 1 {id}", "4 0"),
}


@pytest.fixture(params=sorted(LRMS), ids=lambda lrms: "arc-slurm" if lrms == "slurm" else "arc-htcondor")
def lrms(request: pytest.FixtureRequest) -> tuple[str, ARCStack]:
    return request.param, request.getfixturevalue(LRMS[request.param][0])


def _local_id(stack: ARCStack, job_id: str) -> str:
    """The batch system's id of the job, from A-REX's control file (``localid=``)."""
    out = stack.check(f"cat /var/spool/arc/jobstatus/jobs/{job_id[:3]}/{job_id[3:6]}/{job_id[6:9]}/{job_id[9:]}/local "
                      f"/var/spool/arc/jobstatus/job.{job_id}.local 2>/dev/null | grep '^localid=' || true")
    return out.strip().removeprefix("localid=").split(".")[0]


async def test_a_job_runs_in_the_batch_system_behind_arex_and_its_exit_code_comes_back(
        lrms: tuple[str, ARCStack], tmp_path: Path) -> None:
    name, stack = lrms
    tag = f"lrms-{uuid.uuid4().hex[:10]}"
    async with backend_for(stack, "proxy") as backend:
        assert isinstance(backend, ARCBackend)
        ok = await backend.submit(JobSpec(executable="/bin/sh", arguments=["-c", "echo in-lrms; exit 0"], tag=tag))
        bad = await backend.submit(JobSpec(executable="/bin/sh", arguments=["-c", "exit 5"]))
        done, failed = await until_terminal(backend, [*ok.job_ids, *bad.job_ids], timeout=240)
        assert (done.state, done.exit_code) == (JobState.DONE, 0), done
        assert (failed.state, failed.exit_code) == (JobState.FAILED, 5), failed
        local = _local_id(stack, ok.job_ids[0])
        assert local, f"A-REX recorded no {name} id for {ok.job_ids[0]}"
        command, expected = LRMS[name][1], LRMS[name][2]
        assert expected in stack.check(command.format(id=local)), f"{name} does not know job {local} as finished"
        manifest = await backend.fetch(ok.job_ids[0], JobSpec(executable="x"), tmp_path)
        assert (manifest.destination / "stdout.txt").read_text() == "in-lrms\n"
        assert (await backend.find_by_tag([tag]))[tag] == ok.job_ids
        assert all(o.ok for o in await backend.purge([*ok.job_ids, *bad.job_ids]))
