"""One real Grid Engine cell (Son of Grid Engine 8.1.9, one host) reached as SSH + Grid Engine, for the tests.

``start()`` builds (once) and starts ``stacks/sge`` on Debian bookworm (the last suite that packages Grid Engine),
waits until the execution host reports and sshd greets, and returns a :class:`GridEngineStack`: where to connect, a
known_hosts pinning the stack's host key, and handles for tests (``exec``, ``check``, ``stop_master``, ...).

Like the Slurm stack it runs on the engine's default bridge network; only sshd is published, on 127.0.0.1. Nothing
here skips: when the engine, the image or the stack cannot be had, the caller gets the error.
"""

from __future__ import annotations

from stacks.batch_stack import BatchStack, launch

__all__ = ["SGE_VERSIONS", "GridEngineStack", "start"]

#: Grid Engine version -> the Debian suite that packages it (trixie dropped Grid Engine).
SGE_VERSIONS = {"8.1.9": "bookworm"}


class GridEngineStack(BatchStack):
    """A running Grid Engine stack. ``stop`` is idempotent."""

    LOGS = "/var/spool/gridengine/qmaster/messages /var/spool/gridengine/execd/*/messages /var/log/sshd.log"


def start(version: str = "8.1.9", *, slots: int = 8, timeout: float = 120.0) -> GridEngineStack:
    """Start one stack (see the module docstring); the caller must :meth:`GridEngineStack.stop` it."""
    return launch(GridEngineStack, system="Grid Engine", stack="sge", suite=SGE_VERSIONS[version], version=version,
                  hostname="sgehost", env={"SGE_SLOTS": str(slots)}, package="gridengine-master", timeout=timeout)
