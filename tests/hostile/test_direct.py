"""Hostile payloads against Direct's cancel and purge, and the environment a Direct job starts with.

Cancel must signal only what the job itself started, whatever pid its id names; a payload that ignores SIGTERM is
killed after the grace and reported Aborted only once it is gone; processes that left the job's session die with
cancel and purge; a job sees a clean, documented environment. Real resources: this machine (LocalTransport) and the
sshd stack of the contract suite (SSHTransport), each checked at the resource through its own transport.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from intercede.backends.batch import BatchBackend
from intercede.backends.schedulers.direct import DirectScheduler
from intercede.backends.transports.local import LocalTransport
from intercede.backends.transports.ssh import SSHTransport
from intercede.model import JobSpec, JobState, JobStatus
from stacks.ssh_stack import SSHStack
from tests.contract.conftest import local_root, sshd_stack  # noqa: F401
from tests.contract.waiting import until_terminal

pytestmark = [pytest.mark.hostile, pytest.mark.direct]

GRACE = 3  # seconds between a cancel's SIGTERM and its SIGKILL, in these tests

# Exits 1 unless pid $1 is alive and not a zombie (a killed process stays a zombie until its parent reaps it).
_ALIVE = 'read -r s </proc/"$1"/stat 2>/dev/null || exit 1; s=${s##*") "}; case $s in Z*) exit 1;; esac'


def _local(root: Path) -> BatchBackend:
    return BatchBackend(LocalTransport(), DirectScheduler(str(root), kill_grace=GRACE), str(root), name="direct-local")


def _ssh(stack: SSHStack) -> BatchBackend:
    root = "/home/tester/jobs"
    return BatchBackend(SSHTransport(stack.endpoint()), DirectScheduler(root, kill_grace=GRACE), root,
                        name="direct-ssh")


BACKENDS: dict[str, tuple[str, Callable[[Any], BatchBackend]]] = {
    "direct-Local": ("local_root", _local),
    "direct-SSH": ("sshd_stack", _ssh),
}


@pytest.fixture(params=list(BACKENDS))
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[BatchBackend]:
    fixture, build = BACKENDS[request.param]
    async with build(request.getfixturevalue(fixture)) as be:
        yield be


class Resource:
    """Commands run where the jobs run, through the backend's own transport; processes it started are ended."""

    def __init__(self, backend: BatchBackend) -> None:
        self.backend = backend
        self.started: list[int] = []
        self.jobs: list[str] = []

    async def submit(self, script: str) -> str:
        """Submit ``/bin/sh -c script``; the job is purged at the end of the test, whatever happens."""
        spec = JobSpec(executable="/bin/sh", arguments=["-c", script])
        (job_id,) = (await self.backend.submit(spec)).job_ids
        self.jobs.append(job_id)
        return job_id

    async def sh(self, script: str, *args: str) -> str:
        result = await self.backend.transport.run(["sh", "-c", script, "sh", *args], timeout=30)
        return result.check().text

    async def alive(self, pid: int) -> bool:
        result = await self.backend.transport.run(["sh", "-c", _ALIVE, "sh", str(pid)], timeout=30)
        return result.exit_status == 0

    async def bystander(self) -> int:
        """A process of the same user in its own session, that no job started."""
        pid = int(await self.sh("setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!"))
        self.started.append(pid)
        return pid

    async def read(self, job_id: str, name: str, timeout: float = 30.0) -> str:
        """The content of file ``name`` of the job, once the job has written it (ending with a newline)."""
        path = f"{self.backend.root}/{job_id.split('@')[1]}/{name}"
        deadline = time.monotonic() + timeout
        while (text := await self.sh('cat -- "$1" 2>/dev/null || :', path)).count("\n") < 1:
            assert time.monotonic() < deadline, f"{job_id} never wrote {name}"
            await asyncio.sleep(0.2)
        return text

    async def until_gone(self, pid: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while await self.alive(pid):
            assert time.monotonic() < deadline, f"process {pid} still alive after {timeout} s"
            await asyncio.sleep(0.2)

    async def end(self) -> None:
        await self.backend.purge(self.jobs)
        for pid in self.started:
            await self.backend.transport.run(["kill", "-KILL", str(pid)], timeout=30)


@pytest.fixture
async def resource(backend: BatchBackend) -> AsyncIterator[Resource]:
    res = Resource(backend)
    yield res
    await res.end()


async def test_cancel_never_signals_a_process_the_job_did_not_start_whatever_pid_its_id_names(
        backend: BatchBackend, resource: Resource, request: pytest.FixtureRequest) -> None:
    bystander = await resource.bystander()
    # The payload claims the bystander as its own, as a spoofed .pid (or a tag lookup reading it) would.
    job_id = await resource.submit(f"echo {bystander} >.pid; echo started >started; exec sleep 300")
    await resource.read(job_id, "started")
    uid = job_id.split("@")[1]
    never_pids = [f"0@{uid}", f"-{bystander}@{uid}", f"{bystander}x@{uid}"]
    forged = [f"{bystander}@{uid}", *never_pids]
    if "SSH" in request.node.callspec.id:  # `kill -TERM -1` here would hit every process of the user (root locally)
        forged.append(f"1@{uid}")
    outcomes = {o.job_id: o for o in await backend.cancel(forged)}
    assert await resource.alive(bystander), "a cancel signalled a process the job did not start"
    assert not any(outcomes[i].ok for i in never_pids), outcomes
    # The forged pid could not be signalled, but the job's own processes (found by their marker) were.
    (status,) = await until_terminal(backend, [job_id], timeout=GRACE + 30)
    assert status.state is JobState.ABORTED and await resource.alive(bystander)


async def test_a_payload_ignoring_sigterm_is_killed_after_the_grace_and_aborted_only_once_gone(
        backend: BatchBackend, resource: Resource) -> None:
    job_id = await resource.submit("trap '' TERM; echo $$ >payload.pid; exec sleep 300")
    payload = int(await resource.read(job_id, "payload.pid"))
    started = time.monotonic()
    (outcome,) = await backend.cancel([job_id])
    assert outcome.ok and time.monotonic() - started < GRACE, "cancel waited for the escalation"
    seen: list[JobStatus] = []
    while not (seen and seen[-1].state.is_terminal):
        assert time.monotonic() - started < GRACE + 30, f"never terminal: {seen[-1:]}"
        (status,) = await backend.status([job_id])
        alive = await resource.alive(payload)
        assert not (status.state.is_terminal and alive), f"reported {status.state} while the payload runs"
        seen.append(status)
        await asyncio.sleep(0.2)
    assert seen[0].state is JobState.RUNNING and seen[-1].state is JobState.ABORTED
    assert time.monotonic() - started >= GRACE - 0.5, "the payload ignored SIGTERM: only SIGKILL can have ended it"


async def test_processes_that_left_the_jobs_session_end_with_cancel_and_with_purge(
        backend: BatchBackend, resource: Resource) -> None:
    escape = "setsid sh -c 'echo $$ >escaped.pid; exec sleep 300' </dev/null >/dev/null 2>&1 &"
    running = await resource.submit(f"{escape} exec sleep 300")
    finished = await resource.submit(f"{escape} exit 0")
    escaped = {j: int(await resource.read(j, "escaped.pid")) for j in (running, finished)}
    await backend.cancel([running])
    (status,) = await until_terminal(backend, [running], timeout=GRACE + 30)
    assert status.state is JobState.ABORTED
    assert not await resource.alive(escaped[running]), "Aborted reported while a process of the job runs"
    (status,) = await until_terminal(backend, [finished], timeout=30)
    assert status.state is JobState.DONE and await resource.alive(escaped[finished])  # not ours to end: it finished
    await backend.purge([running, finished])
    await resource.until_gone(escaped[finished])
    assert await resource.sh('[ -e "$1" ] && echo left || echo removed',
                             f"{backend.root}/{finished.split('@')[1]}") == "removed\n"


async def test_a_job_starts_in_a_clean_documented_environment(
        backend: BatchBackend, resource: Resource, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERCEDE_PROBE_SERVICE_ONLY", "leaked")  # the service's own environment (Local)
    job_id = await resource.submit("/bin/cat /proc/$$/environ >env; echo done >started")
    (status,) = await until_terminal(backend, [job_id], timeout=30)
    assert status.state is JobState.DONE
    block = (await backend.transport.run(["cat", f"{backend.root}/{job_id.split('@')[1]}/env"], timeout=30))
    env = dict(e.split(b"=", 1) for e in block.check().stdout.split(b"\0")[:-1])
    names = {n.decode() for n in env}
    required = {"HOME", "USER", "LOGNAME", "PATH", "LANG", "PWD", "INTERCEDE_JOB"}
    assert required <= names <= required | {"TMPDIR"}, names
    user = (await resource.sh("id -un")).strip()
    assert (env[b"PATH"], env[b"LANG"], env[b"USER"], env[b"INTERCEDE_JOB"]) == (
        b"/usr/local/bin:/usr/bin:/bin", b"C.UTF-8", user.encode(), job_id.split("@")[1].encode())
