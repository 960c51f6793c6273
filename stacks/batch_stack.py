"""What a batch-system stack reached over SSH is, once started (Grid Engine, OAR): its container, the SSH keys and
pinned host key to reach its sshd, and handles for tests (``exec``, ``check``, ``logs``). Each system's module builds
and starts its own container and names the logs worth showing when it fails (:attr:`BatchStack.LOGS`)."""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

from testcontainers.core.container import DockerContainer

from stacks import harness
from stacks.harness import ExecResult
from stacks.keys import SSHKeys, make_keys

__all__ = ["USERNAME", "BatchStack", "launch"]

USERNAME = "tester"  # uid 2000 in the images
S = TypeVar("S", bound="BatchStack")


@dataclass
class BatchStack:
    """A running stack. ``stop`` is idempotent."""

    LOGS: ClassVar[str] = "/var/log/sshd.log"  # shell words: the files :meth:`logs` shows the tail of

    container: DockerContainer = field(repr=False)
    keys: SSHKeys
    host: str
    port: int = 0
    version: str = ""
    username: str = USERNAME
    started_in: float = 0.0
    _stopped: bool = field(default=False, repr=False)

    @property
    def client_key(self) -> Path:
        return self.keys.client

    @property
    def known_hosts(self) -> Path:
        return self.keys.known_hosts(self.port, self.host, name=f"known_hosts-{self.port}")

    def endpoint(self, **changes: Any) -> Any:
        """An :class:`~intercede.backends.transports.ssh.SSHEndpoint` for the stack's sshd."""
        from intercede.backends.transports.ssh import SSHEndpoint

        fields: dict[str, Any] = {"host": self.host, "port": self.port, "username": self.username,
                                  "client_keys": [self.client_key], "known_hosts": self.known_hosts}
        return SSHEndpoint(**(fields | changes))

    def exec(self, cmd: str | Sequence[str], *, user: str = "root") -> ExecResult:
        """Run ``cmd`` in the container (a string through ``sh -c``); the image sets the system's environment."""
        return harness.run_in(self.container, cmd, user=user)

    def check(self, cmd: str | Sequence[str], *, user: str = "root") -> str:
        return harness.check_in(self.container, cmd, user=user)

    def logs(self) -> str:
        return self.exec(f"tail -n 50 {self.LOGS} 2>&1").stdout

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        harness.remove(self.container, self.keys.folder)


def launch(kind: type[S], *, system: str, stack: str, suite: str, version: str, hostname: str,
           env: Mapping[str, str], package: str, timeout: float) -> S:
    """Build (once) and start ``stacks/<stack>`` on ``suite`` as a ``kind``: the test keys mounted on /keys, sshd
    (port 22) published on 127.0.0.1 only; wait until its start.sh logs ``<stack> started`` and sshd greets; read
    the packaged version of ``package`` (refused unless it is ``version``). On failure the container's logs are
    printed and the stack stopped; the caller must ``stop`` what it gets."""
    image = harness.image(stack, suite)
    keys = make_keys(Path(tempfile.mkdtemp(prefix=f"intercede-{stack}-keys-")))
    container = DockerContainer(image, hostname=hostname, init=True).with_env("SSHD_PORT", "22")
    for name, value in env.items():
        container = container.with_env(name, value)
    container = container.with_volume_mapping(str(keys.folder), "/keys", "ro")
    cast(dict[str, Any], container.ports)["22/tcp"] = ("127.0.0.1",)  # see stacks/slurm_stack.py
    t0 = time.monotonic()
    container.start()
    running = kind(container, keys, "127.0.0.1")
    try:
        running.port = int(container.get_exposed_port(22))
        harness.wait_for(lambda: f"{stack} started" in _logs(container), f"{system} {version}: start.sh", timeout)
        harness.wait_for(lambda: harness.ssh_greets(running.host, running.port), f"{system} {version}: sshd", timeout)
        running.started_in = time.monotonic() - t0
        # Debian versions: 8.1.9+dfsg-11 (Grid Engine), 2.5.9-1+deb12u1 (OAR)
        running.version = running.check(f"dpkg-query -W -f '${{Version}}' {package}").split("+")[0].split("-")[0]
    except BaseException:
        with contextlib.suppress(Exception):
            print(f"[stacks] {system} {version} did not start; its logs:\n{_logs(container)}\n{running.logs()}",
                  file=sys.stderr)
        running.stop()
        raise
    if running.version != version:
        running.stop()
        raise RuntimeError(f"{suite} packages {system} {running.version}, not {version}: update its versions table")
    return running


def _logs(container: DockerContainer) -> str:
    out, err = container.get_logs()
    return (out + err).decode("utf-8", "replace")
