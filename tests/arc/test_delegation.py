"""Delegation with the X.509 proxy, against the real A-REX of every release (6.17 sends version-2 requests)."""

from __future__ import annotations

import pytest

from intercede.backends.arc import ARCBackend
from intercede.model import JobSpec
from stacks.arc_stack import ARCStack
from stacks.harness import wait_for

pytestmark = [pytest.mark.arc, pytest.mark.remote, pytest.mark.credentials]
RELEASES = ["6.17", "7.0", "7.2"]


@pytest.fixture(params=RELEASES, ids=[f"arc-{r}" for r in RELEASES])
def stack(request: pytest.FixtureRequest) -> ARCStack:
    return request.getfixturevalue(f"arc_{request.param.replace('.', '_')}")  # type: ignore[no-any-return]


def delegation_of(stack: ARCStack, job_id: str) -> str:
    """The delegation id A-REX recorded for the job (``delegationid=`` in its control directory's ``local`` file,
    which lives under the id split in groups of three characters)."""
    folder = "/".join(job_id[i:i + 3] for i in range(0, len(job_id), 3))
    found = ""

    def recorded() -> bool:  # A-REX writes the file while it accepts the job: under load the line may come later
        nonlocal found
        res = stack.exec(f"grep -h '^delegationid=' /var/spool/arc/jobstatus/jobs/{folder}/local")
        found = res.stdout.strip().partition("=")[2] if res.exit_code == 0 else ""
        return bool(found)

    wait_for(recorded, f"the delegation id of job {job_id} in its control directory", timeout=30.0)
    return found


async def test_a_delegation_is_created_once_reused_and_recreated_when_the_ce_does_not_know_it(
        stack: ARCStack) -> None:
    async with ARCBackend(stack.url, ca_file=stack.ca_file, proxy_file=stack.proxy_file) as be:
        first = await be.delegation()
        assert first and await be.delegation() == first  # reused
        listed = (await be.rest.call("GET", "delegations")).json()["delegation"]
        assert first in {d["id"] for d in ([listed] if isinstance(listed, dict) else listed)}
        result = await be.submit(JobSpec(executable="/bin/true"))
        if be.rest.version != "1.0":  # REST 1.1 names it per submit; the job carries it
            assert delegation_of(stack, result.job_ids[0]) == first
        assert be._delegation is not None
        be._delegation = ("ffff00001111", be._delegation[1])  # an id A-REX has no record of (as after a wipe)
        be._delegation_checked = 0.0  # due for its check (made at most once a minute)
        again = await be.delegation()
        assert again not in (None, "ffff00001111", first)


@pytest.mark.parametrize("release", ["7.2"], ids=["arc-7.2"])
async def test_a_renewed_proxy_renews_the_delegation_in_place(release: str, request: pytest.FixtureRequest) -> None:
    """The credential keeper hands a new proxy to the backend: the delegation jobs use is renewed under the same id
    (``action=renew``), so running jobs keep a valid proxy (DIRAC #7908), and later submits use it."""
    from intercede.backends.credentials import credential_from_bytes

    stack: ARCStack = request.getfixturevalue(f"arc_{release.replace('.', '_')}")
    async with ARCBackend(stack.url, ca_file=stack.ca_file, proxy_file=stack.proxy_file) as be:
        first = await be.delegation()
        assert first is not None and be._delegation is not None
        (need,) = [n for n in be.credential_needs() if n.kind == "proxy"]
        be._delegation = (first, be._delegation[1].replace(year=2000))  # as if it were about to expire
        await be.use_credential(need, credential_from_bytes("proxy", stack.proxy_file.read_bytes()))
        assert be._delegation[0] == first and be._delegation[1].year > 2000  # renewed in place, new expiry
        result = await be.submit(JobSpec(executable="/bin/true"))
        assert delegation_of(stack, result.job_ids[0]) == first
