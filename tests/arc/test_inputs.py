"""Inputs pushed by the client into the session directory before the job may start, and A-REX's diagnostics (real
A-REX 7.2, proxy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from intercede.backends.arc import ARCBackend
from intercede.model import InputFile, JobSpec, JobState
from stacks.arc_stack import ARCStack
from tests.contract.waiting import until_terminal

pytestmark = [pytest.mark.arc, pytest.mark.remote]


@pytest.fixture(params=["7.2"], ids=["arc-7.2"])
def stack(request: pytest.FixtureRequest) -> ARCStack:
    return request.getfixturevalue(f"arc_{request.param.replace('.', '_')}")  # type: ignore[no-any-return]


async def test_staged_inputs_and_a_staged_executable_are_there_before_the_job_starts(
        stack: ARCStack, tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text('#!/bin/sh\nwc -c < "$1"; cat sub/note.txt\n')
    data = bytes(range(256)) * 4096  # 1 MiB, not UTF-8: streamed in blocks, byte for byte
    (tmp_path / "data.bin").write_bytes(data)
    (tmp_path / "note.txt").write_text("note\n")
    spec = JobSpec(executable="run.sh", arguments=["data.bin"],
                   input_files=[InputFile(source=tmp_path / "run.sh", name="run.sh"),
                                InputFile(source=tmp_path / "data.bin", name="data.bin"),
                                InputFile(source=tmp_path / "note.txt", name="sub/note.txt")])
    async with ARCBackend(stack.url, ca_file=stack.ca_file, proxy_file=stack.proxy_file) as be:
        result = await be.submit(spec)
        assert not result.failures, result
        (status,) = await until_terminal(be, result.job_ids)
        assert status.state is JobState.DONE, status
        await be.fetch(result.job_ids[0], spec, tmp_path / "out")
        assert (tmp_path / "out" / "stdout.txt").read_text() == f"{len(data)}\nnote\n"
        missing = await be.submit(spec.model_copy(update={"input_files": [
            InputFile(source=tmp_path / "nope", name="x")]}))
        assert missing.job_ids == [] and "does not exist" in missing.failures[0].error


async def test_a_failed_jobs_diagnostics_can_be_peeked_at(stack: ARCStack) -> None:
    async with ARCBackend(stack.url, ca_file=stack.ca_file, proxy_file=stack.proxy_file) as be:
        result = await be.submit(JobSpec(executable="/bin/sh", arguments=["-c", "exit 5"]))
        (status,) = await until_terminal(be, result.job_ids)
        assert (status.state, status.exit_code) == (JobState.FAILED, 5)
        failed = await be.peek(result.job_ids[0], "diagnose/failed")
        assert b"5 != 0" in failed and status.reason in failed.decode()
        assert len(await be.peek(result.job_ids[0], "diagnose/errors", max_bytes=100)) == 100  # the tail only
