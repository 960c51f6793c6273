"""A-REX's own job limit against the real daemon (ARC 7.2): ``No more jobs allowed`` is a temporary refusal.

The stack is this module's own (a limit on a shared stack would refuse the other tests' jobs).
:meth:`ARCStack.limit_jobs` sets ``maxjobs`` and makes A-REX's info provider write the count the limit is checked
against (stock A-REX never writes it, so stock A-REX never refuses: docs/arc.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from intercede.backends.arc import ARCBackend
from intercede.model import JobSpec
from stacks import harness
from stacks.arc_stack import ARCStack, arc_stack

pytestmark = [pytest.mark.arc, pytest.mark.remote, pytest.mark.faults]

LIMIT = 2


@pytest.fixture(scope="module", params=["7.2"], ids=["arc-7.2"])
def limited(request: pytest.FixtureRequest) -> Iterator[ARCStack]:
    harness.engine()
    with arc_stack(request.param) as stack:
        stack.limit_jobs(LIMIT)
        yield stack


def _jobs_at(stack: ARCStack) -> int:
    """Jobs A-REX holds (their control files), counted in the container."""
    return int(stack.check("ls /var/spool/arc/jobstatus/jobs/*/*/*/*/local 2>/dev/null | wc -l").strip())


async def test_a_full_ce_refuses_as_temporary_without_making_a_job_and_accepts_once_room_is_made(
        limited: ARCStack) -> None:
    stack = limited
    sleeper = JobSpec(executable="/bin/sleep", arguments=["600"])
    async with ARCBackend(stack.url, ca_file=stack.ca_file, proxy_file=stack.proxy_file) as be:
        first = [await be.submit(sleeper) for _ in range(LIMIT)]
        held = [j for r in first for j in r.job_ids]
        assert len(held) == LIMIT
        harness.wait_for(lambda: (stack.jobs_counted() or 0) >= LIMIT, f"A-REX counting {LIMIT} jobs", 180,
                         interval=2)

        tag = f"lim-{uuid.uuid4().hex[:12]}"
        refused = (await be.submit(sleeper.model_copy(update={"tag": tag}))).submissions[0]
        assert refused.job_id is None and "No more jobs allowed" in refused.error
        assert refused.temporary  # is_temporary of the backend's error: the reconciler holds the copy back
        assert stack.count_named(tag) == 0 and _jobs_at(stack) == LIMIT  # no job was made

        outcome = (await be.purge(held[:1]))[0]
        assert outcome.ok, outcome.detail
        harness.wait_for(lambda: (stack.jobs_counted() or LIMIT) < LIMIT, "A-REX counting the purged job out", 180,
                         interval=2)

        accepted = (await be.submit(sleeper.model_copy(update={"tag": tag}))).submissions[0]
        assert accepted.ok and accepted.job_id is not None, accepted.error
        assert stack.count_named(tag) == 1
        await be.purge([*held[1:], accepted.job_id])  # tidy only: the stack is this module's own
