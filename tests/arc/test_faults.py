"""Faults and credentials against a real A-REX (ARC 7.0, the release the contract suite runs with token auth).

Each test names the release in its id. No mocks: the daemons are real; the one cut connection is made by a TCP relay
in front of the real A-REX (TLS stays end to end between the backend and A-REX).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import certifi
import pytest

from intercede.backends.arc import ARCBackend
from intercede.errors import AuthenticationError, ConnectivityError, IntercedeError, is_temporary
from intercede.model import Copy, JobSpec, JobState
from stacks.arc_stack import ARCStack
from tests.contract.waiting import until_state, until_terminal

pytestmark = [pytest.mark.arc, pytest.mark.remote, pytest.mark.faults]


@pytest.fixture(params=["7.0"], ids=["arc-7.0"])
def stack(request: pytest.FixtureRequest) -> ARCStack:
    return request.getfixturevalue(f"arc_{request.param.replace('.', '_')}")  # type: ignore[no-any-return]


def tag() -> str:
    return f"ft-{uuid.uuid4().hex[:12]}"


async def test_debug_logs_never_hold_a_token_a_proxy_or_a_secret(stack: ARCStack, caplog: pytest.LogCaptureFixture,
                                                                  tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: intercede's, httpx's, httpcore's
    token = stack.token("log-token")
    spec = JobSpec(executable="/bin/sh", arguments=["-c", "echo hi"], copies=[Copy(secrets={"K": "v4lue-s3cr3t"})])
    for backend in (ARCBackend(stack.url, ca_file=stack.ca_file, token_file=token),
                    ARCBackend(stack.url, ca_file=stack.ca_file, proxy_file=stack.proxy_file)):
        async with backend:
            result = await backend.submit(spec)
            await until_terminal(backend, result.job_ids)
            await backend.fetch(result.job_ids[0], spec, tmp_path / uuid.uuid4().hex)
            await backend.purge(result.job_ids)
            assert token.read_text().strip() not in repr(backend)
    text = caplog.text
    assert "ARC" in text and "action=info" in text  # the requests were logged ...
    proxy_key = re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----\n(.{40})", stack.proxy_file.read_text())
    assert proxy_key is not None
    for secret in (token.read_text().strip(), token.read_text().strip()[-40:], proxy_key.group(1), "v4lue-s3cr3t",
                   "Bearer "):
        assert secret not in text  # ... and no credential with them


async def test_a_server_certificate_from_an_unknown_ca_is_refused(stack: ARCStack) -> None:
    async with ARCBackend(stack.url, ca_file=Path(certifi.where()), proxy_file=stack.proxy_file) as backend:
        with pytest.raises(AuthenticationError, match="not verified"):
            await backend.status(["abcdef123456"])


async def test_an_expired_token_is_an_authentication_error(stack: ARCStack) -> None:
    async with ARCBackend(stack.url, ca_file=stack.ca_file, token_file=stack.token("expired", lifetime=-60)) as be:
        with pytest.raises(AuthenticationError, match="refused the credentials"):
            await be.submit(JobSpec(executable="/bin/true"))


async def test_a_refreshed_token_file_is_picked_up_without_a_new_backend(stack: ARCStack) -> None:
    path = stack.path("rotating")
    path.write_text("not-a-token\n")
    async with ARCBackend(stack.url, ca_file=stack.ca_file, token_file=path) as be:
        with pytest.raises(AuthenticationError):
            await be.status(["abcdef123456"])
        path.write_text(stack.token("fresh").read_text())
        (status,) = await be.status(["abcdef123456"])
        assert status.state is JobState.SUBMITTED  # a 404 within the grace period, answered with valid credentials


async def test_an_expired_proxy_is_an_authentication_error(stack: ARCStack) -> None:
    stack.check("su tester -s /bin/sh -c 'arcproxy -c validityPeriod=1 -P /tmp/x509short' >/dev/null")
    short = stack.path("short-proxy")
    short.write_text(stack.check(["cat", "/tmp/x509short"]))
    short.chmod(0o600)
    await asyncio.sleep(2.5)  # the proxy's own validity (1 s) must pass: nothing to poll, it is the clock
    async with ARCBackend(stack.url, ca_file=stack.ca_file, proxy_file=short) as be:
        with pytest.raises(AuthenticationError):
            await be.submit(JobSpec(executable="/bin/true"))


class Relay:
    """A TCP relay in front of A-REX. Armed, it forwards the next request and cuts the connection at the first byte
    of the answer: the request has reached A-REX, the client never learns what happened."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.armed = False
        self.cuts = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, answer: bool) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    if answer and self.armed and self._sent:
                        self.armed, self.cuts = False, self.cuts + 1
                        for w in (writer, up_writer):
                            w.transport.abort()
                        return
                    if not answer and self.armed:
                        self._sent = True
                    dst.write(data)
                    await dst.drain()
            dst.close()

        self._sent = False
        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))

    def arm(self) -> None:
        self._sent, self.armed = False, True

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def relay(stack: ARCStack) -> AsyncIterator[tuple[Relay, str]]:
    r = Relay(stack.host, 8443)
    port = await r.start()
    yield r, f"https://127.0.0.1:{port}/arex"  # the host certificate names 127.0.0.1 too
    await r.stop()


async def test_a_connection_cut_during_submit_is_not_resent_and_the_job_is_adopted_by_tag(
        stack: ARCStack, relay: tuple[Relay, str]) -> None:
    r, url = relay
    mine = tag()
    async with ARCBackend(url, ca_file=stack.ca_file, proxy_file=stack.proxy_file) as be:
        await be.status(["abcdef123456"])
        await be.delegation()  # the connection is up and delegated: the next bytes sent are the submit itself
        r.arm()
        with pytest.raises(ConnectivityError, match="may have been created"):
            await be.submit(JobSpec(executable="/bin/sh", arguments=["-c", "exit 0"], tag=mine))
        assert r.cuts == 1
        found = await be.find_by_tag([mine])
    assert len(found[mine]) == 1  # created once, never re-sent; found again by its tag
    async with ARCBackend(stack.url, ca_file=stack.ca_file, proxy_file=stack.proxy_file) as direct:
        assert (await direct.find_by_tag([mine]))[mine] == found[mine]
        (status,) = await until_terminal(direct, found[mine])
        assert status.state is JobState.DONE


async def test_arex_down_is_a_connectivity_error_and_no_job_fails(stack: ARCStack) -> None:
    async with ARCBackend(stack.url, ca_file=stack.ca_file, proxy_file=stack.proxy_file) as be:
        result = await be.submit(JobSpec(executable="/bin/sh", arguments=["-c", "sleep 20"]))
        await until_state(be, result.job_ids[0], {JobState.WAITING, JobState.RUNNING})
        stack.arex_stop()
        try:
            with pytest.raises(ConnectivityError, match="cannot connect"):
                await be.status(result.job_ids)
        finally:
            stack.arex_start()
        (status,) = await until_terminal(be, result.job_ids)
        assert status.state is JobState.DONE


async def test_a_hung_arex_is_a_connectivity_error_not_a_credential_refusal(stack: ARCStack) -> None:
    """arched frozen (SIGSTOP): the kernel still accepts the TCP connection, the TLS handshake never completes. That
    is the CE not answering (temporary), not credentials refused (seen under load: a handshake timeout had been
    reported as "the CE refused the client certificate")."""
    async with ARCBackend(stack.url, ca_file=stack.ca_file, proxy_file=stack.proxy_file,
                          connect_timeout=2.0) as be:
        await be.status(["abcdef123456"])  # negotiated while A-REX answers
        await be.rest.aclose()  # the next request needs a new connection, hence a handshake
        stack.check("kill -STOP $(pgrep -x arched)")
        try:
            with pytest.raises(IntercedeError) as caught:
                await be.status(["abcdef123456"])
            assert is_temporary(caught.value) and not isinstance(caught.value, AuthenticationError), caught.value
        finally:
            stack.check("kill -CONT $(pgrep -x arched)")
        (after,) = await be.status(["abcdef123456"])
        assert after.job_id == "abcdef123456"

