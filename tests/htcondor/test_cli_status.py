"""The HTCondor CLI dialect (BatchBackend over SSH) asks for many jobs in ONE command per chunk, and gets every one.

Given about 400 ``<cluster>.<proc>`` arguments, ``condor_q`` (23.9 and 25.x) matches nothing at all, silently and with
exit 0 (it turns them into one chain of ORs; ``condor_history`` fails so with fewer): with the ids as arguments and the
backend's chunk of 500, every job of a chunk that large was reported "not listed yet", then lost. The dialect sends one
compact constraint instead (a cluster's procs as one range, other sets as ``member`` lists, ORed as a balanced tree).
Real pools of both releases; the commands are counted on the real SSH transport.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pytest

from intercede.backends.batch import BatchBackend
from intercede.backends.schedulers.htcondor import HTCondorScheduler
from intercede.backends.transports.base import CommandResult
from intercede.backends.transports.ssh import SSHTransport
from intercede.model import Copy, JobSpec, JobState, Resources
from stacks import harness
from tests.contract.cases_htcondor import CondorSetup

pytestmark = [pytest.mark.htcondor]

COPIES = 450  # more than the ~400 job ids at which condor_q given them as arguments matched none
HELD = Resources(native=["hold = true"])  # they stay in the queue, idle, until removed


class CountedSSH(SSHTransport):
    """The real SSH transport, recording the program of every command it runs."""

    programs: list[str]

    async def run(self, argv: Sequence[str], *, stdin: bytes | None = None,
                  timeout: float | None = None) -> CommandResult:
        self.programs.append(argv[0])
        return await super().run(argv, stdin=stdin, timeout=timeout)


def _cluster(job_id: str) -> str:
    return job_id.partition("@")[0].partition(".")[0]


async def test_status_of_a_450_proc_cluster_and_scattered_ids_is_one_command_per_source_and_finds_every_job(
        pool: CondorSetup) -> None:
    transport = CountedSSH(pool.stack.endpoint())
    transport.programs = []
    root = f"/home/tester/cli-status-{uuid.uuid4().hex[:8]}"
    async with BatchBackend(transport, HTCondorScheduler(), root) as backend:
        result = await backend.submit(JobSpec(executable="/bin/true", resources=HELD,
                                              copies=[Copy() for _ in range(COPIES)]))
        assert not result.failures and len(result.job_ids) == COPIES
        ids = result.job_ids
        (cluster,) = {_cluster(i) for i in ids}
        singles = [(await backend.submit(JobSpec(executable="/bin/true", resources=HELD))).job_ids[0]
                   for _ in range(3)]
        try:
            transport.programs.clear()
            statuses = await backend.status([*ids, *singles])
            assert transport.programs == ["condor_q"], "one condor_q for all 453 ids (below the chunk of 500)"
            # Held at submit: the queue's answer for each of them (an id the queue did not list is SUBMITTED).
            assert {(s.state, s.native_state) for s in statuses} == {(JobState.WAITING, "Held")}, \
                [s for s in statuses if s.native_state != "Held"][:3]

            pool.stack.check(f"condor_rm {cluster}", user="tester")
            harness.wait_for(lambda: not pool.stack.check(f"condor_q {cluster} -af ProcId", user="tester").strip(),
                             f"cluster {cluster} left the queue", 120)
            # Every other proc of the removed cluster (history: a member() list) and the three one-job clusters
            # (still queued): one condor_q, then one condor_history for those the queue no longer has.
            wanted = [*ids[::2], *singles]
            transport.programs.clear()
            statuses = await backend.status(wanted)
            assert transport.programs == ["condor_q", "condor_history"]
            assert [s.state for s in statuses] == [JobState.ABORTED] * len(ids[::2]) + [JobState.WAITING] * 3, \
                [s for s in statuses if s.state not in (JobState.ABORTED, JobState.WAITING)][:3]
        finally:
            pool.stack.exec(f"condor_rm {' '.join({_cluster(i) for i in [*ids, *singles]})}", user="tester")
            await backend.purge([*ids, *singles])
