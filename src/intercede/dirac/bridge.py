"""A synchronous caller's way into intercede's async backends: one event loop on a private daemon thread.

DIRAC's agents call a ComputingElement synchronously (and from several threads); intercede's backends are async and
keep connections (an SSH connection, HTCondor worker processes) bound to the loop they were made on. So a
:class:`LoopThread` owns one loop for the life of the CE object, the backend is built and used only on it, and
:meth:`LoopThread.run` blocks the calling thread until a coroutine finished there (or ``timeout`` passed:
:class:`~intercede.errors.TimeoutError`). :meth:`LoopThread.close` runs a last coroutine (the backend's close) and
stops the thread; idempotent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from intercede.errors import ConnectivityError, TimeoutError

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """One event loop on a daemon thread (see the module docstring)."""

    def __init__(self, name: str = "intercede-dirac") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()
        self._closed = False

    def run(self, make: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Await ``make()`` on the loop; block until it finished. Its exception is raised here."""
        if self._closed:
            raise ConnectivityError("the intercede CE bridge is closed")

        async def call() -> T:
            return await make()

        future = asyncio.run_coroutine_threadsafe(call(), self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"an intercede call did not finish within {timeout} s") from None

    def close(self, last: Callable[[], Awaitable[object]] | None = None, timeout: float = 30.0) -> None:
        if self._closed:
            return
        if last is not None:
            try:
                self.run(last, timeout)
            finally:
                self._closed = True
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
