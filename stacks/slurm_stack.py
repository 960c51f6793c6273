"""One real Slurm cluster (one node) reached as SSH + Slurm, for the tests and benchmarks.

``with slurm_stack("24.11") as stack:`` builds (once) and starts ``stacks/slurm`` on the Debian suite that packages
that Slurm version, waits until the node is idle, accounting answers and sshd greets, and yields a
:class:`SlurmStack`: where to connect (``host``, ``port``, ``username``, ``client_key``, ``known_hosts`` pinned to the
stack's host key), the Slurm version it really runs, and handles for tests (``exec``, ``restart_slurmctld``, ...).

Networking: the container runs on the engine's default bridge network, so slurmctld, slurmd, slurmdbd and mariadb keep
their standard ports inside their own network namespace and several versions run side by side; only sshd (port 22
inside) is published, on 127.0.0.1 at a port the engine picks.

Finished jobs stay visible to ``squeue`` for ``min_job_age`` seconds (default 10, Slurm's own default is 300), then
only ``sacct`` knows them: short enough that a test sees the queue -> accounting hand-over within ~15 s, long enough
that a poller sees the terminal state in the queue first.

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
from typing import Any, cast

from testcontainers.core.container import DockerContainer

from stacks import harness
from stacks.harness import ExecResult
from stacks.keys import SSHKeys, make_keys

__all__ = ["SLURM_VERSIONS", "ExecResult", "SlurmStack", "slurm_stack"]

#: Slurm major.minor -> the Debian suite whose ``slurm-wlm`` package is that version.
SLURM_VERSIONS = {"22.05": "bookworm", "24.11": "trixie", "26.05": "sid"}

USERNAME = "tester"  # uid 2000 in the image; submits the jobs


@dataclass
class SlurmStack:
    """A running Slurm stack. ``stop`` is idempotent; the context manager calls it."""

    container: DockerContainer
    keys: SSHKeys
    host: str
    port: int
    version: str  # what ``sinfo --version`` says, e.g. "24.11.5"
    suite: str
    username: str = USERNAME
    started_in: float = 0.0  # seconds from container start to ready
    _owned_keys: bool = False
    _stopped: bool = field(default=False, repr=False)

    @property
    def client_key(self) -> Path:
        return self.keys.client

    @property
    def known_hosts(self) -> Path:
        """A known_hosts file pinning the stack's host key for ``[host]:port``."""
        return self.keys.known_hosts(self.port, self.host, name=f"known_hosts-{self.port}")

    def exec(self, cmd: str | Sequence[str], *, user: str = "root", workdir: str | None = None) -> ExecResult:
        """Run ``cmd`` in the container (a string goes through ``sh -c``; a list is exec'd as is)."""
        return harness.run_in(self.container, cmd, user=user, workdir=workdir)

    def check(self, cmd: str | Sequence[str], *, user: str = "root") -> str:
        """Like :meth:`exec`, but raise ``RuntimeError`` with stderr on a non-zero exit; return stdout."""
        return harness.check_in(self.container, cmd, user=user)

    def restart_slurmctld(self) -> None:
        """Stop slurmctld (its state is saved) and start it again; returns once it answers ``scontrol ping``."""
        self.check(["slurmctld-ctl", "restart"])

    def stop_slurmctld(self) -> None:
        """Stop slurmctld and leave it down (commands then fail with 'Unable to contact slurm controller')."""
        self.check(["slurmctld-ctl", "stop"])

    def start_slurmctld(self) -> None:
        """Start a stopped slurmctld; returns once it answers."""
        self.check(["slurmctld-ctl", "start"])

    def logs(self) -> str:
        """The daemons' log files, for a failing test's report."""
        return self.exec("tail -n 50 /var/log/slurm/*.log /var/log/sshd.log 2>&1").stdout

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        harness.remove(self.container, *([self.keys.folder] if self._owned_keys else []))


def start(version: str = "24.11", *, keys_dir: Path | None = None, min_job_age: int = 10, cpus: int = 4,
          timeout: float = 120.0) -> SlurmStack:
    """Start one stack (see the module docstring); the caller must :meth:`SlurmStack.stop` it."""
    suite = SLURM_VERSIONS[version]
    image = harness.image("slurm", suite)
    owned = keys_dir is None
    keys = make_keys(Path(tempfile.mkdtemp(prefix="intercede-slurm-keys-")) if keys_dir is None else keys_dir)
    container = (
        DockerContainer(image, hostname="slurmhost", init=True)
        .with_env("SSHD_PORT", "22")
        .with_env("SLURM_MIN_JOB_AGE", str(min_job_age))
        .with_env("SLURM_CPUS", str(cpus))
        .with_volume_mapping(str(keys.folder), "/keys", "ro")
    )
    # Publish sshd on 127.0.0.1 only, at a port the engine picks. with_bind_ports() knows no host address, so set the
    # docker-py binding (a 1-tuple is "this address, any port") directly.
    cast(dict[str, Any], container.ports)["22/tcp"] = ("127.0.0.1",)
    t0 = time.monotonic()
    container.start()
    stack = SlurmStack(container, keys, "127.0.0.1", 0, "", suite, _owned_keys=owned)
    try:
        stack.port = int(container.get_exposed_port(22))
        harness.wait_for(lambda: "idle" in stack.exec(["sinfo", "-h", "-o", "%T"]).stdout,
                         f"Slurm {version}: node idle", timeout)
        harness.wait_for(lambda: stack.exec(["sacct", "-n", "-X"], user=USERNAME).exit_code == 0,
                         f"Slurm {version}: accounting answers", timeout)
        harness.wait_for(lambda: harness.ssh_greets(stack.host, stack.port), f"Slurm {version}: sshd", timeout)
        stack.started_in = time.monotonic() - t0
        stack.version = stack.check(["sinfo", "--version"]).split()[-1]
    except BaseException:
        with contextlib.suppress(Exception):
            print(f"[stacks] Slurm {version} did not start; its logs:\n{stack.logs()}", file=sys.stderr)
        stack.stop()
        raise
    if not stack.version.startswith(version + "."):
        stack.stop()
        raise RuntimeError(f"{suite} runs Slurm {stack.version}, not {version}: update SLURM_VERSIONS")
    return stack


@contextlib.contextmanager
def slurm_stack(version: str = "24.11", *, keys_dir: Path | None = None, min_job_age: int = 10, cpus: int = 4,
                timeout: float = 120.0) -> Iterator[SlurmStack]:
    """Context manager around :func:`start` (same arguments); stops the stack on exit."""
    stack = start(version, keys_dir=keys_dir, min_job_age=min_job_age, cpus=cpus, timeout=timeout)
    try:
        yield stack
    finally:
        stack.stop()
