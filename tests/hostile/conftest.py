"""Fixtures of the hostile suite: the contract suite's stacks and backends, and the fault suite's local Ray.

The session-scoped stacks (``sshd_stack``, ``slurm_stacks``, ``local_root``) and ``ray_local`` are the existing
fixtures, imported rather than redefined, so the hostile tests drive exactly the resources the contract suite does.
``hostile_backend`` builds a fresh backend of one contract case: direct over Local and SSH, and Slurm 24.11 over SSH.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from intercede.backends.batch import BatchBackend
from tests.contract.cases import Case
from tests.contract.conftest import CASES, local_root, slurm_stacks, sshd_stack
from tests.faults.conftest import _ray_shutdown_at_session_end, ray_local

__all__ = ["_ray_shutdown_at_session_end", "local_root", "ray_local", "slurm_stacks", "sshd_stack"]

#: The contract cases item 2 of issue 14 names: direct (Local, SSH) and Slurm 24.11 reached over SSH.
HOSTILE_CASES = [c for c in CASES if c.id in ("direct-Local", "direct-SSH", "slurm-24.11")]


@pytest.fixture(params=[pytest.param(c, id=c.id, marks=c.marks) for c in HOSTILE_CASES])
async def hostile_backend(request: pytest.FixtureRequest) -> AsyncIterator[BatchBackend]:
    """A fresh backend of one case (a test may narrow the cases with ``indirect`` parametrisation)."""
    case: Case = request.param
    stack = request.getfixturevalue(case.stack) if case.stack else None
    async with case.build(stack) as backend:
        assert isinstance(backend, BatchBackend)
        yield backend
