"""What a batch-system stack reached over SSH is, once started (Grid Engine, OAR): its container, the SSH keys and
pinned host key to reach its sshd, and handles for tests (``exec``, ``check``, ``logs``). Each system's module builds
and starts its own container and names the logs worth showing when it fails (:attr:`BatchStack.LOGS`)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from testcontainers.core.container import DockerContainer

from stacks import harness
from stacks.harness import ExecResult
from stacks.keys import SSHKeys

__all__ = ["USERNAME", "BatchStack"]

USERNAME = "tester"  # uid 2000 in the images


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
        try:
            harness.stop_container(self.container)
        finally:
            shutil.rmtree(self.keys.folder, ignore_errors=True)
