"""What the client costs on top of Slurm: trivial jobs submitted and tracked to the end, three clients side by side.

Run from the repository root::

    .venv/bin/python -m benchmarks.slurm_overhead [--jobs 200,500] [--rounds 1] [--poll 0.5] [--no-doc]

Starts one Slurm 24.11 stack (``stacks/slurm``) with ``--cpus`` (16) slots and MinJobAge ``--min-job-age`` (10 s), so
that trivial jobs drain about as fast as slurmd can start them and the client's own costs show, and one local Ray
instance with the intercede service on it (started, and warmed up with one job, before anything is timed; it stays up,
idle, while the other modes run, so every mode shares the same background). Then, for each size and round, the modes
one after the other, each on its own SSH connection (opened before the clock starts), each waiting for an empty queue
first:

* **raw**: what a naive client does: a sequential loop of ``sbatch --parsable --wrap=true``, then one
  ``squeue --states=all --jobs=<ids not yet done>`` every ``--poll`` seconds until every job is listed in a terminal
  state or has left the queue (Slurm drops only finished jobs); hand-written argv over one
  :class:`~intercede.backends.transports.ssh.SSHTransport`.
* **library**: :class:`~intercede.backends.batch.BatchBackend` (SSHTransport + SlurmScheduler, their defaults: 8
  submits at once): every job submitted at once with ``asyncio.gather`` (one command per job: staging and ``sbatch``
  in one ``sh -s``), then ``status`` of the ids not yet terminal every ``--poll`` seconds.
* **service**: ``Intercede.start(Settings.embedded(...))`` with a Slurm CE over SSH added (its defaults, but
  ``poll_interval`` = ``--poll`` like the other two): the jobs declared, then ``wait`` (terminal, its default 0.5 s).
  Its submit phase is when every key has a job id (``rows_of`` asked every 0.2 s by the benchmark).

Per mode: seconds until every job was submitted (the submit phase) and until the client knew every job was done
(all-known-done), and what reached the resource meanwhile, counted there: SSH sessions (sshd's log), and the
controller's ``REQUEST_SUBMIT_BATCH_JOB`` and job-info RPCs (``sdiag``); and the client's CPU seconds (this process
and every process it started, the Ray instance included, for every mode alike: :func:`client_cpu`). Prints the
table, ``ratio:`` lines (client / raw, medians) and the run's load average, and writes them into
``docs/benchmarks.md`` under its heading.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import ray

from benchmarks import _report
from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest
from intercede.actors.settings import Settings
from intercede.backends.batch import BatchBackend
from intercede.backends.registry import CEConfig
from intercede.backends.schedulers.slurm import STATES, SlurmScheduler
from intercede.backends.transports.ssh import SSHEndpoint, SSHTransport
from intercede.model import JobSpec
from stacks import harness
from stacks.slurm_stack import SlurmStack, slurm_stack

HEADING = "## Slurm overhead (benchmarks/slurm_overhead.py)"
RAW_DIR = "/home/tester/bench-raw"
ROOT = "/home/tester/bench-intercede"
CE = "slurm"
TRUE = JobSpec(executable="/bin/true")
MODES = ("raw", "library", "service")
_RPC = re.compile(r"^\s*(REQUEST_[A-Z_]+)\s+\(\s*\d+\)\s+count:(\d+)", re.M)


def endpoint(stack: SlurmStack) -> SSHEndpoint:
    return SSHEndpoint(host=stack.host, port=stack.port, username=stack.username, client_keys=[stack.client_key],
                       known_hosts=stack.known_hosts)


@dataclass(frozen=True)
class Counts:
    """What reached the resource so far: SSH command sessions, sbatch RPCs and job-info (squeue) RPCs."""

    sessions: int
    submits: int
    job_info: int

    @staticmethod
    def read(stack: SlurmStack) -> Counts:
        sessions = int(stack.check("grep -c 'Starting session: command' /var/log/sshd.log || true").strip() or 0)
        rpcs = {name: int(n) for name, n in _RPC.findall(stack.check(["sdiag"]))}
        return Counts(sessions, rpcs.get("REQUEST_SUBMIT_BATCH_JOB", 0),
                      sum(n for name, n in rpcs.items() if name.startswith("REQUEST_JOB_INFO")))

    def __sub__(self, other: Counts) -> Counts:
        return Counts(self.sessions - other.sessions, self.submits - other.submits, self.job_info - other.job_info)


_TICK = os.sysconf("SC_CLK_TCK")


def client_cpu() -> float:
    """CPU seconds used so far by this process and every process it started (the local Ray instance: raylet, GCS,
    the actors' workers), children that exited included: the client side of every mode, measured the same way."""
    parent: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue  # it exited meanwhile
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        used[pid] = sum(int(x) for x in fields[11:15]) / _TICK  # utime stime cutime cstime
    me = os.getpid()

    def mine(pid: int) -> bool:
        while pid > 1:
            if pid == me:
                return True
            pid = parent.get(pid, 0)
        return False

    return sum(seconds for pid, seconds in used.items() if mine(pid))


@dataclass(frozen=True)
class Run:
    """One mode's run: seconds to the end of the submit phase and to all-known-done, its status polls, and what
    reached the resource during the submit phase and in all."""

    mode: str
    jobs: int
    submitted: float
    done: float
    polls: int
    submit_counts: Counts
    counts: Counts
    cpu: float = 0.0  # client_cpu() during the run


# -- raw -----------------------------------------------------------------------------------------------------------

def _squeue_states(text: str) -> dict[str, str]:
    """``JobID|State`` lines -> id -> state."""
    states = {}
    for line in text.splitlines():
        job_id, sep, state = line.partition("|")
        if sep:
            states[job_id.strip()] = state.strip()
    return states


async def raw(stack: SlurmStack, jobs: int, poll: float) -> Run:
    async with SSHTransport(endpoint(stack)) as transport:
        (await transport.run(["mkdir", "-p", RAW_DIR])).check()  # connects: not timed
        before = Counts.read(stack)
        start = time.perf_counter()
        ids = []
        for i in range(jobs):
            result = await transport.run(["sbatch", "--parsable", f"--job-name=raw-{i}", f"--chdir={RAW_DIR}",
                                          "--wrap=true"])
            ids.append(result.check().text.strip().split(";")[0])
        submitted = time.perf_counter() - start
        mid = Counts.read(stack)  # between the phases; its time is not counted
        resumed = time.perf_counter()
        pending, polls, bad = list(ids), 0, []
        while pending:
            polls += 1
            result = await transport.run(["squeue", "--noheader", "--states=all", f"--jobs={','.join(pending)}",
                                          "--format=%i|%T"])
            if not result.ok and "Invalid job id" in result.stderr.decode():
                states: dict[str, str] = {}  # the one id left has left the queue
            else:
                states = _squeue_states(result.check().text)
            bad += [s for s in states.values() if _terminal(s) and s != "COMPLETED"]
            pending = [i for i in pending if i in states and not _terminal(states[i])]
            if pending:
                await asyncio.sleep(poll)
        done = submitted + time.perf_counter() - resumed
        assert not bad, f"raw jobs did not all complete: {bad[:5]}"
    after = Counts.read(stack)
    return Run("raw", jobs, submitted, done, polls, mid - before, after - before)


def _terminal(state: str) -> bool:
    return state in STATES and STATES[state].is_terminal


# -- library -------------------------------------------------------------------------------------------------------

async def library(stack: SlurmStack, jobs: int, poll: float) -> Run:
    async with BatchBackend(SSHTransport(endpoint(stack)), SlurmScheduler(), ROOT) as backend:
        (await backend.transport.run(["true"])).check()  # connects: not timed
        before = Counts.read(stack)
        start = time.perf_counter()
        results = await asyncio.gather(*(backend.submit(TRUE) for _ in range(jobs)))
        submitted = time.perf_counter() - start
        mid = Counts.read(stack)  # nothing else runs between the submit phase and the first poll here
        ids = [job_id for r in results for job_id in r.job_ids]
        assert len(ids) == jobs, [s.error for r in results for s in r.submissions if not s.ok][:5]
        resumed = time.perf_counter()
        pending, polls = list(ids), 0
        while pending:
            polls += 1
            statuses = await backend.status(pending)
            bad = [s for s in statuses if s.state.is_terminal and s.exit_code != 0]
            assert not bad, f"intercede jobs failed: {bad[:3]}"
            pending = [s.job_id for s in statuses if not s.state.is_terminal]
            if pending:
                await asyncio.sleep(poll)
        done = submitted + time.perf_counter() - resumed  # the counter read between the phases is not counted
        transport = backend.transport
        assert isinstance(transport, SSHTransport) and transport.connections_opened == 1
        after = Counts.read(stack)
        await backend.purge(ids)
    return Run("library", jobs, submitted, done, polls, mid - before, after - before)


# -- service -------------------------------------------------------------------------------------------------------

def service_settings(stack: SlurmStack, data_dir: Path, poll: float) -> Settings:
    """The embedded settings with a Slurm CE over SSH added (its defaults but ``poll_interval``)."""
    base = Settings.embedded(data_dir)
    ep = endpoint(stack)
    slurm = CEConfig(name=CE, scheduler="slurm", root=f"{ROOT}-service", transport="ssh",
                     transport_options={"endpoint": {"host": ep.host, "port": ep.port, "username": ep.username,
                                                     "client_keys": [str(k) for k in ep.client_keys],
                                                     "known_hosts": str(ep.known_hosts)}},
                     poll_interval=poll)
    return Settings.model_validate(base.model_dump() | {
        "ce": [*(c.model_dump() for c in base.ce), slurm.model_dump()],
        "namespace": f"intercede-bench-{os.getpid()}"})


async def service(ic: Intercede, stack: SlurmStack, jobs: int, label: str) -> Run:
    keys = [f"{label}-{i:04d}" for i in range(jobs)]
    requests = [JobRequest(k, CE, TRUE) for k in keys]
    before = Counts.read(stack)
    start = time.perf_counter()
    await ic.declare(requests, progress=False)

    async def all_submitted() -> tuple[float, Counts]:
        while True:
            rows = await ic.rows_of(keys)
            if all(r.job_id for r in rows):
                return time.perf_counter() - start, await asyncio.to_thread(Counts.read, stack)
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(all_submitted())
    rows = await ic.wait(keys, timeout=3600, progress=False)
    done = time.perf_counter() - start
    submitted, mid = await watcher
    after = Counts.read(stack)
    bad = [r for r in rows if r.state != "Done" or r.exit_code != 0]
    assert not bad, f"service jobs did not all end Done: {bad[:3]}"
    return Run("service", jobs, submitted, done, 0, mid - before, after - before)


async def warm_up(ic: Intercede) -> None:
    """One job through the service, so its CE actor is connected and every path has run once."""
    key = f"warm-{uuid.uuid4().hex[:8]}"
    await ic.declare([JobRequest(key, CE, TRUE)], progress=False)
    (row,) = await ic.wait([key], timeout=300, progress=False)
    assert row.state == "Done", row


def queue_empty(stack: SlurmStack, timeout: float = 600.0) -> None:
    """Wait until tester has no job in the queue that is not finished."""
    harness.wait_for(lambda: not stack.check(["squeue", "--noheader", "--me", "--format=%i"],
                                             user=stack.username).strip(), "the queue to drain", timeout)


# -- report --------------------------------------------------------------------------------------------------------

def _label(mode: str, poll: float) -> str:
    return {"raw": f"raw: sequential `sbatch --wrap` loop, then `squeue` every {poll:g} s",
            "library": f"library: `BatchBackend.submit` x N (gather, 8 at once), then `status` every {poll:g} s",
            "service": f"service: `declare` N keys, then `wait` (CE poll_interval {poll:g} s)"}[mode]


def table(runs: list[Run], poll: float) -> str:
    lines = ["| mode | jobs | rounds | submit phase s | all known done s | submit: SSH commands per job | "
             "submit: sbatch RPCs | whole run: SSH commands | whole run: squeue RPCs | client CPU s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for jobs in sorted({r.jobs for r in runs}):
        for mode in MODES:
            mine = [r for r in runs if r.mode == mode and r.jobs == jobs]
            if not mine:
                continue
            sub = statistics.median(r.submitted for r in mine)
            done = statistics.median(r.done for r in mine)
            last = mine[-1]
            per_job = f"{last.submit_counts.sessions / jobs:.2f}"
            submits = str(last.submit_counts.submits)
            lines.append(f"| {_label(mode, poll)} | {jobs} | {len(mine)} | {_range(mine, 'submitted', sub)} | "
                         f"{_range(mine, 'done', done)} | {per_job} | {submits} | {last.counts.sessions} | "
                         f"{last.counts.job_info} | {statistics.median(r.cpu for r in mine):.1f} |")
    return "\n".join(lines)


def _range(runs: list[Run], field: str, median: float) -> str:
    values = [getattr(r, field) for r in runs]
    return f"{median:.2f}" if len(values) == 1 else f"{median:.2f} ({min(values):.2f} to {max(values):.2f})"


def ratios(runs: list[Run]) -> list[str]:
    lines = []
    for jobs in sorted({r.jobs for r in runs}):
        raw_runs = [r for r in runs if r.mode == "raw" and r.jobs == jobs]
        raw_sub = statistics.median(r.submitted for r in raw_runs)
        raw_done = statistics.median(r.done for r in raw_runs)
        for mode in MODES[1:]:
            mine = [r for r in runs if r.mode == mode and r.jobs == jobs]
            if mine:
                lines.append(f"ratio: {mode} / raw, {jobs} jobs: all known done "
                             f"{statistics.median(r.done for r in mine) / raw_done:.2f}, submit phase "
                             f"{statistics.median(r.submitted for r in mine) / raw_sub:.2f}")
    return lines


def machine(stack: SlurmStack, cpus: int, min_job_age: int) -> str:
    return (f"{_report.machine()}, asyncssh {asyncssh.__version__}, Ray {ray.__version__}; Slurm {stack.version} "
            f"(stacks/slurm on {stack.suite}: one node, {cpus} CPUs, MinJobAge {min_job_age} s, slurmdbd "
            "accounting) reached over SSH on 127.0.0.1")


async def measure(stack: SlurmStack, sizes: list[int], rounds: int, poll: float, settings: Settings) -> list[Run]:
    ic = Intercede.start(settings, address="local")
    await warm_up(ic)
    runs: list[Run] = []
    for jobs in sizes:
        for r in range(rounds):
            for mode in MODES:
                queue_empty(stack)
                cpu = client_cpu()
                if mode == "raw":
                    run = await raw(stack, jobs, poll)
                elif mode == "library":
                    run = await library(stack, jobs, poll)
                else:
                    run = await service(ic, stack, jobs, f"n{jobs}-r{r}")
                run = dataclasses.replace(run, cpu=client_cpu() - cpu)
                runs.append(run)
                print(f"{jobs} jobs, round {r + 1}, {mode}: submitted after {run.submitted:.2f} s, all known done "
                      f"after {run.done:.2f} s; client CPU {run.cpu:.1f} s; submit phase {run.submit_counts}, "
                      f"whole run {run.counts}", flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="200,500", help="comma-separated sizes")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between status queries (every mode)")
    parser.add_argument("--cpus", type=int, default=16)
    parser.add_argument("--min-job-age", type=int, default=10)
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    sizes = [int(s) for s in args.jobs.split(",") if s]
    harness.engine()
    with slurm_stack("24.11", cpus=args.cpus, min_job_age=args.min_job_age) as stack, \
            tempfile.TemporaryDirectory(prefix="intercede-bench-") as data_dir:
        try:
            load_start = os.getloadavg()[0]
            runs = asyncio.run(measure(stack, sizes, args.rounds, args.poll,
                                       service_settings(stack, Path(data_dir), args.poll)))
            load_end = os.getloadavg()[0]
        finally:
            ray.shutdown()
        where = machine(stack, args.cpus, args.min_job_age)
    result = table(runs, args.poll)
    figures = "\n".join(["```", *ratios(runs), "```", "",
                         f"Load average (1 min) of this machine: {load_start:.1f} at the start, {load_end:.1f} at "
                         "the end."])
    print(result)
    print(figures)
    if args.no_doc:
        return
    command = " ".join([".venv/bin/python -m benchmarks.slurm_overhead", *sys.argv[1:]])
    today = datetime.date.today().isoformat()
    _report.write_section(HEADING, f"Measured {today} on {where}. Command: `{command}` (from the repository "
                                   f"root).\n\n{result}\n\n{figures}")
    print(f"written to {_report.DOC}")


if __name__ == "__main__":
    main()
