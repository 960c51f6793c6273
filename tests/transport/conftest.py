"""Fixtures of the transport conformance suite: real sshd containers and one ``transport`` fixture over
``Local``, ``SSH`` (direct) and ``SSH-jump`` (the same sshd reached through a second one).

The containers are started once per session. Nothing skips: without an engine or image the fixtures error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from intercede.backends.transports.base import Transport
from intercede.backends.transports.local import LocalTransport
from intercede.backends.transports.ssh import SSHTransport
from stacks import harness
from stacks.ssh_stack import SSHStack, start_jump_pair


@pytest.fixture(scope="session")
def sshd_pair() -> Iterator[tuple[SSHStack, SSHStack]]:
    """``(target, jump)``: the sshd every SSH test reaches, and a second sshd used as a jump host to it."""
    harness.engine()
    with start_jump_pair() as pair:
        yield pair


@pytest.fixture(scope="session")
def sshd(sshd_pair: tuple[SSHStack, SSHStack]) -> SSHStack:
    return sshd_pair[0]


@pytest.fixture(scope="session")
def jump_sshd(sshd_pair: tuple[SSHStack, SSHStack]) -> SSHStack:
    return sshd_pair[1]


def make_transport(kind: str, request: pytest.FixtureRequest) -> Transport:
    if kind == "Local":
        return LocalTransport()
    target: SSHStack = request.getfixturevalue("sshd")
    jump: SSHStack | None = request.getfixturevalue("jump_sshd") if kind == "SSH-jump" else None
    return SSHTransport(target.endpoint(), jump=jump.endpoint() if jump else None, connect_timeout=10.0)


@pytest.fixture(scope="session", params=["Local", "SSH", "SSH-jump"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    """One transport per kind for the whole session, so reuse across tests is part of what is tested."""
    async with make_transport(request.param, request) as t:
        yield t


@pytest.fixture(scope="session", params=["SSH", "SSH-jump"])
async def ssh_transport(request: pytest.FixtureRequest) -> AsyncIterator[SSHTransport]:
    """The SSH kinds alone, for what only SSH has (one connection, reconnects)."""
    t = make_transport(request.param, request)
    assert isinstance(t, SSHTransport)
    async with t:
        yield t


@pytest.fixture
async def workdir(transport: Transport) -> AsyncIterator[str]:
    """A fresh directory where ``transport`` runs (made and removed through the transport itself)."""
    made = (await transport.run(["mktemp", "-d", "/tmp/intercede-transport-XXXXXX"])).check()
    path = made.text.strip()
    yield path
    await transport.run(["rm", "-rf", "--", path])
