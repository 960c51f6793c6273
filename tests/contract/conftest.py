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
from tests.contract.cases import Case


def _local_direct(root: Path) -> JobBackend:
    return BatchBackend(LocalTransport(), DirectScheduler(str(root)), str(root), name="direct-local")


CASES = [
    Case("direct-Local", (pytest.mark.direct,), "local_root", _local_direct),
]


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
