"""A submit command that dies of a signal (SIGPIPE when the SSH channel drops) may have submitted: never a refusal."""

from __future__ import annotations

import pytest

from intercede.backends.batch import BatchBackend
from intercede.backends.schedulers.slurm import SlurmScheduler
from intercede.backends.transports.base import CommandResult
from intercede.backends.transports.mock import MockTransport
from intercede.errors import ConnectivityError, is_temporary
from intercede.model import JobSpec


async def test_a_submit_killed_by_a_signal_is_a_temporary_may_have_run_error_and_keeps_the_directory() -> None:
    def handler(argv: tuple[str, ...], stdin: bytes | None) -> CommandResult:
        if "sbatch" in argv:  # the folded stage-and-submit command
            return CommandResult(argv, -13, b"", b"", 0.1)
        return CommandResult(argv, 0, b"", b"", 0.0)

    transport = MockTransport(handler)
    async with BatchBackend(transport, SlurmScheduler(), "/home/alice/jobs") as backend:
        with pytest.raises(ConnectivityError, match="may have submitted") as info:
            await backend.submit(JobSpec(executable="true", tag="k1", attempt="0123456789abcdef"))
    assert is_temporary(info.value)
    assert transport.calls and not any(argv[0] == "rm" for argv, _ in transport.calls)  # the directory stays
