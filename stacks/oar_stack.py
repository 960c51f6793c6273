"""One real OAR 2.5.9 cluster (server, PostgreSQL and one node in one container) reached as SSH + OAR, for the tests.

``start()`` builds (once) and starts ``stacks/oar`` on Debian bookworm (the suite that packages OAR 2.5.9), waits
until the node's resources are Alive and sshd greets, and returns an :class:`OARStack`: where to connect, a
known_hosts pinning the stack's host key, and handles for tests (``exec``, ``check``, ``logs``).

Like the Grid Engine stack it runs on the engine's default bridge network; only sshd is published, on 127.0.0.1.
Nothing here skips: when the engine, the image or the stack cannot be had, the caller gets the error.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from testcontainers.core.container import DockerContainer

from stacks import harness
from stacks.batch_stack import BatchStack
from stacks.keys import make_keys

__all__ = ["OAR_VERSIONS", "OARStack", "start"]

#: OAR version -> the Debian suite that packages it.
OAR_VERSIONS = {"2.5.9": "bookworm"}


class OARStack(BatchStack):
    """A running OAR stack. ``stop`` is idempotent."""

    LOGS = "/var/log/oar.log /var/log/postgresql/*.log /var/log/sshd.log"


def start(version: str = "2.5.9", *, cores: int = 8, timeout: float = 180.0) -> OARStack:
    """Start one stack (see the module docstring) whose node has ``cores`` resources; the caller must
    :meth:`OARStack.stop` it."""
    suite = OAR_VERSIONS[version]
    image = harness.image("oar", suite)
    keys = make_keys(Path(tempfile.mkdtemp(prefix="intercede-oar-keys-")))
    container = (
        DockerContainer(image, hostname="oarhost", init=True)
        .with_env("SSHD_PORT", "22")
        .with_env("OAR_CORES", str(cores))
        .with_volume_mapping(str(keys.folder), "/keys", "ro")
    )
    cast(dict[str, Any], container.ports)["22/tcp"] = ("127.0.0.1",)  # see stacks/slurm_stack.py
    t0 = time.monotonic()
    container.start()
    stack = OARStack(container, keys, "127.0.0.1")
    try:
        stack.port = int(container.get_exposed_port(22))
        harness.wait_for(lambda: "oar started" in _logs(container), f"OAR {version}: start.sh", timeout)
        harness.wait_for(lambda: harness.ssh_greets(stack.host, stack.port), f"OAR {version}: sshd", timeout)
        stack.started_in = time.monotonic() - t0
        stack.version = stack.check("dpkg-query -W -f '${Version}' oar-server").split("-")[0]
    except BaseException:
        with contextlib.suppress(Exception):
            print(f"[stacks] OAR {version} did not start; its logs:\n{_logs(container)}\n{stack.logs()}",
                  file=sys.stderr)
        stack.stop()
        raise
    if stack.version != version:
        stack.stop()
        raise RuntimeError(f"{suite} packages OAR {stack.version}, not {version}: update OAR_VERSIONS")
    return stack


def _logs(container: DockerContainer) -> str:
    out, err = container.get_logs()
    return (out + err).decode("utf-8", "replace")
