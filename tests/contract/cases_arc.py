"""The ARC cases of the contract suite, and the session-scoped A-REX stacks they run against.

Every case is marked ``arc`` and ``remote`` and its id names the ARC release (``arc-6.17``, ``arc-7.0``, ``arc-7.2``,
with the fork LRMS) or the batch system behind A-REX (``arc-slurm``, ``arc-htcondor``: ARC 7.0 submitting into a
real Slurm / HTCondor in its container). Authentication differs on purpose: 6.17, 7.2 and arc-htcondor use the X.509
proxy as the TLS client certificate, 7.0 and arc-slurm a bearer token from the stack's own issuer.
``tests/contract/conftest.py`` adds :data:`CASES` and imports the fixtures.

The stacks are started once per session; a stack that cannot be started fails its tests (never a skip).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from intercede.backends.arc import ARCBackend
from intercede.backends.capabilities import JobBackend
from intercede.model import JobSpec, Resources
from stacks import harness
from stacks.arc_stack import ARCStack, start
from tests.contract.cases import Case

__all__ = ["CASES", "LRMS_RELEASE", "arc_6_17", "arc_7_0", "arc_7_2", "arc_htcondor", "arc_setup", "arc_slurm"]

#: release -> how its case authenticates
AUTH = {"6.17": "proxy", "7.0": "token", "7.2": "proxy"}
#: LRMS behind A-REX -> (the ARC release it runs under, how its case authenticates)
LRMS_RELEASE = {"slurm": ("7.0", "token"), "condor": ("7.0", "proxy")}

_SHARED: dict[tuple[str, str], tuple[ARCStack, int]] = {}
_LOCK = threading.Lock()


def arc_setup(release: str, lrms: str = "fork") -> Iterator[ARCStack]:
    """Yield the running A-REX of ``release`` submitting into ``lrms`` (started on first use, stopped when its last
    user ends): the contract suite and tests/arc share one stack per release and LRMS."""
    key = (release, lrms)
    with _LOCK:
        if key in _SHARED:
            stack, users = _SHARED[key]
            _SHARED[key] = (stack, users + 1)
        else:
            harness.engine()
            stack = start(release, lrms=lrms, timeout=120.0 if lrms == "fork" else 240.0)
            _SHARED[key] = (stack, 1)
    try:
        yield stack
    finally:
        with _LOCK:
            stack, users = _SHARED.pop(key)
            if users > 1:
                _SHARED[key] = (stack, users - 1)
        if users == 1:
            stack.stop()


@pytest.fixture(scope="session")
def arc_6_17() -> Iterator[ARCStack]:
    yield from arc_setup("6.17")


@pytest.fixture(scope="session")
def arc_7_0() -> Iterator[ARCStack]:
    yield from arc_setup("7.0")


@pytest.fixture(scope="session")
def arc_7_2() -> Iterator[ARCStack]:
    yield from arc_setup("7.2")


@pytest.fixture(scope="session")
def arc_slurm() -> Iterator[ARCStack]:
    yield from arc_setup(LRMS_RELEASE["slurm"][0], "slurm")


@pytest.fixture(scope="session")
def arc_htcondor() -> Iterator[ARCStack]:
    yield from arc_setup(LRMS_RELEASE["condor"][0], "condor")


def backend_for(stack: ARCStack, auth: str) -> ARCBackend:
    """An ARCBackend on ``stack`` authenticating with ``auth`` (``proxy`` or ``token``), CA verified."""
    if auth == "token":
        token = stack.path("contract-token")
        if not token.exists():  # one token per stack (1 h), read by the backend at every request
            stack.token("contract-token")
        return ARCBackend(stack.url, name=_name(stack), ca_file=stack.ca_file, token_file=token)
    return ARCBackend(stack.url, name=_name(stack), ca_file=stack.ca_file, proxy_file=stack.proxy_file)


def _name(stack: ARCStack) -> str:
    return f"arc-{stack.release}" if stack.lrms == "fork" else f"arc-{stack.lrms}-{stack.release}"


def _build(auth: str) -> Callable[[ARCStack], JobBackend]:
    def build(stack: ARCStack) -> JobBackend:
        return backend_for(stack, auth)
    return build


def arc_refused() -> tuple[JobSpec, str]:
    """A-REX itself refuses a queue it does not have ("Requested queue ... is not allowed")."""
    return JobSpec(executable="true", resources=Resources(queue="no-such-queue")), "queue"


CASES: list[Case] = [
    *(Case(f"arc-{release}", (pytest.mark.arc, pytest.mark.remote), f"arc_{release.replace('.', '_')}",
           _build(auth), refused=arc_refused()) for release, auth in AUTH.items()),
    Case("arc-slurm", (pytest.mark.arc, pytest.mark.remote, pytest.mark.slurm), "arc_slurm",
         _build(LRMS_RELEASE["slurm"][1]), refused=arc_refused()),
    Case("arc-htcondor", (pytest.mark.arc, pytest.mark.remote, pytest.mark.htcondor), "arc_htcondor",
         _build(LRMS_RELEASE["condor"][1]), refused=arc_refused()),
]
