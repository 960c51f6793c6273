"""What a submit that goes wrong leaves behind (issue 14, item 1): a refusal vs "it may have run", on real processes.

BatchBackend over the local transport with a scheduler dialect whose submit command is a real program that hangs, is
refused or is killed: a hung submit is killed on the resource by ``timeout`` (it cannot outlive its deadline as an
orphan) and reported as a temporary error with its directory kept; only a genuine refusal removes the directory.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from intercede.backends.batch import BatchBackend
from intercede.backends.schedulers.base import SubmitRequest
from intercede.backends.schedulers.direct import DirectScheduler
from intercede.backends.schedulers.slurm import SlurmScheduler
from intercede.backends.transports.base import CommandResult
from intercede.backends.transports.local import LocalTransport
from intercede.errors import ConnectivityError, TimeoutError
from intercede.model import JobSpec

pytestmark = pytest.mark.faults


class _Scripted(DirectScheduler):
    """Direct, except that the submit command is ``sh -c <script>`` (and parsed as sbatch's answer)."""

    def __init__(self, root: str, script: str) -> None:
        super().__init__(root)
        self.script = script

    def submit_argv(self, request: SubmitRequest) -> list[str]:
        return ["sh", "-c", self.script, "sh", request.workdir]

    def parse_submit(self, result: CommandResult) -> str:
        return SlurmScheduler().parse_submit(result)


def _backend(tmp_path: Path, script: str, timeout: float) -> BatchBackend:
    root = str(tmp_path / "root")
    return BatchBackend(LocalTransport(), _Scripted(root, script), root, command_timeout=timeout)


def _spec() -> JobSpec:
    return JobSpec(executable="/bin/true", tag="k", attempt=secrets.token_hex(8))


async def test_a_hung_submit_is_killed_at_its_deadline_and_may_have_run(tmp_path: Path) -> None:
    marker = tmp_path / "still-running"
    # 3 s: staging (a few local commands, same deadline) must not hit it on a loaded machine; the submit must.
    backend = _backend(tmp_path, f'sleep 60; touch "{marker}"', timeout=3.0)
    spec = _spec()
    with pytest.raises(TimeoutError, match="may have submitted"):
        await backend.submit(spec)
    assert (tmp_path / "root" / str(spec.attempt) / "job.sh").exists(), "kept: a job may exist for it"
    assert not marker.exists()


async def test_a_submit_that_lost_its_controller_may_have_run_and_keeps_its_directory(tmp_path: Path) -> None:
    backend = _backend(tmp_path, 'echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv '
                                 'operation" >&2; exit 1', timeout=10)
    spec = _spec()
    with pytest.raises(ConnectivityError, match="may have been submitted"):
        await backend.submit(spec)
    assert (tmp_path / "root" / str(spec.attempt)).is_dir()


async def test_a_refused_submit_removes_its_directory_and_reports_the_refusal(tmp_path: Path) -> None:
    backend = _backend(tmp_path, 'echo "sbatch: error: Batch job submission failed: Invalid partition name '
                                 'specified" >&2; exit 1', timeout=10)
    spec = _spec()
    (submission,) = (await backend.submit(spec)).submissions
    assert not submission.ok and "Invalid partition name" in submission.error and not submission.temporary
    assert not (tmp_path / "root" / str(spec.attempt)).exists()


async def test_an_attempt_id_is_never_used_twice_and_its_directory_is_left_alone(tmp_path: Path) -> None:
    backend = _backend(tmp_path, 'echo 42', timeout=10)
    spec = _spec()
    (first,) = (await backend.submit(spec)).job_ids
    assert first == f"42@{spec.attempt}"
    (again,) = (await backend.submit(spec)).submissions
    assert not again.ok and "was used before" in again.error
    assert (tmp_path / "root" / str(spec.attempt) / "job.sh").exists()
