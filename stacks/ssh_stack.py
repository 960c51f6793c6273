"""Real sshd containers for the transport tests and benchmarks (and for stacks reached over SSH).

:func:`start_sshd` starts ``stacks/sshd`` on ``127.0.0.1:<free port>`` (host network) with fresh keys and returns an
:class:`SSHStack` holding everything a client needs: host, port, username, client key, pinned known_hosts.
:func:`start_jump_pair` starts two of them: a *target* and a *jump host* through which the target is reached (both on
the host network, so the jump connects on to ``127.0.0.1:<target port>``). Both are context managers::

    with start_sshd() as target:
        SSHTransport(target.endpoint())

The container runs sshd under a restart loop: :meth:`SSHStack.restart_sshd` kills every sshd process (which drops
all open connections) and waits for the fresh one. ``suite`` picks the Debian base: bookworm (OpenSSH 9.2), trixie
(10.0), sid (10.x). Nothing here skips: a missing engine or image raises.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testcontainers.core.container import DockerContainer

from stacks import harness
from stacks.keys import SSHKeys, make_keys

if TYPE_CHECKING:
    from intercede.backends.transports.ssh import SSHEndpoint

__all__ = ["SSHStack", "start_jump_pair", "start_sshd"]

USERNAME = "tester"


@dataclass
class SSHStack:
    """A running sshd container and the client-side files to reach it."""

    host: str
    port: int
    username: str
    keys: SSHKeys
    known_hosts: Path
    container: DockerContainer = field(repr=False)
    _tmp: Path = field(repr=False)

    @property
    def client_key(self) -> Path:
        return self.keys.client

    @property
    def client_keys(self) -> list[Path]:
        return [self.keys.client]

    def endpoint(self, **changes: Any) -> SSHEndpoint:
        """An :class:`~intercede.backends.transports.ssh.SSHEndpoint` for this sshd, with optional field changes."""
        from intercede.backends.transports.ssh import SSHEndpoint

        fields: dict[str, Any] = {"host": self.host, "port": self.port, "username": self.username,
                                  "client_keys": self.client_keys, "known_hosts": self.known_hosts}
        return SSHEndpoint(**(fields | changes))

    def exec(self, *argv: str) -> tuple[int | None, bytes]:
        """Run ``argv`` as root inside the container (not over SSH); return exit code and output."""
        result = self.container.exec(list(argv))
        return result.exit_code, result.output

    def restart_sshd(self, timeout: float = 30.0) -> None:
        """Kill every sshd process (the listener and each connection's), then wait until a new sshd answers."""
        before = self._sshd_pid()
        code, out = self.exec("pkill", "-x", "sshd|sshd-session|sshd-auth")  # OpenSSH >= 10 splits sshd in three
        if code != 0:
            raise RuntimeError(f"pkill sshd failed ({code}): {out.decode(errors='replace')}")
        harness.wait_for(lambda: self._sshd_pid() not in ("", before)
                         and harness.ssh_greets("127.0.0.1", self.port),
                         f"sshd restarted on 127.0.0.1:{self.port}", timeout=timeout, interval=0.05)

    def logs(self) -> str:
        out, err = self.container.get_logs()
        return (out + err).decode(errors="replace")

    def stop(self) -> None:
        """Remove the container and the key folder. Idempotent."""
        try:
            with contextlib.suppress(Exception):  # podman answers a remove of an exited container with a 500
                self.container.stop()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _sshd_pid(self) -> str:
        return self.exec("cat", "/run/sshd.pid")[1].decode().strip()

    def __enter__(self) -> SSHStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_sshd(*, suite: str = "bookworm", timeout: float = 60.0) -> SSHStack:
    """Start an sshd container with fresh keys; return when it answers with an SSH banner."""
    image = harness.image("sshd", suite)
    tmp = Path(tempfile.mkdtemp(prefix="intercede-sshd-"))
    keys = make_keys(tmp / "keys")
    port = harness.free_port()
    container = DockerContainer(image, network_mode="host", init=True, env={"SSHD_PORT": str(port)},
                                volumes=[(str(keys.folder), "/keys", "ro")])
    stack = SSHStack("127.0.0.1", port, USERNAME, keys, keys.known_hosts(port), container, tmp)
    try:
        container.start()
        harness.wait_for(lambda: harness.ssh_greets("127.0.0.1", port), f"sshd on 127.0.0.1:{port}",
                         timeout=timeout, interval=0.1)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            exc.add_note(f"sshd container logs:\n{stack.logs()}")
        stack.stop()
        raise
    return stack


@contextlib.contextmanager
def start_jump_pair(*, suite: str = "bookworm") -> Iterator[tuple[SSHStack, SSHStack]]:
    """Yield ``(target, jump)``: two sshd containers, each with its own host key; reach the target via the jump."""
    with start_sshd(suite=suite) as target, start_sshd(suite=suite) as jump:
        yield target, jump


if __name__ == "__main__":  # pragma: no cover - manual smoke test: python -m stacks.ssh_stack
    harness.engine()
    t0 = time.monotonic()
    with start_sshd() as s:
        print(s, f"up in {time.monotonic() - t0:.1f} s")
