"""The Transport seam: how intercede reaches a resource. Only argv crosses it.

A transport runs a command given as a list of strings (never a shell string), and copies files both ways.
Implementations translate their library's errors into the intercede tree at this edge and nowhere else:

* ``run`` returns a :class:`CommandResult` whatever the exit status (the caller reads it); it raises
  :class:`~intercede.errors.CommandNotFoundError` when ``argv[0]`` does not exist,
  :class:`~intercede.errors.TimeoutError` past ``timeout`` (the process is killed),
  :class:`~intercede.errors.ConnectivityError` / :class:`~intercede.errors.AuthenticationError` when the resource
  cannot be reached.
* ``stream`` runs a command like ``run`` but hands its stdout to a callback chunk by chunk, never keeping it: how
  outputs of any size are copied (a file read by a command the caller chose, e.g. one that refuses symlinks).
* ``put`` / ``get`` raise :class:`~intercede.errors.TransferError` for a missing source or unwritable destination.

Every command must fit the resource's limits on argument length: over SSH the whole quoted command is *one* argument
of the remote shell, and Linux refuses an argument over 128 KiB (``MAX_ARG_STRLEN``: "Argument list too long").
Callers that pass lists of names or ids split them with :func:`chunks_within` so that no command carries more than
:data:`ARGV_BUDGET` bytes of them.

Transports are async context managers; constructing one does no I/O; ``aclose`` is idempotent. Third-party transports
register under the ``intercede.transports`` entry-point group (see :mod:`intercede.backends.registry`).
"""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from intercede.errors import CommandError

__all__ = ["ARGV_BUDGET", "CommandResult", "Sink", "Transport", "chunks_within", "quoted_size"]

T = TypeVar("T")

#: Bytes of variable arguments (names, ids) one command may carry, quoted: half of Linux's 128 KiB limit on a single
#: argument, leaving room for the command's fixed part (a script, options) and for quoting.
ARGV_BUDGET = 64 * 1024

#: Receives a command's stdout chunk by chunk (see :meth:`Transport.stream`); raising stops the command.
Sink = Callable[[bytes], None]


def quoted_size(*args: str) -> int:
    """Bytes ``args`` take on a command line once quoted for a POSIX shell (as the SSH edge quotes them)."""
    return sum(len(shlex.quote(a).encode("utf-8", "surrogatepass")) + 1 for a in args)


def chunks_within(items: Iterable[T], cost: Callable[[T], int], *, budget: int = ARGV_BUDGET,
                  max_items: int | None = None) -> Iterator[list[T]]:
    """Split ``items`` (in order) into non-empty runs whose summed ``cost`` stays within ``budget`` and whose length
    stays within ``max_items``. An item that alone costs more than ``budget`` gets a run of its own."""
    run: list[T] = []
    used = 0
    for item in items:
        size = cost(item)
        if run and (used + size > budget or (max_items is not None and len(run) >= max_items)):
            yield run
            run, used = [], 0
        run.append(item)
        used += size
    if run:
        yield run


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a finished command left: exit status, raw output bytes, wall-clock seconds."""

    argv: tuple[str, ...]
    exit_status: int
    stdout: bytes
    stderr: bytes
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    @property
    def text(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")

    def check(self) -> CommandResult:
        """Return self if the command succeeded, else raise :class:`CommandError` with its stderr."""
        if not self.ok:
            err = self.stderr.decode("utf-8", "replace").strip()
            raise CommandError(
                f"{self.argv[0]} exited with status {self.exit_status}: {err[-2000:]}",
                argv=list(self.argv), exit_status=self.exit_status, stderr=err,
            )
        return self


class Transport(ABC):
    """Reach a resource: run argv, put and get files."""

    #: A short human-readable name of the endpoint (no secrets), e.g. ``ssh://user@host:22``.
    name: str

    @abstractmethod
    async def run(
        self, argv: Sequence[str], *, stdin: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        """Run ``argv`` to completion and return its result, whatever the exit status."""

    @abstractmethod
    async def stream(self, argv: Sequence[str], sink: Sink, *, timeout: float | None = None) -> CommandResult:
        """Run ``argv`` (stdin empty) and pass each chunk of its stdout to ``sink`` as it arrives; nothing of stdout is
        kept (the result's ``stdout`` is empty; stderr is kept, its last 64 KiB). If ``sink`` raises, the process is
        killed and the exception propagates. Raises like :meth:`run` otherwise; ``timeout`` bounds the whole command."""

    @abstractmethod
    async def put(self, local: Path, remote: str, *, timeout: float | None = None) -> None:
        """Copy the local file ``local`` to the path ``remote`` on the resource (parents must exist)."""

    @abstractmethod
    async def get(self, remote: str, local: Path, *, timeout: float | None = None) -> None:
        """Copy the file ``remote`` on the resource to the local path ``local`` (parents must exist)."""

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Self:
        """Build from configuration options (a TOML table); the default passes them as keyword arguments."""
        return cls(**options)

    async def aclose(self) -> None:
        """Release connections. Idempotent."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
