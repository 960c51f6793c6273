"""One real Grid Engine cell (Son of Grid Engine 8.1.9, one host) reached as SSH + Grid Engine, for the tests.

``start()`` builds (once) and starts ``stacks/sge`` on Debian bookworm (the last suite that packages Grid Engine),
waits until the execution host reports and sshd greets, and returns a :class:`GridEngineStack`: where to connect, a
known_hosts pinning the stack's host key, and handles for tests (``exec``, ``check``, ``stop_master``, ...).

Like the Slurm stack it runs on the engine's default bridge network; only sshd is published, on 127.0.0.1. Nothing
here skips: when the engine, the image or the stack cannot be had, the caller gets the error.
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

__all__ = ["SGE_VERSIONS", "GridEngineStack", "start"]

#: Grid Engine version -> the Debian suite that packages it (trixie dropped Grid Engine).
SGE_VERSIONS = {"8.1.9": "bookworm"}


class GridEngineStack(BatchStack):
    """A running Grid Engine stack. ``stop`` is idempotent."""

    LOGS = "/var/spool/gridengine/qmaster/messages /var/spool/gridengine/execd/*/messages /var/log/sshd.log"


def start(version: str = "8.1.9", *, slots: int = 8, timeout: float = 120.0) -> GridEngineStack:
    """Start one stack (see the module docstring); the caller must :meth:`GridEngineStack.stop` it."""
    suite = SGE_VERSIONS[version]
    image = harness.image("sge", suite)
    keys = make_keys(Path(tempfile.mkdtemp(prefix="intercede-sge-keys-")))
    container = (
        DockerContainer(image, hostname="sgehost", init=True)
        .with_env("SSHD_PORT", "22")
        .with_env("SGE_SLOTS", str(slots))
        .with_volume_mapping(str(keys.folder), "/keys", "ro")
    )
    cast(dict[str, Any], container.ports)["22/tcp"] = ("127.0.0.1",)  # see stacks/slurm_stack.py
    t0 = time.monotonic()
    container.start()
    stack = GridEngineStack(container, keys, "127.0.0.1")
    try:
        stack.port = int(container.get_exposed_port(22))
        harness.wait_for(lambda: "sge started" in _logs(container), f"Grid Engine {version}: start.sh", timeout)
        harness.wait_for(lambda: harness.ssh_greets(stack.host, stack.port), f"Grid Engine {version}: sshd", timeout)
        stack.started_in = time.monotonic() - t0
        stack.version = stack.check("dpkg-query -W -f '${Version}' gridengine-master").split("+")[0]
    except BaseException:
        with contextlib.suppress(Exception):
            print(f"[stacks] Grid Engine {version} did not start; its logs:\n{_logs(container)}\n{stack.logs()}",
                  file=sys.stderr)
        stack.stop()
        raise
    if stack.version != version:
        stack.stop()
        raise RuntimeError(f"{suite} packages Grid Engine {stack.version}, not {version}: update SGE_VERSIONS")
    return stack


def _logs(container: DockerContainer) -> str:
    out, err = container.get_logs()
    return (out + err).decode("utf-8", "replace")
