"""Token delegation (REST 1.1: ``POST /delegations?action=new&type=jwt``, the token in ``X-Token-Delegation``)
against the real A-REX, with tokens from the stack's own issuer. ARC 6.17 has none: asserted, then skipped."""

from __future__ import annotations

import pytest

from intercede.backends.arc import ARCBackend
from intercede.model import JobSpec, JobState
from stacks.arc_stack import ARCStack
from tests.arc.test_delegation import delegation_of
from tests.contract.waiting import until_terminal

pytestmark = [pytest.mark.arc, pytest.mark.remote, pytest.mark.credentials]
RELEASES = ["6.17", "7.2"]


@pytest.fixture(params=RELEASES, ids=[f"arc-{r}" for r in RELEASES])
def stack(request: pytest.FixtureRequest) -> ARCStack:
    return request.getfixturevalue(f"arc_{request.param.replace('.', '_')}")  # type: ignore[no-any-return]


async def _held(be: ARCBackend, delegation: str) -> str:
    """The token A-REX holds in ``delegation`` (``action=get`` answers ``Bearer <token>``)."""
    answer = await be.rest.call("POST", f"delegations/{delegation}", params={"action": "get"})
    return answer.text.strip().removeprefix("Bearer ").strip()


async def _absent_on(stack: ARCStack) -> None:
    """ARC 6.17 (REST 1.0) ignores ``type=jwt``: it answers an X.509 CSR, and the backend does not take it for a CE
    with token delegation (authenticated with the proxy: this stack's 6.17 drops token-only connections)."""
    token = stack.token("td-617")
    async with ARCBackend(stack.url, ca_file=stack.ca_file, proxy_file=stack.proxy_file) as probe:
        answer = await probe.rest.call("POST", "delegations", params={"action": "new", "type": "jwt"},
                                       headers={"X-Token-Delegation": f"Bearer {token.read_text().strip()}"})
        assert probe.rest.version == "1.0" and "BEGIN CERTIFICATE REQUEST" in answer.text
        assert not await probe._token_delegation()


async def test_a_token_is_delegated_reused_and_delegated_again_when_the_token_file_changes(
        stack: ARCStack) -> None:
    if stack.release == "6.17":
        await _absent_on(stack)
        pytest.skip("ARC 6.17 (REST 1.0) has no token delegation: asserted absent above")
    token = stack.token("td-token")
    job = JobSpec(executable="/bin/true")
    async with ARCBackend(stack.url, ca_file=stack.ca_file, token_file=token) as be:
        first = await be.delegation()
        assert first is not None and await be.delegation() == first  # made once, reused
        listed = (await be.rest.call("GET", "delegations")).json()["delegation"]
        assert {"id": first, "type": "jwt"} in ([listed] if isinstance(listed, dict) else listed)
        assert await _held(be, first) == token.read_text().strip()
        one = (await be.submit(job)).job_ids[0]
        assert delegation_of(stack, one) == first

        fresh = stack.token("td-fresh").read_text()
        assert fresh != token.read_text()
        token.write_text(fresh)  # renewed by whoever keeps the file (no renew exists at the CE for tokens)
        second = await be.delegation()
        assert second not in (None, first) and await _held(be, second) == fresh.strip()
        two = (await be.submit(job)).job_ids[0]
        assert delegation_of(stack, two) == second
        assert [s.state for s in await until_terminal(be, [one, two])] == [JobState.DONE, JobState.DONE]
        await be.purge([one, two])
