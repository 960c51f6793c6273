"""Credentials as a lifecycle on the CE-shaped HTCondor stack (SciTokens from its own issuer, checked by the CE):

* a token that expires during a run is refreshed by the provider before it expires, independently of job traffic,
  and pushed to the backend (each new token makes the backend's workers authenticate again), with no job failed;
* an expired token nobody renews makes the CE report an authentication problem in its health, the reconciler holds
  its jobs back (not submitted, not failed), and the CE recovers by itself when a fresh token file appears.

The service runs in this process (LocalSeam): the reconciler, its loop and the CE actor are the real ones."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from intercede.actors.ce import CEActor
from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest, ce_actor_name
from intercede.actors.seam import LocalSeam
from intercede.actors.settings import Settings
from intercede.backends.credentials import CallableCredentialProvider, Credential, CredentialNeed, credential_from_bytes
from intercede.backends.registry import HTCondorCEConfig
from intercede.model import JobSpec
from tests.contract.cases_htcondor import CondorSetup, condor_ce_25  # noqa: F401 - the session's CE stack
from tests.htcondor.conftest import CE_CONFIG

# On the worker of the contract suite's HTCondor-CE 25.x case: the stack is started once for both.
pytestmark = [pytest.mark.credentials, pytest.mark.xdist_group("case-HTCondor-CE-25.x"),
              pytest.mark.parametrize("release", ["25.x"])]


@pytest.fixture
def ce_stack(request: pytest.FixtureRequest, release: str) -> CondorSetup:
    return request.getfixturevalue("condor_ce_25")  # type: ignore[no-any-return]


def _config(setup: CondorSetup, scitoken: Path, **options: object) -> HTCondorCEConfig:
    return HTCondorCEConfig(name="ce", ce=setup.stack.host, scitoken_file=scitoken, ca_file=setup.stack.ca_file(),
                            config=CE_CONFIG, staging=setup.staging, poll_interval=1.0, **options)  # type: ignore[arg-type]


async def _until(what: str, check: object, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_token_expiring_during_a_run_is_refreshed_and_no_job_fails(
        ce_stack: CondorSetup, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    minted: list[str] = []

    async def mint(need: CredentialNeed) -> Credential:
        path = await asyncio.to_thread(ce_stack.stack.scitoken, f"minted-{len(minted)}", audience=need.audience,
                                       lifetime=40)
        minted.append(path.read_text().strip())
        return credential_from_bytes("token", minted[-1].encode(), need.audience)

    config = _config(ce_stack, tmp_path / "unused-scitoken", credential_margins={"token": 25})
    seam = LocalSeam()
    ce = seam.start(CEActor, ce_actor_name("ce"), config, credentials=CallableCredentialProvider(mint))
    ic = Intercede.start(Settings(data_dir=tmp_path / "data", ce=[config]), seam=seam)
    jobs = [JobRequest(f"long-{i}", "ce", JobSpec(executable="/bin/sh", arguments=["-c", "sleep 50; echo ok"]))
            for i in range(2)]
    await ic.declare(jobs, progress=False)
    rows = await ic.wait([j.key for j in jobs], timeout=240, progress=False)
    assert [(r.state, r.exit_code, r.permanent_error) for r in rows] == [("Done", 0, None)] * 2
    assert len(minted) >= 3  # 40 s tokens, renewed 25 s before expiry, over a run of more than 50 s
    (health,) = await ic.ce_health()
    assert health.auth_problem == "" and health.poll_errors == 0  # every poll authenticated with a valid token
    assert health.credentials["scitoken"] is not None
    assert ce.credentials.refreshes == len(minted)
    shown = caplog.text + repr(health) + repr(ce.backend) + repr(ce.credentials.expiries())
    for token in minted:
        assert token.split(".")[2] not in shown and token not in shown  # never logged, never in a repr


async def test_an_expired_token_holds_jobs_back_and_a_fresh_file_recovers_the_ce(
        ce_stack: CondorSetup, tmp_path: Path) -> None:
    token = ce_stack.stack.scitoken("held-token", lifetime=-60)  # expired already
    config = _config(ce_stack, token)
    ic = Intercede.start(Settings(data_dir=tmp_path / "data", ce=[config]), seam=LocalSeam())
    job = JobRequest("held-1", "ce", JobSpec(executable="/bin/sh", arguments=["-c", "echo ok"]))
    await ic.declare([job], progress=False)

    async def auth_problem() -> bool:
        (health,) = await ic.ce_health()
        return "expired at" in health.auth_problem

    await _until("the CE to report its expired token", auth_problem)
    before = (await ic.stats())
    await _until("a few reconciler ticks", lambda: _ticked(ic, before))
    (row,) = await ic.rows_of(["held-1"])
    assert (row.state, row.job_id, row.permanent_error) == (None, None, None)  # held back, not failed

    ce_stack.stack.scitoken("held-token", lifetime=600)  # someone renews the file
    rows = await ic.wait(["held-1"], timeout=120, progress=False)
    assert [(r.state, r.exit_code) for r in rows] == [("Done", 0)]
    (health,) = await ic.ce_health()
    assert health.auth_problem == ""


async def _ticked(ic: Intercede, before: dict[str, object]) -> bool:
    now = await ic.stats()
    return int(now.get("ticks", 0)) >= int(before.get("ticks", 0)) + 3  # type: ignore[call-overload]
