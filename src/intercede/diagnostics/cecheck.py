"""``intercede ce check``: is this CE usable? Connectivity, authentication and a tiny test job, with a clear verdict.

:func:`check_ce` builds the backend straight from a CE's config, of any kind (no Ray, no journal)
and runs these steps in order, stopping at the first failure (the later ones are reported as skipped):

==============  ===========================================================================================
configuration   the backend can be built from the config (no I/O)
credentials     every credential file the config names (SSH keys, known_hosts, ``*_file`` options) is readable
reach           the network endpoint accepts a TCP connection: the SSH endpoint (or its jump host), the HTCondor
                collector or CE (skipped for local transports)
authenticate    log in and run ``true`` (for a local transport: run ``true``); HTCondor: ask the schedd its version
scheduler       the resource reports its load (skipped where it cannot)
test job        submit ``echo`` with a random token, poll until it ends: it must be Done with exit code 0
outputs         fetch the job's stdout into a temporary directory: it must hold the token
clean up        purge the test job at the resource (also attempted, best effort, after a failure)
==============  ===========================================================================================

Each failure comes with what to do about it. :class:`CheckReport` renders as text (``lines``/``verdict``) and HTML.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import os
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from intercede.backends.capabilities import Cancellable, JobBackend, LoadReporter, OutputRetriever, Purgeable
from intercede.backends.registry import BatchConfig, CEConfigBase, HTCondorCEConfig, HTCondorConfig, build_backend
from intercede.backends.transports.base import Transport
from intercede.backends.transports.ssh import SSHEndpoint, SSHTransport
from intercede.errors import (
    AuthenticationError,
    CommandNotFoundError,
    ConnectivityError,
    HostKeyError,
    IntercedeError,
    TimeoutError,
    UnsupportedError,
)
from intercede.model import JobSpec, JobState, JobStatus

__all__ = ["STEPS", "CheckReport", "Step", "check_ce", "credential_files", "credential_options", "describe"]

STEPS = ("configuration", "credentials", "reach", "authenticate", "scheduler", "test job", "outputs", "clean up")
Result = Literal["ok", "FAIL", "skip"]


@dataclass
class Step:
    """One step of a check: its result, what was seen, how long it took, and (on failure) what to do."""

    name: str
    result: Result
    detail: str = ""
    seconds: float = 0.0
    hint: str = ""


@dataclass
class CheckReport:
    """The outcome of :func:`check_ce`: ``ok`` is true when no step failed."""

    ce: str
    description: str = ""
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.result != "FAIL" for s in self.steps)

    @property
    def failed(self) -> Step | None:
        return next((s for s in self.steps if s.result == "FAIL"), None)

    @property
    def verdict(self) -> str:
        """One line: ``OK: ...`` or ``FAILED: ...`` naming the step and why."""
        failed = self.failed
        if failed is None:
            return f"OK: CE {self.ce!r} is usable (reachable, authenticated, a test job ran and came back)"
        return f"FAILED: CE {self.ce!r} failed the {failed.name} step: {failed.detail}"

    def lines(self) -> list[str]:
        """The report as text: a header, one line per step, the verdict and, on failure, what to do."""
        out = [f"ce check {self.ce}" + (f" ({self.description})" if self.description else "")]
        out += [f"  {s.result:4}  {s.name:13} {s.detail}" + (f"  [{s.seconds:.1f} s]" if s.seconds >= 0.05 else "")
                for s in self.steps]
        out.append(self.verdict)
        failed = self.failed
        if failed is not None and failed.hint:
            out.append(f"  what to do: {failed.hint}")
        return out

    def _repr_html_(self) -> str:
        colour = {"ok": "#31a354", "FAIL": "#de2d26", "skip": "#999999"}
        rows = "".join(f"<tr><td style='color:{colour[s.result]}'><b>{s.result}</b></td><td>{html.escape(s.name)}"
                       f"</td><td>{html.escape(s.detail)}</td><td>{s.seconds:.1f} s</td></tr>" for s in self.steps)
        failed = self.failed
        hint = f"<p>what to do: {html.escape(failed.hint)}</p>" if failed is not None and failed.hint else ""
        return (f"<div class='intercede-ce-check'><table><tr><th></th><th>step</th><th>detail</th><th>time</th></tr>"
                f"{rows}</table><p><b>{html.escape(self.verdict)}</b></p>{hint}</div>")


class _Failed(Exception):
    def __init__(self, detail: str, hint: str = "") -> None:
        super().__init__(detail)
        self.detail, self.hint = detail, hint


async def check_ce(config: CEConfigBase, *, timeout: float = 120.0, poll: float = 1.0,
                   progress: Callable[[Step], None] | None = None) -> CheckReport:
    """Check ``config``'s CE step by step (see the module docstring); never raises for a CE problem.

    ``timeout`` bounds the test job (and each step's commands); ``progress`` is called with each step as it ends.
    """
    report = CheckReport(config.name, describe(config))
    checker = _Checker(config, report, timeout, poll, progress)
    try:
        await checker.run()
    finally:
        await checker.close()
    return report


class _Checker:
    def __init__(self, config: CEConfigBase, report: CheckReport, timeout: float, poll: float,
                 progress: Callable[[Step], None] | None) -> None:
        self.config, self.report, self.timeout, self.poll = config, report, timeout, poll
        self.progress = progress
        self.backend: JobBackend | None = None
        self.job_id: str | None = None
        self.purged = False
        self.token = secrets.token_hex(6)
        self.spec = JobSpec(executable="/bin/sh", arguments=["-c", f"echo intercede-ce-check {self.token}"],
                            tag=f"ce-check-{self.token}")

    async def run(self) -> None:
        steps: list[tuple[str, Callable[[], Awaitable[tuple[Result, str]]]]] = [
            ("configuration", self._configuration), ("credentials", self._credentials), ("reach", self._reach),
            ("authenticate", self._authenticate), ("scheduler", self._scheduler), ("test job", self._test_job),
            ("outputs", self._outputs), ("clean up", self._clean_up),
        ]
        for i, (name, step) in enumerate(steps):
            start = time.monotonic()
            try:
                result, detail = await step()
                self._add(Step(name, result, detail, time.monotonic() - start))
            except _Failed as failure:
                self._add(Step(name, "FAIL", failure.detail, time.monotonic() - start, failure.hint))
                for later, _ in steps[i + 1:]:
                    self._add(Step(later, "skip", "not tried after the failure above"))
                return

    def _add(self, step: Step) -> None:
        self.report.steps.append(step)
        if self.progress is not None:
            self.progress(step)

    async def close(self) -> None:
        if self.backend is None:
            return
        if self.job_id is not None and not self.purged:  # a failed check must not leave its job behind
            with contextlib.suppress(Exception):
                if isinstance(self.backend, Cancellable):
                    await asyncio.wait_for(self.backend.cancel([self.job_id]), 30)
                if isinstance(self.backend, Purgeable):
                    await asyncio.wait_for(self.backend.purge([self.job_id]), 30)
        with contextlib.suppress(Exception):
            await self.backend.aclose()

    # -- the steps ----------------------------------------------------------------------------------------------

    @property
    def _scheduler_name(self) -> str:
        return self.config.scheduler if isinstance(self.config, BatchConfig) else _kind(self.config)

    @property
    def _where_jobs(self) -> str:
        return f"under {self.config.root}" if isinstance(self.config, BatchConfig) else "at the resource"

    @property
    def _transport(self) -> Transport | None:
        transport = getattr(self.backend, "transport", None)
        return transport if isinstance(transport, Transport) else None

    async def _configuration(self) -> tuple[Result, str]:
        try:
            self.backend = build_backend(self.config)
        except IntercedeError as exc:
            raise _Failed(str(exc), f"fix the [[ce]] entry named {self.config.name!r} in the config file") from exc
        config, transport = self.config, self._transport
        if isinstance(config, BatchConfig):
            where = transport.name if transport is not None else config.transport
            self.report.description = f"{config.scheduler} over {where}, root {config.root}"
            return "ok", f"{config.scheduler} scheduler over {where}"
        self.report.description = describe(config)
        return "ok", f"{self.report.description}: {self.backend!r}"

    async def _credentials(self) -> tuple[Result, str]:
        options, table = credential_options(self.config)
        files = sorted(set(credential_files(options)))
        for option, path in files:
            real = path.expanduser()
            if not real.exists():
                raise _Failed(f"{option} file {path} does not exist",
                              f"create it or correct `{option}` under {table} of CE {self.config.name!r}")
            if not os.access(real, os.R_OK) or not real.is_file():
                raise _Failed(f"{option} file {path} cannot be read",
                              f"make it a regular file readable by this user (now uid {os.getuid()})")
        if not files:
            return "ok", "the config names no credential file"
        return "ok", f"{len(files)} file(s) readable: " + ", ".join(str(p) for _, p in files)

    async def _reach(self) -> tuple[Result, str]:
        target = self._network_target()
        if target is None:
            return "skip", "not a network transport"
        host, port, what, fields, daemon = target
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), min(self.timeout, 10.0))
        except (OSError, asyncio.TimeoutError) as exc:
            reason = "no answer within 10 s" if isinstance(exc, asyncio.TimeoutError) else \
                (exc.strerror or str(exc))
            raise _Failed(f"cannot connect to {what}: {reason}",
                          f"check {fields}, that {daemon} runs there and that no firewall is in the way") from exc
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return "ok", f"{what} accepts TCP connections"

    def _network_target(self) -> tuple[str, int, str, str, str] | None:
        """(host, port, shown as, the config fields to check, the daemon) of the first network hop, if any."""
        config, transport = self.config, self._transport
        if isinstance(transport, SSHTransport):
            first: SSHEndpoint = transport.jump or transport.endpoint
            table = "jump" if transport.jump else "endpoint"
            return (first.host, first.port, f"{first.host}:{first.port}" + (" (the jump host)" if transport.jump
                                                                            else ""),
                    f"`host` and `port` under [ce.transport_options.{table}]", "sshd")
        if isinstance(config, HTCondorConfig):
            host, _, port = config.pool.partition(":")
            return host, int(port or 9618), config.pool, "`pool` (host:port of the collector)", "the collector"
        if isinstance(config, HTCondorCEConfig):
            return config.ce, config.port, f"{config.ce}:{config.port}", "`ce` and `port`", "the HTCondor-CE"
        return None

    async def _authenticate(self) -> tuple[Result, str]:
        transport = self._transport
        if transport is None:
            return await self._authenticate_backend()
        try:
            result = await transport.run(["true"], timeout=min(self.timeout, 30.0))
        except HostKeyError as exc:
            endpoint = transport.endpoint if isinstance(transport, SSHTransport) else None
            fix = (f"verify the server's key fingerprint, then add it to {endpoint.known_hosts}, e.g. "
                   f"`ssh-keyscan -p {endpoint.port} {endpoint.host} >> {endpoint.known_hosts}`") if endpoint else \
                "pin the server's host key in the known_hosts file of the config"
            raise _Failed(str(exc), fix) from exc
        except AuthenticationError as exc:
            raise _Failed(str(exc), _auth_hint(transport)) from exc
        except (ConnectivityError, TimeoutError) as exc:
            raise _Failed(str(exc), "the port answers but the SSH login did not complete: is it an SSH server? "
                                    "check the server's logs") from exc
        if result.exit_status != 0:
            raise _Failed(f"`true` exited {result.exit_status}: {result.stderr.decode(errors='replace').strip()}",
                          "the login shell of the account is broken; try `ssh` by hand")
        if isinstance(transport, SSHTransport):
            return "ok", f"logged in as {transport.endpoint.username} and ran `true`"
        return "ok", f"ran `true` through {transport.name}"

    async def _authenticate_backend(self) -> tuple[Result, str]:
        # Backends without a command transport (HTCondor's bindings) authenticate on their first call: ask a version.
        version = getattr(self.backend, "version", None)
        if not callable(version):
            return "skip", "the backend has no call that only authenticates"
        try:
            answer = await asyncio.wait_for(version(), min(self.timeout, 60.0))
        except AuthenticationError as exc:
            raise _Failed(str(exc), "check the token files of the config: readable, not expired, issued for this "
                                    "pool (an HTCondor-CE SciToken's audience is <ce>:<port>)") from exc
        except (ConnectivityError, TimeoutError, asyncio.TimeoutError) as exc:
            raise _Failed(f"no answer: {exc or 'timed out'}", "the port answers but the daemon did not: check its "
                                                              "logs") from exc
        return "ok", f"authenticated; the schedd runs {str(answer).strip()[:80]}"

    async def _scheduler(self) -> tuple[Result, str]:
        backend = self.backend
        if not isinstance(backend, LoadReporter):
            return "skip", "the backend does not report its load"
        try:
            load = await asyncio.wait_for(backend.load(), self.timeout)
        except UnsupportedError:
            return "skip", f"{self._scheduler_name} does not report its load"
        except CommandNotFoundError as exc:
            raise _Failed(str(exc), f"install the {self._scheduler_name} client commands on the CE, or put them "
                                    "on the PATH of the account's login shell") from exc
        except (IntercedeError, asyncio.TimeoutError) as exc:
            raise _Failed(f"the scheduler did not answer: {exc}",
                          f"check that {self._scheduler_name}'s daemons run and answer on the CE") from exc
        cores = "?" if load.free_cores is None else str(load.free_cores)
        return "ok", f"{cores} cores free, {load.running} running, {load.queued} queued"

    async def _test_job(self) -> tuple[Result, str]:
        assert self.backend is not None
        start = time.monotonic()
        try:
            result = await asyncio.wait_for(self.backend.submit(self.spec), self.timeout)
        except (IntercedeError, asyncio.TimeoutError) as exc:
            raise _Failed(f"submit failed: {exc or 'no answer'}", "check the CE's `root` directory is writable "
                                                                  "and the scheduler accepts jobs") from exc
        submission = result.submissions[0]
        if submission.job_id is None:
            raise _Failed(f"the CE refused the test job: {submission.error}",
                          "check the account may submit to the default queue/partition, and the `root` directory")
        self.job_id = submission.job_id
        status = await self._until_terminal(submission.job_id, start)
        took = time.monotonic() - start
        native = f"native {status.native_state}" if status.native_state else "no native state"
        if status.state is not JobState.DONE or status.exit_code not in (0, None):
            reason = f", {status.reason}" if status.reason else ""
            raise _Failed(f"job {self.job_id} ended {status.state.value}, exit {status.exit_code} ({native}{reason})",
                          "the CE runs jobs but this one failed: look at the job's stderr in its directory "
                          f"{self._where_jobs} and at the scheduler's logs")
        return "ok", f"job {self.job_id}: Done, exit {status.exit_code} ({native}) after {took:.1f} s"

    async def _until_terminal(self, job_id: str, start: float) -> JobStatus:
        assert self.backend is not None
        last: JobStatus | None = None
        while True:
            try:
                (last,) = await asyncio.wait_for(self.backend.status([job_id]), self.timeout)
            except (IntercedeError, asyncio.TimeoutError) as exc:
                raise _Failed(f"status of job {job_id} failed: {exc or 'no answer'}",
                              "the CE accepted the job but stopped answering; check it and retry") from exc
            if last.state.is_terminal:
                return last
            if time.monotonic() - start > self.timeout:
                raise _Failed(f"job {job_id} still {last.state.value} ({last.native_state or '-'}) after "
                              f"{self.timeout:.0f} s", "the CE may be busy or the job stuck in its queue: look at "
                                                       "the queue, or retry with a longer --timeout")
            await asyncio.sleep(self.poll)

    async def _outputs(self) -> tuple[Result, str]:
        backend, job_id = self.backend, self.job_id
        if not isinstance(backend, OutputRetriever) or job_id is None:
            return "skip", "the backend does not return outputs"
        spec = self.spec
        with tempfile.TemporaryDirectory(prefix="intercede-ce-check-") as folder:
            try:
                manifest = await asyncio.wait_for(backend.fetch(job_id, spec, Path(folder)), self.timeout)
            except (IntercedeError, asyncio.TimeoutError) as exc:
                raise _Failed(f"fetching the job's outputs failed: {exc or 'no answer'}",
                              "check the job directory under root is readable and the transport can copy files"
                              ) from exc
            stdout = Path(folder) / spec.stdout
            text = stdout.read_text(errors="replace") if stdout.is_file() else ""
        if self.token not in text:
            raise _Failed(f"{spec.stdout} came back without the job's line (got {text[:80]!r}, "
                          f"missing {manifest.missing})",
                          "the job ran elsewhere than its directory, or the shared filesystem lags: check `root`")
        return "ok", f"{len(manifest.files)} file(s) came back; {spec.stdout} holds the job's line"

    async def _clean_up(self) -> tuple[Result, str]:
        backend, job_id = self.backend, self.job_id
        if not isinstance(backend, Purgeable) or job_id is None:
            return "skip", "nothing to clean up"
        try:
            (outcome,) = await asyncio.wait_for(backend.purge([job_id]), self.timeout)
        except (IntercedeError, asyncio.TimeoutError) as exc:
            raise _Failed(f"purge failed: {exc or 'no answer'}", f"remove the job's directory under "
                                                                 f"{self._where_jobs} by hand") from exc
        if not outcome.ok:
            raise _Failed(f"purge of {job_id} refused: {outcome.detail}",
                          f"remove the job's directory under {self._where_jobs} by hand")
        self.purged = True
        return "ok", f"job {job_id} purged"


def _auth_hint(transport: Transport) -> str:
    if isinstance(transport, SSHTransport):
        e = transport.endpoint
        keys = ", ".join(str(k) for k in e.client_keys)
        return (f"the server refused the key ({keys}): add its public key to ~{e.username}/.ssh/authorized_keys on "
                f"{e.host}, or correct `username`/`client_keys` in the config")
    return "check the credentials in the config"


def describe(config: CEConfigBase) -> str:
    """One line saying what a CE is: ``slurm over ssh``, ``htcondor pool cm.example.org:9618``, ..."""
    if isinstance(config, BatchConfig):
        return f"{config.scheduler} over {config.transport}"
    if isinstance(config, HTCondorConfig):
        return f"htcondor schedd of pool {config.pool}"
    if isinstance(config, HTCondorCEConfig):
        return f"htcondor-ce {config.ce}:{config.port}"
    return _kind(config)


def credential_options(config: CEConfigBase) -> tuple[Mapping[str, Any], str]:
    """The options that may name credential files, and the TOML table they are written in."""
    if isinstance(config, BatchConfig):
        return config.transport_options.model_dump(exclude={"transport"}), "[ce.transport_options]"
    return config.model_dump(exclude={"kind", "name"}), "its [[ce]] entry"


def credential_files(options: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Path]]:
    """(option name, path) for every credential file named in ``options``: ``client_keys``, ``known_hosts``,
    ``proxy`` and any option ending in ``_file``, at any depth (``endpoint``, ``jump``, ...)."""
    for name, value in options.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, Mapping):
            yield from credential_files(value, f"{dotted}.")
        elif name == "client_keys" and isinstance(value, list | tuple):
            yield from ((dotted, Path(str(v))) for v in value)
        elif (name in ("known_hosts", "proxy") or name.endswith("_file")) and isinstance(value, str | os.PathLike):
            yield dotted, Path(value)


def _kind(config: CEConfigBase) -> str:
    return str(getattr(config, "kind", type(config).__name__))
