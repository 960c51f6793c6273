"""Credentials pushed to an ARC CE's delegation during a run (issue 12, item 3), against the real A-REX 7.2.

A :class:`CredentialKeeper` runs on its own schedule with a provider that mints short-lived credentials from the
stack (tokens from its issuer, proxies made with ``arcproxy`` for its user); jobs are submitted and followed while
the credentials are replaced under them. Every job finishes, none fails, and the jobs submitted after a replacement
name a delegation holding the new credential: a new token delegation per token (A-REX has no renew for tokens), the
same X.509 delegation renewed in place per proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from intercede.actors.credentials import CredentialKeeper
from intercede.backends.arc import ARCBackend
from intercede.backends.credentials import CallableCredentialProvider, Credential, CredentialNeed, credential_from_bytes
from intercede.model import JobSpec, JobState
from stacks.arc_stack import ARCStack
from tests.arc.test_delegation import delegation_of
from tests.contract.waiting import until_terminal

pytestmark = [pytest.mark.arc, pytest.mark.remote, pytest.mark.credentials]
JOB = JobSpec(executable="/bin/sleep", arguments=["3"])
ROUNDS = 3


@pytest.fixture(params=["7.2"], ids=["arc-7.2"])
def stack(request: pytest.FixtureRequest) -> ARCStack:
    return request.getfixturevalue(f"arc_{request.param.replace('.', '_')}")  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def keeping(keeper: CredentialKeeper) -> AsyncIterator[None]:
    await keeper.ready()
    task = asyncio.create_task(keeper.run_forever())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _run(be: ARCBackend, keeper: CredentialKeeper, stack: ARCStack) -> tuple[list[str], list[str]]:
    """Submit a job per round, each round once the keeper has replaced the credential; follow them all."""
    ids: list[str] = []
    delegations: list[str] = []
    for _ in range(ROUNDS):
        seen = keeper.refreshes
        for _ in range(240):  # until the keeper has installed a new credential (it does so on its own schedule)
            if keeper.refreshes > seen:
                break
            await asyncio.sleep(0.5)
        assert keeper.refreshes > seen, "the keeper did not replace the credential"
        job_id = (await be.submit(JOB)).job_ids[0]
        ids.append(job_id)
        delegations.append(await asyncio.to_thread(delegation_of, stack, job_id))
        await be.status(ids)  # the earlier jobs are followed with the new credential
    statuses = await until_terminal(be, ids)
    assert [s.state for s in statuses] == [JobState.DONE] * ROUNDS, statuses
    assert keeper.problem == ""
    return ids, delegations


async def test_tokens_replaced_during_a_run_are_delegated_anew_and_no_job_fails(stack: ARCStack) -> None:
    minted: list[str] = []

    async def mint(need: CredentialNeed) -> Credential:
        path = await asyncio.to_thread(stack.token, f"lc-token-{len(minted)}", lifetime=60)
        minted.append(path.read_text().strip())
        return credential_from_bytes("token", minted[-1].encode(), need.audience)

    token_file = stack.token("lc-token", lifetime=60)  # expires within the run: only the keeper keeps it valid
    async with ARCBackend(stack.url, ca_file=stack.ca_file, token_file=token_file) as be:
        # a token is due again once less than 50 s of it is left: every ~10 s
        keeper = CredentialKeeper("arc", be, CallableCredentialProvider(mint), margins={"token": 50}, interval=1)
        async with keeping(keeper):
            ids, delegations = await _run(be, keeper, stack)
        assert len(set(delegations)) == ROUNDS  # one token delegation per token
        for delegation in delegations:
            held = (await be.rest.call("POST", f"delegations/{delegation}", params={"action": "get"})).text
            assert held.strip().removeprefix("Bearer ").strip() in minted
        assert token_file.read_text().strip() in minted  # the REST client authenticates with the newest
        await be.purge(ids)


async def test_proxies_replaced_during_a_run_renew_the_delegation_in_place_and_no_job_fails(
        stack: ARCStack) -> None:
    made: list[bytes] = []

    async def mint(need: CredentialNeed) -> Credential:
        def fresh() -> bytes:
            out = f"/tmp/lc-proxy-{len(made)}"
            stack.check(f"su tester -s /bin/sh -c 'arcproxy -c validityPeriod=3h -P {out}' >/dev/null")
            return stack.check(f"cat {out}").encode()

        made.append(await asyncio.to_thread(fresh))
        return credential_from_bytes("proxy", made[-1])

    proxy_file = stack.path("lc-proxy")
    proxy_file.write_bytes(stack.proxy_file.read_bytes())
    proxy_file.chmod(0o600)
    async with ARCBackend(stack.url, ca_file=stack.ca_file, proxy_file=proxy_file) as be:
        # a 3 h proxy is due again once less than 3 h - 10 s of it is left: every ~10 s
        keeper = CredentialKeeper("arc", be, CallableCredentialProvider(mint), margins={"proxy": 3 * 3600 - 10},
                                  interval=1)
        first = await be.delegation()
        async with keeping(keeper):
            ids, delegations = await _run(be, keeper, stack)
        assert delegations == [first] * ROUNDS  # renewed in place: one delegation throughout
        assert len(made) >= ROUNDS and proxy_file.read_bytes() in made
        held = (await be.rest.call("POST", f"delegations/{first}", params={"action": "get"})).text
        assert held.strip()  # A-REX holds the renewed proxy under the same id
        await be.purge(ids)
