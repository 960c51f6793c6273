"""Where the reconciler gets its time: injectable, so tests drive backoff and resend deadlines without waiting."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """``now()`` is wall-clock epoch seconds (it is journaled, so it must survive a restart, unlike a monotonic
    clock); ``sleep`` waits that many seconds."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock that moves only when told: ``sleep`` and ``advance`` move it forward, never backwards."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock does not go backwards (asked {seconds})")
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(max(seconds, 0.0))
        # Still yield, so a sleeping loop lets other tasks run as it would with the real clock.
        await asyncio.sleep(0)
