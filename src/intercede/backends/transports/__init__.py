"""Transports: how intercede reaches a resource (local processes, SSH)."""

from intercede.backends.transports.base import CommandResult, Transport

__all__ = ["CommandResult", "Transport"]
