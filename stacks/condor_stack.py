"""Real HTCondor pools for the tests and benchmarks: minicondor (with sshd) and a CE-shaped stack.

``with condor_stack("23.9") as pool:`` builds (once) and starts ``stacks/condor`` on the Debian suite that packages
that HTCondor release, waits until the schedd and an execute slot are advertised, and yields a :class:`CondorStack`:
the collector address (``pool``), IDTOKENS minted inside (:meth:`CondorStack.token`), the sshd for the
SSH + HTCondorScheduler path (``endpoint``), and handles for fault tests (``schedd_off``/``schedd_on``, ``exec``).

``with ce_stack("25") as ce:`` starts ``stacks/condor_ce`` instead: the same pool behind a schedd + collector on port
9619 that accepts IDTOKENS and SciTokens (from an issuer inside the container), the way an HTCondor-CE presents itself
to a client. It stands in for HTCondor-CE, which Debian does not package (docs/htcondor.md).

Networking: each container is on the engine's bridge network and clients reach it at its own address (the daemons
advertise it; nothing is published), so several pools run side by side on their standard ports. This needs an
engine whose container addresses the host can route to (rootful Podman, Docker on Linux).

Nothing here skips: when the engine, the image or the stack cannot be had, the caller gets the error.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testcontainers.core.container import DockerContainer

from stacks import harness
from stacks.harness import ExecResult
from stacks.keys import SSHKeys, make_keys

if TYPE_CHECKING:
    from intercede.backends.transports.ssh import SSHEndpoint

__all__ = ["CONDOR_VERSIONS", "CondorStack", "ExecResult", "ce_stack", "condor_stack", "start"]

#: HTCondor release -> the Debian suite whose ``condor`` package is that release.
CONDOR_VERSIONS = {"23.9": "trixie", "25": "sid"}
USERNAME = "tester"  # uid 2000 in the image; tokens name tester@intercede.test
IDENTITY = f"{USERNAME}@intercede.test"


@dataclass
class CondorStack:
    """A running pool. ``stop`` is idempotent; the context managers call it."""

    container: DockerContainer
    keys: SSHKeys
    host: str  # the container's address
    port: int  # the collector's port: 9618 (pool) or 9619 (CE)
    suite: str
    kind: str  # "condor" or "condor_ce"
    version: str = ""  # what condor_version says, e.g. "23.9.6"
    started_in: float = 0.0
    _tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="intercede-condor-")), repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def pool(self) -> str:
        """The collector, as a client names it: ``host:port``."""
        return f"{self.host}:{self.port}"

    @property
    def ssh_port(self) -> int:
        return 22

    @property
    def known_hosts(self) -> Path:
        return self.keys.known_hosts(22, self.host, name=f"known_hosts-{self.host}")

    def endpoint(self, **changes: Any) -> SSHEndpoint:
        """An SSHEndpoint logging in as ``tester`` (who submits with the pool's FS authentication)."""
        from intercede.backends.transports.ssh import SSHEndpoint

        fields: dict[str, Any] = {"host": self.host, "port": 22, "username": USERNAME,
                                  "client_keys": [self.keys.client], "known_hosts": self.known_hosts}
        return SSHEndpoint(**(fields | changes))

    def exec(self, cmd: str | Sequence[str], *, user: str = "root") -> ExecResult:
        """Run ``cmd`` in the container (a string goes through ``sh -c``)."""
        return harness.run_in(self.container, cmd, user=user)

    def check(self, cmd: str | Sequence[str], *, user: str = "root") -> str:
        return harness.check_in(self.container, cmd, user=user)

    def token(self, name: str = "token", *, identity: str = IDENTITY, lifetime: int | None = None) -> Path:
        """An IDTOKEN minted by the pool (``condor_token_create``), written 0600 to a local file; returns it."""
        argv = ["condor_token_create", "-identity", identity]
        if lifetime is not None:
            argv += ["-lifetime", str(lifetime)]
        if self.kind == "condor_ce":
            argv = ["env", "CONDOR_CONFIG=/etc/condor-ce/condor_config", *argv]
        path = self._tmp / name
        path.write_text(self.check(argv).strip() + "\n")
        path.chmod(0o600)
        return path

    def scitoken(self, name: str = "scitoken", *, audience: str | None = None, lifetime: int = 3600,
                 subject: str = USERNAME) -> Path:
        """A SciToken from the CE stack's own issuer for ``audience`` (default: this CE, ``<host>:9619``), written
        0600 to a local file; a negative ``lifetime`` makes one that has already expired."""
        argv = ["python3", "/usr/local/bin/issuer.py", "mint", "--aud", audience or self.pool, "--sub", subject,
                "--lifetime", str(lifetime)]
        path = self._tmp / name
        path.write_text(self.check(argv).strip() + "\n")
        path.chmod(0o600)
        return path

    def ca_file(self) -> Path:
        """The CE stack's test CA certificate (it signs the CE's host certificate), copied to a local file."""
        path = self._tmp / "ca.crt"
        path.write_text(self.check(["cat", "/etc/condor-ce/issuer/ca.crt"]))
        return path

    def path(self, name: str) -> Path:
        """A path in this stack's private local folder (for credentials a test makes)."""
        return self._tmp / name

    def schedd_off(self) -> None:
        """Stop the schedd the clients talk to (the collector stays up), and wait until it is gone."""
        self.check(["sh", "-c", f"{self._tools} condor_off -daemon schedd"])
        harness.wait_for(lambda: not self.exec(f"pgrep -f {self._schedd_process}").stdout.strip(),
                         "schedd stopped", 60)

    def schedd_on(self) -> None:
        """Start the schedd again and wait until the collector advertises it."""
        self.check(["sh", "-c", f"{self._tools} condor_on -daemon schedd"])
        harness.wait_for(self._schedd_advertised, "schedd advertised again", 60)

    @property
    def _tools(self) -> str:
        return "CONDOR_CONFIG=/etc/condor-ce/condor_config" if self.kind == "condor_ce" else ""

    @property
    def _schedd_process(self) -> str:
        return "'condor_schedd.*condor-ce'" if self.kind == "condor_ce" else "'^condor_schedd'"

    def _schedd_advertised(self) -> bool:
        out = self.exec(f"{self._tools} condor_status -pool 127.0.0.1:{self.port} -schedd -af Name").stdout
        return bool(out.strip())

    def logs(self) -> str:
        return self.exec("tail -n 30 /var/log/condor/*Log /var/log/condor-ce/*Log /var/log/sshd.log 2>&1").stdout

    def stop(self) -> None:
        """Stop the container; remove the local credentials (minted ones and the SSH keys)."""
        if self._stopped:
            return
        self._stopped = True
        harness.remove(self.container, self._tmp, self.keys.folder)


def start(version: str = "23.9", *, kind: str = "condor", timeout: float = 120.0) -> CondorStack:
    """Start one stack (``kind`` is ``condor`` or ``condor_ce``); the caller must :meth:`CondorStack.stop` it."""
    suite = CONDOR_VERSIONS[version]
    image = harness.image(kind, suite)
    keys = make_keys(Path(tempfile.mkdtemp(prefix="intercede-condor-keys-")))
    container = DockerContainer(image, init=True).with_volume_mapping(str(keys.folder), "/keys", "ro")
    t0 = time.monotonic()
    container.start()
    stack = CondorStack(container, keys, "", 9619 if kind == "condor_ce" else 9618, suite, kind)
    try:
        stack.host = harness.container_address(container)
        harness.wait_for(stack._schedd_advertised, f"HTCondor {version} ({kind}): schedd advertised", timeout)
        harness.wait_for(lambda: bool(stack.exec("condor_status -startd -af Name").stdout.strip()),
                         f"HTCondor {version}: an execute slot advertised", timeout)
        if kind == "condor":
            harness.wait_for(lambda: harness.port_open(22, stack.host), f"HTCondor {version}: sshd", timeout)
        stack.version = stack.check(["condor_version"]).split()[1]
        stack.started_in = time.monotonic() - t0
    except BaseException:
        with contextlib.suppress(Exception):
            print(f"[stacks] HTCondor {version} ({kind}) did not start; its logs:\n{stack.logs()}", file=sys.stderr)
        stack.stop()
        raise
    if not stack.version.startswith(version + "."):
        stack.stop()
        raise RuntimeError(f"{suite} runs HTCondor {stack.version}, not {version}: update CONDOR_VERSIONS")
    return stack


@contextlib.contextmanager
def condor_stack(version: str = "23.9", *, timeout: float = 120.0) -> Iterator[CondorStack]:
    """A minicondor pool of ``version`` with sshd; stopped on exit."""
    stack = start(version, timeout=timeout)
    try:
        yield stack
    finally:
        stack.stop()


@contextlib.contextmanager
def ce_stack(version: str = "25", *, timeout: float = 120.0) -> Iterator[CondorStack]:
    """The CE-shaped stack of ``version`` (port 9619 in front of a local pool); stopped on exit."""
    stack = start(version, kind="condor_ce", timeout=timeout)
    try:
        yield stack
    finally:
        stack.stop()


if __name__ == "__main__":  # pragma: no cover - manual smoke test: python -m stacks.condor_stack [23.9|25]
    harness.engine()
    with condor_stack(sys.argv[1] if len(sys.argv) > 1 else "23.9") as s:
        print(s, f"up in {s.started_in:.1f} s")
