"""MockTransport: a Transport whose commands are answered by a function, for a WMS developer's own unit tests.

::

    def handler(argv: tuple[str, ...], stdin: bytes | None) -> CommandResult:
        if argv[0] == "sbatch":
            return CommandResult(argv, 0, b"4242\\n", b"", 0.0)
        return CommandResult(argv, 127, b"", b"sh: not found", 0.0)

    backend = BatchBackend(MockTransport(handler), SlurmScheduler(), "/home/alice/jobs")

It answers exactly what its handler says, so it proves only that *your* code handles those answers. It is **never a
contract test**: intercede's own suites run every backend against real daemons, and nothing here says what a real
scheduler would print (record real output for that, as ``tests/data/`` does).

* ``run`` calls ``handler(argv, stdin)`` (a plain function or a coroutine function) and returns its
  :class:`CommandResult`; whatever the handler raises propagates (raise :class:`~intercede.errors.ConnectivityError`,
  :class:`~intercede.errors.TimeoutError`, ... to test your handling of them). Every call is recorded in ``calls``.
* ``put``/``get`` copy to and from ``files``, an in-memory ``{remote path: bytes}``; ``get`` of a missing path raises
  :class:`~intercede.errors.TransferError`, as the real transports do.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from intercede.backends.transports.base import CommandResult, Sink, Transport
from intercede.errors import TransferError

__all__ = ["Handler", "MockTransport"]

#: ``(argv, stdin) -> CommandResult``, or a coroutine function returning one.
Handler = Callable[[tuple[str, ...], bytes | None], CommandResult | Awaitable[CommandResult]]


class MockTransport(Transport):
    """Answer every command with ``handler(argv, stdin)``; keep files in memory (see the module docstring)."""

    def __init__(self, handler: Handler, *, name: str = "mock://") -> None:
        self.handler = handler
        self.name = name
        self.calls: list[tuple[tuple[str, ...], bytes | None]] = []
        self.files: dict[str, bytes] = {}
        self.closed = False

    async def run(
        self, argv: Sequence[str], *, stdin: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        argv = tuple(argv)
        if not argv:
            raise ValueError("argv must not be empty")
        self.calls.append((argv, stdin))
        result = self.handler(argv, stdin)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, CommandResult):
            raise TypeError(f"the MockTransport handler returned {type(result).__name__}, not a CommandResult")
        return result

    async def stream(self, argv: Sequence[str], sink: Sink, *, timeout: float | None = None) -> CommandResult:
        """Like :meth:`run`; the handler's stdout goes to ``sink`` in one chunk and the result keeps none of it."""
        result = await self.run(argv, timeout=timeout)
        if result.stdout:
            sink(result.stdout)
        return CommandResult(result.argv, result.exit_status, b"", result.stderr, result.duration)

    async def put(self, local: Path, remote: str, *, timeout: float | None = None) -> None:
        try:
            self.files[remote] = await asyncio.to_thread(Path(local).read_bytes)
        except OSError as exc:
            raise TransferError(f"cannot put {local}: {exc.strerror or exc}") from exc

    async def get(self, remote: str, local: Path, *, timeout: float | None = None) -> None:
        if remote not in self.files:
            raise TransferError(f"cannot get {self.name}{remote}: no such file")
        try:
            await asyncio.to_thread(Path(local).write_bytes, self.files[remote])
        except OSError as exc:
            raise TransferError(f"cannot write {local}: {exc.strerror or exc}") from exc

    async def aclose(self) -> None:
        self.closed = True
