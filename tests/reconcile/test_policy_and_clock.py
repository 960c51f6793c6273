"""Backoff, error classification and the injectable clock."""

from __future__ import annotations

import pytest

from intercede.errors import (
    AuthenticationError,
    CommandError,
    ConnectivityError,
    InvalidSpecError,
    OutputBoundError,
    TimeoutError,
    TransferError,
    UnsupportedError,
)
from intercede.reconcile import Clock, FakeClock, ManifestMismatchError, RetryPolicy, SystemClock

pytestmark = pytest.mark.actors


def test_backoff_doubles_from_base_up_to_the_cap() -> None:
    policy = RetryPolicy(base=1.0, factor=2.0, cap=300.0)
    assert [policy.delay(n) for n in range(1, 11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert policy.delay(10_000) == 300.0  # no overflow


def test_jitter_is_bounded_and_deterministic_per_seed_key_and_attempt() -> None:
    policy = RetryPolicy(jitter=0.5, seed=7)
    delays = [policy.delay(4, f"k{i}") for i in range(50)]
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert len(set(delays)) > 40  # keys failing together do not retry together
    assert delays == [RetryPolicy(jitter=0.5, seed=7).delay(4, f"k{i}") for i in range(50)]
    assert delays != [RetryPolicy(jitter=0.5, seed=8).delay(4, f"k{i}") for i in range(50)]


@pytest.mark.parametrize("error", [ConnectivityError("down"), TimeoutError("slow"), ConnectionResetError(),
                                   TransferError("cut"), ManifestMismatchError("short")])
def test_errors_where_retrying_may_help_are_temporary(error: BaseException) -> None:
    assert RetryPolicy.is_temporary(error)


@pytest.mark.parametrize("error", [InvalidSpecError("bad"), AuthenticationError("no"), CommandError("refused"),
                                   UnsupportedError("no cancel"), OutputBoundError("too big"), KeyError("bug")])
def test_refusals_and_bugs_are_permanent(error: BaseException) -> None:
    assert not RetryPolicy.is_temporary(error)


def test_a_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="factor"):
        RetryPolicy(factor=0.5)
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=2)


async def test_the_fake_clock_moves_only_when_told_and_never_backwards() -> None:
    clock = FakeClock(start=100.0)
    assert isinstance(clock, Clock) and isinstance(SystemClock(), Clock)
    await clock.sleep(5)
    clock.advance(1)
    assert clock.now() == 106.0
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


async def test_the_system_clock_is_epoch_seconds() -> None:
    import time

    assert abs(SystemClock().now() - time.time()) < 1
    await SystemClock().sleep(0)
