"""A CE that stops answering in the middle of a run: the whole operation fails with a temporary error, no job is
reported failed, and everything answers again once the CE is back. Against a real sshd (frozen with SIGSTOP)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from intercede.backends.batch import BatchBackend
from intercede.backends.schedulers.direct import DirectScheduler
from intercede.backends.transports.ssh import SSHTransport
from intercede.errors import ConnectivityError, TimeoutError, is_temporary
from intercede.model import Copy, JobSpec, JobState
from stacks.ssh_stack import SSHStack, start_sshd
from tests.contract.waiting import until_terminal

pytestmark = pytest.mark.faults

ROOT = "/home/tester/jobs"
SSHD = "sshd|sshd-session|sshd-auth"


@pytest.fixture
def sshd() -> Iterator[SSHStack]:
    with start_sshd() as stack:
        yield stack


async def test_a_frozen_ce_fails_whole_operations_temporarily_and_no_job(sshd: SSHStack) -> None:
    transport = SSHTransport(sshd.endpoint(), connect_timeout=2.0)
    async with BatchBackend(transport, DirectScheduler(ROOT), ROOT, command_timeout=3.0) as ce:
        result = await ce.submit(JobSpec(executable="/bin/sh", arguments=["-c", "sleep 2"], copies=[Copy()] * 3))
        assert len(result.job_ids) == 3
        sshd.exec("pkill", "-STOP", "-x", SSHD)
        try:
            with pytest.raises((TimeoutError, ConnectivityError)) as info:
                await ce.status(result.job_ids)
            assert is_temporary(info.value)
            with pytest.raises((TimeoutError, ConnectivityError)):
                await ce.submit(JobSpec(executable="true"))
        finally:
            sshd.exec("pkill", "-CONT", "-x", SSHD)
        statuses = await until_terminal(ce, result.job_ids)
        assert [s.state for s in statuses] == [JobState.DONE] * 3


async def test_an_unreachable_ce_raises_instead_of_answering_per_job(sshd: SSHStack) -> None:
    transport = SSHTransport(sshd.endpoint(port=1), connect_timeout=2.0)
    async with BatchBackend(transport, DirectScheduler(ROOT), ROOT) as ce:
        with pytest.raises(ConnectivityError, match=r"127\.0\.0\.1"):
            await ce.status(["1@0123456789abcdef", "2@0123456789abcdef"])
