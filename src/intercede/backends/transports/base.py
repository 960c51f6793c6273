"""The Transport seam: how intercede reaches a resource. Only argv crosses it.

A transport runs a command given as a list of strings (never a shell string), and copies files both ways.
Implementations translate their library's errors into the intercede tree at this edge and nowhere else:

* ``run`` returns a :class:`CommandResult` whatever the exit status (the caller reads it); it raises
  :class:`~intercede.errors.CommandNotFoundError` when ``argv[0]`` does not exist,
  :class:`~intercede.errors.TimeoutError` past ``timeout`` (the process is killed),
  :class:`~intercede.errors.ConnectivityError` / :class:`~intercede.errors.AuthenticationError` when the resource
  cannot be reached.
* ``put`` / ``get`` raise :class:`~intercede.errors.TransferError` for a missing source or unwritable destination.

Transports are async context managers; constructing one does no I/O; ``aclose`` is idempotent. Third-party transports
register under the ``intercede.transports`` entry-point group (see :mod:`intercede.backends.registry`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from intercede.errors import CommandError

__all__ = ["CommandResult", "Transport"]


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
