"""The HTCondor cases of the contract suite, and the session-scoped stacks they run against.

Every case is marked ``htcondor`` and its id names the HTCondor release (``23.9`` or ``25.x``); the CE cases are also
marked ``remote``. ``tests/contract/conftest.py`` adds :data:`CASES` to its own and imports the fixtures named by
the cases' ``stack`` (:data:`FIXTURES`), e.g.::

    from tests.contract.cases_htcondor import CASES as HTCONDOR_CASES
    from tests.contract.cases_htcondor import condor_23_9, condor_25, condor_ce_23_9, condor_ce_25  # noqa: F401

The pools are started once per session; a pool that cannot be started fails its tests (never a skip).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from intercede.backends.batch import BatchBackend
from intercede.backends.capabilities import JobBackend
from intercede.backends.htcondor import HTCondorBackend, HTCondorCEBackend
from intercede.backends.schedulers.htcondor import HTCondorScheduler
from intercede.backends.transports.ssh import SSHTransport
from stacks import harness
from stacks.condor_stack import CondorStack, start
from tests.contract.cases import Case

__all__ = ["CASES", "FIXTURES", "CondorSetup", "condor_23_9", "condor_25", "condor_ce_23_9", "condor_ce_25"]

#: Release -> how it shows in test ids (``-k 25.`` selects the 25.x runs).
RELEASES = {"23.9": "23.9", "25": "25.x"}


@dataclass
class CondorSetup:
    """A running stack plus the client-side files every case builds its backend from."""

    stack: CondorStack
    token: Path
    staging: Path

    def evict(self, native_id: str) -> None:
        """Make the job leave the schedd's queue now (as a site's cleanup would), then wait until it has."""
        tools = "CONDOR_CONFIG=/etc/condor-ce/condor_config " if self.stack.kind == "condor_ce" else ""
        self.stack.exec(f"{tools}condor_qedit {native_id} IntercedePurged true")
        harness.wait_for(lambda: not self.stack.exec(f"{tools}condor_q {native_id} -af JobStatus").stdout.strip(),
                         f"job {native_id} left the queue", 60)


async def _left_queue(setup: CondorSetup, job_id: str) -> None:
    """The contract's ``left_queue``: a completed spooled job stays queued until purged (leave_in_queue), so make it
    leave as a site's cleanup would; a CLI job leaves by itself. Either way, return once it has."""
    await asyncio.to_thread(setup.evict, job_id.partition("@")[0])


#: Running setups shared by every fixture that asks for the same (release, kind), with how many hold each: the
#: contract suite and tests/htcondor then use one pool per release and kind, not one each.
_SHARED: dict[tuple[str, str], tuple[CondorSetup, int]] = {}
_LOCK = threading.Lock()


def _setup(version: str, kind: str) -> Iterator[CondorSetup]:
    """Yield the running stack of ``version`` and ``kind`` (started on first use, stopped when its last user ends)."""
    key = (version, kind)
    with _LOCK:
        if key in _SHARED:
            setup, users = _SHARED[key]
            _SHARED[key] = (setup, users + 1)
        else:
            harness.engine()
            stack = start(version, kind=kind)
            staging = Path(tempfile.mkdtemp(prefix="intercede-condor-staging-"))
            setup = CondorSetup(stack, stack.token(), staging)
            _SHARED[key] = (setup, 1)
    try:
        yield setup
    finally:
        with _LOCK:
            setup, users = _SHARED.pop(key)
            if users > 1:
                _SHARED[key] = (setup, users - 1)
        if users == 1:
            setup.stack.stop()
            shutil.rmtree(setup.staging, ignore_errors=True)
            shutil.rmtree(setup.stack.keys.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def condor_23_9() -> Iterator[CondorSetup]:
    yield from _setup("23.9", "condor")


@pytest.fixture(scope="session")
def condor_25() -> Iterator[CondorSetup]:
    yield from _setup("25", "condor")


@pytest.fixture(scope="session")
def condor_ce_23_9() -> Iterator[CondorSetup]:
    yield from _setup("23.9", "condor_ce")


@pytest.fixture(scope="session")
def condor_ce_25() -> Iterator[CondorSetup]:
    yield from _setup("25", "condor_ce")


def _schedd(setup: CondorSetup) -> JobBackend:
    return HTCondorBackend(setup.stack.pool, token_file=setup.token, staging=setup.staging, name="condor-schedd")


def _ce(setup: CondorSetup) -> JobBackend:
    """The CE path with an IDTOKEN minted by the CE's own key (SciTokens and proxies: tests/htcondor)."""
    return HTCondorCEBackend(setup.stack.host, token_file=setup.token, staging=setup.staging, name="condor-ce")


def _ssh(setup: CondorSetup) -> JobBackend:
    return BatchBackend(SSHTransport(setup.stack.endpoint()), HTCondorScheduler(), "/home/tester/intercede",
                        name="htcondor+ssh")


def _cases() -> list[Case]:
    out: list[Case] = []
    kinds: list[tuple[str, str, Callable[[Any], JobBackend], tuple[pytest.MarkDecorator, ...]]] = [
        ("HTCondor-schedd", "condor", _schedd, (pytest.mark.htcondor,)),
        ("HTCondor-CE", "condor_ce", _ce, (pytest.mark.htcondor, pytest.mark.remote)),
        ("HTCondor-SSH", "condor", _ssh, (pytest.mark.htcondor,)),
    ]
    for label, kind, build, marks in kinds:
        for release, shown in RELEASES.items():
            fixture = f"{kind}_{release.replace('.', '_')}"
            out.append(Case(f"{label}-{shown}", marks, fixture, build, left_queue=_left_queue))
    return out


CASES: list[Case] = _cases()
#: The fixtures the cases need (conftest.py must import these names).
FIXTURES = sorted({c.stack for c in CASES if c.stack})
