"""Fixtures of the HTCondor tests: the real pools (minicondor and the CE stand-in) of each release, started once per
session, and backends built on them. Ids name the release (``23.9``, ``25.x``); nothing skips when a stack cannot be
had (the fixture errors)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from intercede.backends.htcondor import HTCondorBackend, HTCondorCEBackend
from tests.contract.cases_htcondor import RELEASES, CondorSetup, _setup

#: The CE stand-in is reached by address, so HTCondor cannot check its certificate's host name (a real CE is reached
#: by the name its certificate carries).
CE_CONFIG = {"SSL_SKIP_HOST_CHECK": "true"}


@pytest.fixture(scope="session", params=list(RELEASES), ids=list(RELEASES.values()))
def pool(request: pytest.FixtureRequest) -> Iterator[CondorSetup]:
    """A minicondor pool of each release."""
    yield from _setup(request.param, "condor")


@pytest.fixture(scope="session", params=[pytest.param(r, marks=pytest.mark.remote) for r in RELEASES],
                ids=list(RELEASES.values()))
def ce(request: pytest.FixtureRequest) -> Iterator[CondorSetup]:
    """The CE stand-in of each release."""
    yield from _setup(request.param, "condor_ce")


def schedd_backend(setup: CondorSetup, **options: Any) -> HTCondorBackend:
    options.setdefault("token_file", setup.token)
    return HTCondorBackend(setup.stack.pool, staging=setup.staging, **options)


def ce_backend(setup: CondorSetup, **options: Any) -> HTCondorCEBackend:
    options.setdefault("ca_file", setup.stack.ca_file())
    options.setdefault("config", CE_CONFIG)
    if "scitoken_file" not in options:
        options.setdefault("token_file", setup.token)
    return HTCondorCEBackend(setup.stack.host, staging=setup.staging, **options)


def queued(setup: CondorSetup, job_id: str) -> bool:
    """Whether the job is in the schedd's queue (asked inside the stack, not through intercede)."""
    tools = "CONDOR_CONFIG=/etc/condor-ce/condor_config " if setup.stack.kind == "condor_ce" else ""
    return bool(setup.stack.exec(f"{tools}condor_q {job_id} -af JobStatus").stdout.strip())
