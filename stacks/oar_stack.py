"""One real OAR 2.5.9 cluster (server, PostgreSQL and one node in one container) reached as SSH + OAR, for the tests.

``start()`` builds (once) and starts ``stacks/oar`` on Debian bookworm (the suite that packages OAR 2.5.9), waits
until the node's resources are Alive and sshd greets, and returns an :class:`OARStack`: where to connect, a
known_hosts pinning the stack's host key, and handles for tests (``exec``, ``check``, ``logs``).

Like the Grid Engine stack it runs on the engine's default bridge network; only sshd is published, on 127.0.0.1.
Nothing here skips: when the engine, the image or the stack cannot be had, the caller gets the error.
"""

from __future__ import annotations

from stacks.batch_stack import BatchStack, launch

__all__ = ["OAR_VERSIONS", "OARStack", "start"]

#: OAR version -> the Debian suite that packages it.
OAR_VERSIONS = {"2.5.9": "bookworm"}


class OARStack(BatchStack):
    """A running OAR stack. ``stop`` is idempotent."""

    LOGS = "/var/log/oar.log /var/log/postgresql/*.log /var/log/sshd.log"


def start(version: str = "2.5.9", *, cores: int = 8, timeout: float = 180.0) -> OARStack:
    """Start one stack (see the module docstring) whose node has ``cores`` resources; the caller must
    :meth:`OARStack.stop` it."""
    return launch(OARStack, system="OAR", stack="oar", suite=OAR_VERSIONS[version], version=version,
                  hostname="oarhost", env={"OAR_CORES": str(cores)}, package="oar-server", timeout=timeout)
