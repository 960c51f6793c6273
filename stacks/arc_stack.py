"""Real ARC CEs (A-REX with its REST interface, fork LRMS) for the tests and benchmarks.

``with arc_stack("7.0") as ce:`` builds (once) and starts ``stacks/arc`` on the Debian suite that packages that ARC
release, waits until the REST interface answers over verified TLS, and yields an :class:`ARCStack`: the endpoint
(``url``), the exported test CA (``ca_file``), the user proxy (``proxy_file``), tokens from the stack's own issuer
(:meth:`ARCStack.token`), and handles for tests (``exec``, ``arex_stop``/``arex_start``).

``lrms`` picks what A-REX submits into: ``fork`` (stacks/arc), or a real batch system in the same container,
``slurm`` (stacks/arc_slurm: slurmctld + slurmd) or ``condor`` (stacks/arc_htcondor: a minicondor pool). Those two
are built as one layer on the release's content-tagged stacks/arc image (only the batch system's packages are added),
and tagged by the digest of their folder and that base tag, so editing either rebuilds them.

Networking: the container is on the engine's bridge network and clients reach it at its own address on 8443 (its host
certificate names that address), so the three releases run side by side on their standard port.

What a start costs is recorded: ``build_seconds`` (0 when the image was cached) and ``started_in``.

Nothing here skips: when the engine, the image or the stack cannot be had, the caller gets the error.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testcontainers.core.container import DockerContainer

from stacks import harness
from stacks.harness import ExecResult

__all__ = ["ARC_VERSIONS", "ARCStack", "ExecResult", "arc_stack", "start"]

#: ARC release -> the Debian suite whose ``nordugrid-arc-arex`` package is that release.
ARC_VERSIONS = {"6.17": "bookworm", "7.0": "trixie", "7.2": "sid"}
#: LRMS -> the stacks folder layered on stacks/arc for it (fork: stacks/arc itself)
LRMS_FOLDERS = {"fork": "arc", "slurm": "arc_slurm", "condor": "arc_htcondor"}
#: LRMS -> capabilities its container needs. A-REX's slurm scripts submit with ``--get-user-env``, for which slurmd
#: (24.11) clones into a new mount namespace: without CAP_SYS_ADMIN slurmd dies with "fatal: clone: Operation not
#: permitted" at the first job.
LRMS_CAPS = {"slurm": ["SYS_ADMIN"]}
PORT = 8443


@dataclass
class ARCStack:
    """A running A-REX. ``stop`` is idempotent; the context manager calls it."""

    container: DockerContainer
    host: str
    suite: str
    release: str
    lrms: str = "fork"
    version: str = ""  # the package version, e.g. "7.0.0"
    build_seconds: float = 0.0
    started_in: float = 0.0
    _tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="intercede-arc-")), repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        """The A-REX endpoint a client is configured with."""
        return f"https://{self.host}:{PORT}/arex"

    @property
    def ca_file(self) -> Path:
        return self._tmp / "ARC-TestCA-ci.pem"

    @property
    def proxy_file(self) -> Path:
        return self._tmp / "x509up_u2000"

    def path(self, name: str) -> Path:
        """A path in this stack's private local folder (for credentials a test makes)."""
        return self._tmp / name

    def exec(self, cmd: str | Sequence[str], *, user: str = "root") -> ExecResult:
        """Run ``cmd`` in the container (:func:`stacks.harness.run_in`)."""
        return harness.run_in(self.container, cmd, user=user)

    def check(self, cmd: str | Sequence[str], *, user: str = "root") -> str:
        """Run ``cmd`` in the container; its stdout, or ``RuntimeError`` (:func:`stacks.harness.check_in`)."""
        return harness.check_in(self.container, cmd, user=user)

    def token(self, name: str = "token", *, lifetime: int = 3600) -> Path:
        """A bearer token from the stack's issuer (negative ``lifetime``: already expired), written 0600 locally."""
        path = self._tmp / name
        path.write_text(self.check(["python3", "/usr/local/bin/issuer.py", "mint", "--lifetime", str(lifetime)]))
        path.chmod(0o600)
        return path

    def count_named(self, name: str) -> int:
        """How many jobs the CE holds whose description is named ``name`` (read from the control directory)."""
        out = self.exec(f"grep -l -x 'jobname={name}' /var/spool/arc/jobstatus/jobs/*/*/*/*/local "
                        "/var/spool/arc/jobstatus/job.*.local 2>/dev/null | wc -l").stdout
        return int(out.strip() or 0)

    def limit_jobs(self, total: int) -> None:
        """Give A-REX a total job limit of ``total`` (``maxjobs``' fourth number in ``[arex]``) and restart arched.

        Stock A-REX (6.17 to 7.2 and its main branch) never refuses a REST or EMI-ES submit for this limit: the check
        (``rest.cpp``: ``all_jobs_count_ >= MaxTotal()`` -> ``500 No more jobs allowed``) compares with a count the
        information collector reads from the info provider's document (``ComputingService/AllJobs``), and the GLUE2
        XML printer has not written that element since 2011 (``ARC1ClusterInfo.pm`` computes it, ``GLUE2xmlPrinter``
        drops it), so the count stays 0. Here the printer is made to write it (one word in its ComputingService
        properties; A-REX removes the element from the document it serves), so the check A-REX has works."""
        printer = "/usr/share/arc/GLUE2xmlPrinter.pm"
        self.check(f"grep -q 'qw( AllJobs TotalJobs' {printer} || "
                   f"sed -i '0,/qw( TotalJobs/s//qw( AllJobs TotalJobs/' {printer}")
        self.check("sed -i '/^maxjobs *=/d' /etc/arc.conf && "
                   f"sed -i 's/^\\[arex\\]$/[arex]\\nmaxjobs = 10000 10000 10000 {int(total)} 10000/' /etc/arc.conf "
                   "&& /usr/lib/arc/arcconfig-parser --config /etc/arc.conf --runconfig /run/arched-arex.cfg --save")
        if f" {int(total)} " not in self.check("grep '^maxjobs' /run/arched-arex.cfg"):
            raise RuntimeError("maxjobs did not reach A-REX's run-time configuration")
        self.arex_stop()
        self.arex_start()
        harness.wait_for(lambda: self.jobs_counted() is not None, "A-REX counting its jobs", 120, interval=2)

    def jobs_counted(self) -> int | None:
        """The job count A-REX compares with its total limit (the info provider's last ``AllJobs``; None while no
        document with it has been written: see :meth:`limit_jobs`)."""
        out = self.exec("grep -o '<AllJobs>[0-9]*' /var/spool/arc/jobstatus/info.xml").stdout.strip()
        return int(out.rpartition(">")[2]) if out else None

    def arex_stop(self) -> None:
        """Stop arched (start.sh's loop keeps it stopped; the container and its jobs stay) and wait until 8443 is
        closed."""
        self.check("touch /run/arex.paused && kill $(pgrep -x arched)")
        harness.wait_for(lambda: not harness.port_open(PORT, self.host), "A-REX stopped", 60)

    def arex_start(self) -> None:
        """Let start.sh's loop start arched again and wait until REST answers."""
        self.check("rm -f /run/arex.paused")
        harness.wait_for(self._ready, "A-REX answering again", 120)

    def _ready(self) -> bool:
        """REST answers over verified TLS and the info provider has published its first GLUE2 document."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.proxy_file))
        request = urllib.request.Request(f"{self.url}/rest/1.0/info",  # noqa: S310 - an https URL we built
                                         headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, context=ctx, timeout=5) as answer:  # noqa: S310 - https
            return bool(answer.status == 200 and answer.read().startswith(b"{"))

    def logs(self) -> str:
        return self.exec("tail -n 40 /var/log/arc/arex-combined.log /var/log/arc/arex.log 2>&1").stdout

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        harness.remove(self.container, self._tmp)


def _export(stack: ARCStack) -> bool:
    """Copy the client's files out of /export once start.sh has written them all."""
    bits, _ = stack.container.get_wrapped_container().get_archive("/export/.")
    with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as tar:
        names = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        if not {"ARC-TestCA-ci.pem", "x509up_u2000"} <= set(names):
            return False
        for wanted in ("ARC-TestCA-ci.pem", "x509up_u2000"):
            data = tar.extractfile(names[wanted])
            assert data is not None
            target = stack.path(wanted)
            target.write_bytes(data.read())
            target.chmod(0o600)
    return True


def _image(suite: str, lrms: str) -> str:
    """The image of stacks/arc on ``suite``, with the ``lrms`` layer on top unless it is fork (built once, cached)."""
    base = harness.image("arc", suite)
    folder = LRMS_FOLDERS[lrms]
    if folder == "arc":
        return base
    cli = harness.engine()
    digest = hashlib.sha256(f"{base}\0{harness._digest(harness.STACKS / folder)}".encode()).hexdigest()[:12]
    tag = f"localhost/intercede-{folder.replace('_', '-')}:{suite}-{digest}"
    if subprocess.run([cli, "image", "inspect", tag], capture_output=True).returncode != 0:
        print(f"[stacks] building {tag} on {base} (once; cached afterwards)", file=sys.stderr, flush=True)
        subprocess.run([cli, "build", "--build-arg", f"BASE={base}", "-t", tag, str(harness.STACKS / folder)],
                       check=True, stdout=sys.stderr)
    return tag


def start(release: str = "7.0", *, lrms: str = "fork", timeout: float = 120.0) -> ARCStack:
    """Start one A-REX of ``release`` submitting into ``lrms``; the caller must :meth:`ARCStack.stop` it."""
    suite = ARC_VERSIONS[release]
    t0 = time.monotonic()
    image = _image(suite, lrms)
    built = time.monotonic() - t0
    container = DockerContainer(image, init=True, cap_add=LRMS_CAPS.get(lrms, []))
    t1 = time.monotonic()
    container.start()
    stack = ARCStack(container, "", suite, release, lrms, build_seconds=built if built > 5 else 0.0)
    try:
        stack.host = harness.container_address(container)
        harness.wait_for(lambda: _export(stack), f"ARC {release}: credentials exported", timeout)
        harness.wait_for(stack._ready, f"ARC {release}: REST answering over verified TLS, GLUE2 published", timeout)
        stack.version = stack.check("dpkg-query -W -f '${Version}' nordugrid-arc-arex").split("-")[0]
        stack.started_in = time.monotonic() - t1
    except BaseException:
        with contextlib.suppress(Exception):
            print(f"[stacks] ARC {release} did not start; its logs:\n{stack.logs()}", file=sys.stderr)
        stack.stop()
        raise
    if not stack.version.startswith(release + "."):
        stack.stop()
        raise RuntimeError(f"{suite} packages ARC {stack.version}, not {release}: update ARC_VERSIONS")
    print(f"[stacks] ARC {stack.version} ({lrms}) at {stack.url}: build {stack.build_seconds:.1f} s, "
          f"start {stack.started_in:.1f} s", file=sys.stderr)
    return stack


@contextlib.contextmanager
def arc_stack(release: str = "7.0", *, lrms: str = "fork", timeout: float = 120.0) -> Iterator[ARCStack]:
    """An A-REX of ``release`` submitting into ``lrms``; stopped on exit."""
    stack = start(release, lrms=lrms, timeout=timeout)
    try:
        yield stack
    finally:
        stack.stop()


if __name__ == "__main__":  # pragma: no cover - manual: python -m stacks.arc_stack [6.17|7.0|7.2] [fork|slurm|condor]
    harness.engine()
    with arc_stack(sys.argv[1] if len(sys.argv) > 1 else "7.0", lrms=sys.argv[2] if len(sys.argv) > 2 else "fork") as s:
        print(s.url, s.version, f"build {s.build_seconds:.1f} s, up in {s.started_in:.1f} s")
