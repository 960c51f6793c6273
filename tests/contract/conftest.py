"""Fixtures of the backend contract suite: one parametrised ``backend`` over every case in :mod:`cases`."""

from __future__ import annotations

import asyncio
import functools
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from intercede.backends.batch import BatchBackend
from intercede.backends.capabilities import JobBackend
from intercede.backends.schedulers.direct import DirectScheduler
from intercede.backends.schedulers.gridengine import GridEngineScheduler
from intercede.backends.schedulers.oar import OARScheduler
from intercede.backends.schedulers.slurm import SlurmScheduler
from intercede.backends.transports.local import LocalTransport
from intercede.backends.transports.ssh import SSHEndpoint, SSHTransport
from intercede.model import JobSpec, Resources
from stacks.oar_stack import OAR_VERSIONS, OARStack
from stacks.oar_stack import start as start_oar
from stacks.sge_stack import SGE_VERSIONS, GridEngineStack
from stacks.sge_stack import start as start_sge
from stacks.slurm_stack import SLURM_VERSIONS, SlurmStack
from stacks.slurm_stack import start as start_slurm
from stacks.ssh_stack import SSHStack, start_sshd
from tests.contract.cases import Case, slurm_refused
from tests.contract.cases_arc import CASES as ARC_CASES
from tests.contract.cases_arc import arc_6_17, arc_7_0, arc_7_2, arc_htcondor, arc_slurm  # noqa: F401
from tests.contract.cases_htcondor import CASES as HTCONDOR_CASES
from tests.contract.cases_htcondor import condor_23_9, condor_25, condor_ce_23_9, condor_ce_25  # noqa: F401


def _local_direct(root: Path) -> JobBackend:
    return BatchBackend(LocalTransport(), DirectScheduler(str(root)), str(root), name="direct-local")


def _ssh_direct(stack: SSHStack) -> JobBackend:
    root = "/home/tester/jobs"
    return BatchBackend(SSHTransport(stack.endpoint()), DirectScheduler(root), root, name="direct-ssh")


def _slurm(version: str) -> Callable[[SlurmStacks], JobBackend]:
    def build(stacks: SlurmStacks) -> JobBackend:
        stack = stacks.get(version)
        endpoint = SSHEndpoint(host=stack.host, port=stack.port, username=stack.username,
                               client_keys=[stack.client_key], known_hosts=stack.known_hosts)
        root = "/home/tester/jobs"
        return BatchBackend(SSHTransport(endpoint), SlurmScheduler(), root, name=f"slurm-{version}")
    return build


async def _left_slurm_queue(version: str, stacks: SlurmStacks, job_id: str) -> None:
    native = job_id.split("@")[0]
    for _ in range(120):
        out = stacks.get(version).exec(["squeue", "--noheader", "--states=all", f"--jobs={native},0"]).stdout
        if not out.strip():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"job {native} never left the Slurm queue")


def _sge(stack: GridEngineStack) -> JobBackend:
    root = "/home/tester/jobs"
    return BatchBackend(SSHTransport(stack.endpoint()), GridEngineScheduler(root), root, name=f"sge-{stack.version}")


def sge_refused() -> tuple[JobSpec, str]:
    return JobSpec(executable="true", resources=Resources(queue="no-such.q")), "queue"


def _oar(stack: OARStack) -> JobBackend:
    root = "/home/tester/jobs"
    return BatchBackend(SSHTransport(stack.endpoint()), OARScheduler(root), root, name=f"oar-{stack.version}")


def oar_refused() -> tuple[JobSpec, str]:
    return JobSpec(executable="true", resources=Resources(queue="no-such-queue")), "queue"


class SlurmStacks:
    """Slurm stacks started on first use, one per version, stopped at the end of the session."""

    def __init__(self) -> None:
        self._stacks: dict[str, SlurmStack] = {}

    def get(self, version: str) -> SlurmStack:
        if version not in self._stacks:
            self._stacks[version] = start_slurm(version)
        return self._stacks[version]

    def stop(self) -> None:
        for stack in self._stacks.values():
            stack.stop()


CASES = [
    Case("direct-Local", (pytest.mark.direct,), "local_root", _local_direct),
    Case("direct-SSH", (pytest.mark.direct,), "sshd_stack", _ssh_direct),
    *(Case(f"slurm-{v}", (pytest.mark.slurm,), "slurm_stacks", _slurm(v), refused=slurm_refused(),
           left_queue=functools.partial(_left_slurm_queue, v)) for v in SLURM_VERSIONS),
    *(Case(f"sge-{v}", (pytest.mark.sge,), "sge_stack", _sge, refused=sge_refused()) for v in SGE_VERSIONS),
    *(Case(f"oar-{v}", (pytest.mark.oar,), "oar_stack", _oar, refused=oar_refused()) for v in OAR_VERSIONS),
    *HTCONDOR_CASES,
    *ARC_CASES,
]


@pytest.fixture(scope="session")
def slurm_stacks() -> Iterator[SlurmStacks]:
    stacks = SlurmStacks()
    yield stacks
    stacks.stop()


@pytest.fixture(scope="session")
def sge_stack() -> Iterator[GridEngineStack]:
    stack = start_sge()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def oar_stack() -> Iterator[OARStack]:
    stack = start_oar()
    yield stack
    stack.stop()


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
