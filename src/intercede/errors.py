"""The one exception tree of intercede.

Every error intercede raises derives from :class:`IntercedeError`. A bulk operation raises only when the *whole*
operation failed; per-job problems come back as outcomes, never as exceptions.

::

    IntercedeError
     ├── InvalidSpecError            the job description or configuration is wrong        (permanent)
     │    ├── UnknownKeyError        a job key that was never declared (or is forgotten)
     │    └── ConfigConflictError    a running service has other settings than those given
     ├── UnsupportedError            the backend lacks the capability asked for           (permanent)
     ├── AuthenticationError         credentials missing, rejected or expired; host key   (permanent)
     │    ├── HostKeyError           unknown or changed SSH host key: never accepted
     │    └── CredentialExpiredError the CE's credential is missing or expired; a fresh one is awaited (temporary)
     ├── ConnectivityError           the resource cannot be reached right now             (temporary)
     ├── TimeoutError                an operation ran past its deadline                   (temporary)
     ├── CommandError                a command ran and failed (exit status, stderr)
     │    └── CommandNotFoundError   the remote program does not exist (exit 127)
     ├── TransferError               a file could not be copied (missing source, bad destination)
     │    └── OutputBoundError       outputs exceed a bound, escape or collide in their destination (permanent)
     └── JournalError                the durable journal cannot be read or written

``temporary`` errors are retried with backoff by the reconciler and never fail a job; ``permanent`` ones surface to the
WMS. :func:`is_temporary` is the one place that decision is made.
"""

from __future__ import annotations

import builtins

__all__ = [
    "AuthenticationError",
    "CommandError",
    "CommandNotFoundError",
    "ConfigConflictError",
    "ConnectivityError",
    "CredentialExpiredError",
    "HostKeyError",
    "IntercedeError",
    "InvalidSpecError",
    "JournalError",
    "OutputBoundError",
    "TimeoutError",
    "TransferError",
    "UnknownKeyError",
    "UnsupportedError",
    "is_temporary",
]


class IntercedeError(Exception):
    """Root of every error intercede raises."""


class InvalidSpecError(IntercedeError, ValueError):
    """A job description or a configuration is invalid; retrying cannot help."""


class UnknownKeyError(InvalidSpecError, KeyError):
    """A request named job keys that were never declared (or were forgotten since); the message names them.
    Also a ``KeyError``, as a lookup by key is."""

    def __str__(self) -> str:
        return Exception.__str__(self)  # KeyError's own would quote the message


class ConfigConflictError(InvalidSpecError):
    """The service already runs with other settings than the ones given; the message names what differs. Nothing
    was changed: replace the running service explicitly, or stop it first."""


class UnsupportedError(IntercedeError):
    """The backend does not have the capability that was asked for."""


class AuthenticationError(IntercedeError):
    """Credentials are missing, rejected or expired."""


class HostKeyError(AuthenticationError):
    """The SSH server's host key is not the pinned one (unknown or changed). It is never accepted."""


class CredentialExpiredError(AuthenticationError):
    """The CE's credential is missing or expired and its provider has no fresh one yet. Temporary: the CE reports an
    authentication problem in its health, its jobs are held back (never failed), and it recovers by itself when a
    fresh credential appears."""


class ConnectivityError(IntercedeError):
    """The resource cannot be reached (refused, unreachable, connection dropped)."""


class TimeoutError(IntercedeError, builtins.TimeoutError):
    """An operation did not finish within its deadline."""


class CommandError(IntercedeError):
    """A command ran to completion and reported failure.

    ``exit_status`` and ``stderr`` are kept so callers can decide; ``argv`` is the command as sent.
    """

    def __init__(self, message: str, *, argv: list[str] | None = None, exit_status: int | None = None,
                 stderr: str = "") -> None:
        super().__init__(message)
        self.argv = argv or []
        self.exit_status = exit_status
        self.stderr = stderr


class CommandNotFoundError(CommandError):
    """The program named by ``argv[0]`` does not exist where the command ran."""


class TransferError(IntercedeError):
    """A file could not be copied: the source is missing or the destination cannot be written."""


class OutputBoundError(TransferError):
    """Outputs exceed their byte or file-count bound, a path would escape its destination, or two outputs collide
    in it. Permanent: fetching the same outputs again would hit the same bound."""


class JournalError(IntercedeError):
    """The durable journal cannot be opened, read or written (read-only or full disk, corruption)."""


def is_temporary(error: BaseException) -> bool:
    """Whether retrying later may succeed (the resource was unreachable or slow), as opposed to a permanent refusal."""
    return isinstance(error, ConnectivityError | TimeoutError | CredentialExpiredError)
