"""Bad input and faults against the real stacks: each gives its documented outcome or typed error.

Credentials (missing, expired, for another pool or audience), a schedd that is down, a collector nobody answers on,
a job held by the site, outputs over the allow-list or a size bound, ids the schedd does not know, partial batches.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from intercede.backends.capabilities import LoadReporter
from intercede.errors import AuthenticationError, ConnectivityError, OutputBoundError, TransferError
from intercede.model import JobSpec, JobState, OutputBounds, OutputFile
from tests.contract.cases_htcondor import CondorSetup
from tests.contract.waiting import until_state, until_terminal
from tests.htcondor.conftest import ce_backend, schedd_backend

pytestmark = pytest.mark.htcondor

QUICK = JobSpec(executable="/bin/sh", arguments=["-c", "echo ok"])
SLEEP = JobSpec(executable="sleep", arguments=["300"])


# -- credentials -----------------------------------------------------------------------------------------------------

async def test_a_missing_token_file_is_refused_before_any_io(pool: CondorSetup, tmp_path: Path) -> None:
    async with schedd_backend(pool, token_file=tmp_path / "absent") as backend:
        with pytest.raises(AuthenticationError, match="missing or unreadable"):
            await backend.submit(QUICK)


async def test_no_token_at_all_is_refused_by_the_pool(pool: CondorSetup) -> None:
    async with schedd_backend(pool, token_file=None) as backend:
        with pytest.raises(AuthenticationError, match="AUTHENTICATE"):
            await backend.status(["1.0"])


async def test_an_expired_token_is_refused_and_said_to_be_expired(pool: CondorSetup) -> None:
    token = pool.stack.token("short-lived", lifetime=1)
    await asyncio.sleep(2)
    async with schedd_backend(pool, token_file=token) as backend:
        with pytest.raises(AuthenticationError, match="expired"):
            await backend.submit(QUICK)


async def test_a_token_of_another_pool_is_refused(pool: CondorSetup, ce: CondorSetup) -> None:
    async with schedd_backend(pool, token_file=ce.token) as backend:
        with pytest.raises(AuthenticationError):
            await backend.status(["1.0"])


@pytest.mark.remote
async def test_a_scitoken_for_the_ce_runs_a_job_end_to_end(ce: CondorSetup, tmp_path: Path) -> None:
    async with ce_backend(ce, scitoken_file=ce.stack.scitoken()) as backend:
        result = await backend.submit(JobSpec(executable="/bin/sh", arguments=["-c", "id -un"]))
        (status,) = await until_terminal(backend, result.job_ids)
        assert status.state is JobState.DONE
        await backend.fetch(result.job_ids[0], QUICK, tmp_path)
        assert (tmp_path / "stdout.txt").read_text() == "tester\n"


@pytest.mark.remote
async def test_a_scitoken_for_another_audience_is_refused_and_said_so(ce: CondorSetup) -> None:
    token = ce.stack.scitoken("elsewhere", audience="other-ce.example.org:9619")
    async with ce_backend(ce, scitoken_file=token) as backend:
        with pytest.raises(AuthenticationError, match="audience"):
            await backend.submit(QUICK)


@pytest.mark.remote
async def test_an_expired_scitoken_is_refused_and_said_to_be_expired(ce: CondorSetup) -> None:
    async with ce_backend(ce, scitoken_file=ce.stack.scitoken("expired", lifetime=-60)) as backend:
        with pytest.raises(AuthenticationError, match="expired"):
            await backend.status(["1.0"])


@pytest.mark.remote
async def test_a_ce_reports_no_load(ce: CondorSetup) -> None:
    async with ce_backend(ce) as backend:
        assert not isinstance(backend, LoadReporter) and not hasattr(backend, "load")


def _proxy(path: Path) -> str:
    """A self-signed certificate and its key in one PEM file, shaped like an X.509 proxy; returns its subject."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intercede test proxy")])
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=12)).sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    path.chmod(0o600)
    return "CN=intercede test proxy"


@pytest.mark.remote
async def test_a_proxy_travels_with_the_job_to_the_site(ce: CondorSetup, tmp_path: Path) -> None:
    proxy = tmp_path / "x509up"
    _proxy(proxy)
    spec = JobSpec(executable="/bin/sh", arguments=["-c", 'head -1 "$X509_USER_PROXY"; stat -c %a "$X509_USER_PROXY"'])
    async with ce_backend(ce, proxy=proxy) as backend:
        result = await backend.submit(spec)
        (status,) = await until_terminal(backend, result.job_ids)
        assert status.state is JobState.DONE, status
        await backend.fetch(result.job_ids[0], spec, tmp_path / "out")
        subject = ce.stack.check(f"CONDOR_CONFIG=/etc/condor-ce/condor_config condor_q {result.job_ids[0]} "
                                 "-af x509userproxysubject")
        await backend.purge(result.job_ids)
    lines = (tmp_path / "out" / "stdout.txt").read_text().splitlines()
    assert lines[0] == "-----BEGIN CERTIFICATE-----" and lines[1] == "600"
    assert "intercede test proxy" in subject


# -- the schedd and the collector ------------------------------------------------------------------------------------

async def test_a_schedd_that_is_down_makes_the_ce_unreachable_not_the_jobs_failed(pool: CondorSetup) -> None:
    async with schedd_backend(pool) as backend:
        result = await backend.submit(QUICK)
        await until_terminal(backend, result.job_ids)
        pool.stack.schedd_off()
        try:
            with pytest.raises(ConnectivityError):
                await backend.status(result.job_ids)
            with pytest.raises(ConnectivityError):
                await backend.submit(QUICK)
        finally:
            pool.stack.schedd_on()
        (status,) = await backend.status(result.job_ids)  # the same backend recovers once the schedd is back
        assert status.state is JobState.DONE


async def test_a_collector_nobody_answers_on_is_unreachable(pool: CondorSetup) -> None:
    async with schedd_backend(pool, call_timeout=30) as backend:
        backend.client.pool = f"{pool.stack.host}:1"
        with pytest.raises(ConnectivityError):
            await backend.status(["1.0"])


# -- jobs ------------------------------------------------------------------------------------------------------------

async def test_a_job_held_by_the_site_is_aborted_with_the_site_s_reason(pool: CondorSetup) -> None:
    async with schedd_backend(pool) as backend:
        result = await backend.submit(SLEEP)
        (job_id,) = result.job_ids
        await until_state(backend, job_id, {JobState.RUNNING})
        pool.stack.check(["condor_hold", "-reason", "site maintenance", job_id])
        (status,) = await until_terminal(backend, [job_id])
        assert (status.state, status.native_state) == (JobState.ABORTED, "Held")
        assert "site maintenance" in status.reason and "UserRequest" in status.reason
        assert [o.ok for o in await backend.purge([job_id])] == [True]


async def test_only_declared_outputs_come_back(pool: CondorSetup, tmp_path: Path) -> None:
    script = "echo a > wanted; echo b > undeclared; mkdir d; echo c > d/x"
    spec = JobSpec(executable="/bin/sh", arguments=["-c", script], output_files=[OutputFile(name="wanted")])
    async with schedd_backend(pool) as backend:
        result = await backend.submit(spec)
        await until_terminal(backend, result.job_ids)
        manifest = await backend.fetch(result.job_ids[0], spec, tmp_path / "dest")
    assert sorted(f.name for f in manifest.files) == ["stderr.txt", "stdout.txt", "wanted"]
    everything = await asyncio.to_thread(lambda: [p.name for p in [*tmp_path.rglob("*"), *pool.staging.rglob("*")]])
    assert "undeclared" not in everything and "x" not in everything


async def test_outputs_over_the_fetch_bound_are_refused_and_can_be_fetched_again(pool: CondorSetup,
                                                                                  tmp_path: Path) -> None:
    spec = JobSpec(executable="/bin/sh", arguments=["-c", "head -c 4096 /dev/zero"])
    async with schedd_backend(pool) as backend:
        result = await backend.submit(spec)
        await until_terminal(backend, result.job_ids)
        with pytest.raises(OutputBoundError, match="over the bound"):
            await backend.fetch(result.job_ids[0], spec, tmp_path / "small", OutputBounds(max_bytes=1024))
        assert not (tmp_path / "small").exists() or not any((tmp_path / "small").iterdir())
        manifest = await backend.fetch(result.job_ids[0], spec, tmp_path / "big")
        assert manifest.total_bytes == 4096


async def test_outputs_over_the_submit_bound_are_held_by_the_schedd(pool: CondorSetup) -> None:
    spec = JobSpec(executable="/bin/sh", arguments=["-c", "head -c 3000000 /dev/zero"])
    async with schedd_backend(pool, max_output_mb=1) as backend:
        result = await backend.submit(spec)
        (status,) = await until_terminal(backend, result.job_ids)
        assert (status.state, status.native_state) == (JobState.ABORTED, "Held"), status
        assert "max=1 MB" in status.reason, status
        await backend.purge(result.job_ids)


async def test_ids_the_schedd_does_not_know_are_answered_per_id(pool: CondorSetup, tmp_path: Path) -> None:
    async with schedd_backend(pool, grace=0) as backend:
        (status,) = await backend.status(["999999.0"])
        assert status.state is JobState.UNKNOWN and "neither" in status.reason
        (outcome,) = await backend.cancel(["999999.0"])
        assert not outcome.ok and "no such job" in outcome.detail
        with pytest.raises(TransferError, match="gone"):
            await backend.fetch("999999.0", QUICK, tmp_path)
        assert [o.ok for o in await backend.purge(["999999.0"])] == [True]


async def test_a_partial_batch_cancels_what_it_can_and_explains_the_rest(pool: CondorSetup) -> None:
    async with schedd_backend(pool) as backend:
        done = (await backend.submit(QUICK)).job_ids[0]
        running = (await backend.submit(SLEEP)).job_ids[0]
        await until_terminal(backend, [done])
        await until_state(backend, running, {JobState.WAITING, JobState.RUNNING})
        ids = [running, done, "999999.0", "garbage"]
        outcomes = await backend.cancel(ids)
        assert [o.job_id for o in outcomes] == ids
        assert [o.ok for o in outcomes] == [True, False, False, False]
        assert "finished" in outcomes[1].detail and "no such job" in outcomes[2].detail
        assert "not a job id" in outcomes[3].detail
        (status,) = await until_terminal(backend, [running])
        assert status.state is JobState.ABORTED
        await backend.purge([running, done])
