"""Fixtures of the backend contract suite: one parametrised ``backend`` over every case in :mod:`cases`."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from intercede.backends.batch import BatchBackend
from intercede.backends.capabilities import JobBackend
from intercede.backends.schedulers.direct import DirectScheduler
from intercede.backends.transports.local import LocalTransport
from intercede.backends.transports.ssh import SSHTransport
from stacks.ssh_stack import SSHStack, start_sshd
from tests.contract.cases import Case


def _local_direct(root: Path) -> JobBackend:
    return BatchBackend(LocalTransport(), DirectScheduler(str(root)), str(root), name="direct-local")


def _ssh_direct(stack: SSHStack) -> JobBackend:
    root = "/home/tester/jobs"
    return BatchBackend(SSHTransport(stack.endpoint()), DirectScheduler(root), root, name="direct-ssh")


CASES = [
    Case("direct-Local", (pytest.mark.direct,), "local_root", _local_direct),
    Case("direct-SSH", (pytest.mark.direct,), "sshd_stack", _ssh_direct),
]


@pytest.fixture(scope="session")
def sshd_stack() -> Iterator[SSHStack]:
    with start_sshd() as stack:
        yield stack


@pytest.fixture(scope="session")
def local_root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="intercede-direct-") as root:
        yield Path(root)


@pytest.fixture(scope="session", params=[pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def backend(case: Case, request: pytest.FixtureRequest) -> AsyncIterator[JobBackend]:
    stack = request.getfixturevalue(case.stack) if case.stack else None
    async with case.build(stack) as be:
        yield be
