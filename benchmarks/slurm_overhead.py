"""What intercede's composed Slurm path costs next to a naive client: 500 short jobs submitted and tracked to the end.

Run from the repository root::

    .venv/bin/python -m benchmarks.slurm_overhead [--jobs 500] [--version 24.11]

Starts one Slurm stack (``stacks/slurm``: one node, 4 CPUs, so most of the 500 jobs queue) and measures, one after
the other on it, each mode on its own fresh SSH connection (the connect is included in its total):

* **raw**: what a naive client does. A sequential loop of ``sbatch --parsable --wrap=true`` (Slurm writes one
  ``slurm-<id>.out`` per job), then ONE ``sacct`` for all ids, repeated every ``--poll`` seconds until every job is
  terminal; all over one :class:`~intercede.backends.transports.ssh.SSHTransport` with hand-written argv.
* **intercede**: :class:`~intercede.backends.batch.BatchBackend` (SSHTransport + SlurmScheduler). Every job is
  submitted at once with ``asyncio.gather`` (the backend stages ``concurrency`` = 8 at a time); then ``status`` for
  every id not yet terminal, every ``--poll`` seconds. Per job it does more than the raw loop: a private working
  directory, a generated job script, the tag file, stdout/stderr files and an exit-code file, i.e. one extra remote
  command (``sh -c`` mkdir + write the script + write the tag) before each ``sbatch``.

Then the cost of one status poll for the 500 finished ids (once Slurm has moved them all from the queue to
accounting): ``BatchBackend.status`` (one ``squeue`` + one ``sacct``) next to the raw ``sacct``, median of 5 calls.

Prints both tables, ``ratio: N`` (intercede total / raw total) and the figures derived from this run (jobs/s, the
submit phase's share of each total, the finished-ids poll against the raw ``sacct``, the machine's load average), and
writes exactly that into ``docs/benchmarks.md`` under its own heading, leaving any other section alone. What the
figures mean is prose in that file's notes, which no script writes.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import asyncssh

from benchmarks import _report
from intercede.backends.batch import BatchBackend
from intercede.backends.schedulers.slurm import STATES, SlurmScheduler
from intercede.backends.transports.ssh import SSHEndpoint, SSHTransport
from intercede.model import JobSpec, JobState, Resources
from stacks import harness
from stacks.slurm_stack import SlurmStack, slurm_stack

HEADING = "## Slurm overhead (benchmarks/slurm_overhead.py)"
RAW_DIR = "/home/tester/bench-raw"
ROOT = "/home/tester/bench-intercede"
SAMPLES = 5


def endpoint(stack: SlurmStack) -> SSHEndpoint:
    return SSHEndpoint(host=stack.host, port=stack.port, username=stack.username, client_keys=[stack.client_key],
                       known_hosts=stack.known_hosts)


def _sacct_states(text: str) -> dict[str, str]:
    """``JobID|State`` lines -> id -> the state's first word (``CANCELLED by 2000`` -> ``CANCELLED``)."""
    states = {}
    for line in text.splitlines():
        job_id, sep, state = line.partition("|")
        if sep:
            states[job_id.strip()] = state.split(" ", 1)[0].strip()
    return states


def _sacct_argv(ids: list[str]) -> list[str]:
    return ["sacct", "--noheader", "--parsable2", "--allocations", f"--jobs={','.join(ids)}", "--format=JobID,State"]


async def raw(stack: SlurmStack, jobs: int, poll: float) -> tuple[float, float, int]:
    """Seconds until every job was submitted, until every job was terminal, and how many status queries it took."""
    async with SSHTransport(endpoint(stack)) as transport:
        start = time.perf_counter()
        (await transport.run(["mkdir", "-p", RAW_DIR])).check()
        ids = []
        for i in range(jobs):
            result = await transport.run(["sbatch", "--parsable", f"--job-name=raw-{i}", f"--chdir={RAW_DIR}",
                                          "--wrap=true"])
            ids.append(result.check().text.strip().split(";")[0])
        submitted = time.perf_counter() - start
        queries = 0
        while True:
            queries += 1
            states = _sacct_states((await transport.run(_sacct_argv(ids))).check().text)
            if len(states) == len(ids) and all(s in STATES and STATES[s].is_terminal for s in states.values()):
                break
            await asyncio.sleep(poll)
        total = time.perf_counter() - start
        bad = [s for s in states.values() if s != "COMPLETED"]
        assert not bad, f"raw jobs did not all complete: {bad[:5]}"
        return submitted, total, queries


async def through_intercede(backend: BatchBackend, jobs: int, poll: float) -> tuple[float, float, int, list[str]]:
    """Like :func:`raw` through BatchBackend; also returns the job ids."""
    spec = JobSpec(executable="/bin/true")
    start = time.perf_counter()
    results = await asyncio.gather(*(backend.submit(spec) for _ in range(jobs)))
    ids = [job_id for r in results for job_id in r.job_ids]
    assert len(ids) == jobs, [s.error for r in results for s in r.submissions if not s.ok][:5]
    submitted = time.perf_counter() - start
    pending, polls = list(ids), 0
    while pending:
        polls += 1
        statuses = await backend.status(pending)
        bad = [s for s in statuses if s.state.is_terminal and s.exit_code != 0]
        assert not bad, f"intercede jobs failed: {bad[:3]}"
        pending = [s.job_id for s in statuses if not s.state.is_terminal]
        if pending:
            await asyncio.sleep(poll)
    return submitted, time.perf_counter() - start, polls, ids


async def median_seconds(call: Callable[[], Awaitable[object]]) -> float:
    samples = []
    for _ in range(SAMPLES):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


async def left_queue(backend: BatchBackend, ids: list[str], timeout: float = 120.0) -> None:
    """Wait until squeue lists none of ``ids`` (Slurm drops finished jobs after MinJobAge, 10 s on the stack)."""
    natives = [i.split("@")[0] for i in ids]
    deadline = time.monotonic() + timeout
    argv = ["squeue", "--noheader", "--states=all", f"--jobs={','.join(natives)}", "--format=%i"]
    while (await backend.transport.run(argv)).text.strip():
        if time.monotonic() > deadline:
            raise RuntimeError("finished jobs are still listed by squeue")
        await asyncio.sleep(1.0)


async def queued_poll(stack: SlurmStack, jobs: int) -> float:
    """Median seconds of ``BatchBackend.status`` for ``jobs`` held (PENDING) jobs: the common case, one squeue."""
    spec = JobSpec(executable="/bin/true", resources=Resources(native=["--hold"]))
    async with BatchBackend(SSHTransport(endpoint(stack)), SlurmScheduler(), ROOT) as backend:
        ids = [i for r in await asyncio.gather(*(backend.submit(spec) for _ in range(jobs))) for i in r.job_ids]
        assert len(ids) == jobs
        seconds = await median_seconds(lambda: backend.status(ids))
        assert all(s.state is JobState.WAITING for s in await backend.status(ids))
        assert all(o.ok for o in await backend.cancel(ids))
        await backend.purge(ids)
    return seconds


async def measure(stack: SlurmStack, jobs: int, poll: float) -> tuple[list[tuple[str, float, float, int]],
                                                                      list[tuple[str, float]]]:
    queued = await queued_poll(stack, jobs)
    raw_submit, raw_total, raw_queries = await raw(stack, jobs, poll)
    print(f"raw: submitted in {raw_submit:.1f} s, all terminal after {raw_total:.1f} s", flush=True)
    transport = SSHTransport(endpoint(stack))
    async with BatchBackend(transport, SlurmScheduler(), ROOT) as backend:
        ic_submit, ic_total, ic_polls, ids = await through_intercede(backend, jobs, poll)
        print(f"intercede: submitted in {ic_submit:.1f} s, all terminal after {ic_total:.1f} s", flush=True)
        assert transport.connections_opened == 1, "BatchBackend must have used one connection throughout"
        await left_queue(backend, ids)
        natives = [i.split("@")[0] for i in ids]
        status = await median_seconds(lambda: backend.status(ids))
        sacct = await median_seconds(lambda: transport.run(_sacct_argv(natives)))
        statuses = await backend.status(ids)
        assert all(s.state.is_terminal and s.exit_code == 0 for s in statuses), statuses[:3]
    rows = [(f"raw: sequential sbatch loop, then one sacct every {poll:g} s", raw_submit, raw_total, raw_queries),
            (f"intercede: BatchBackend.submit x{jobs} (gather), then status every {poll:g} s", ic_submit, ic_total,
             ic_polls)]
    polls = [(f"BatchBackend.status({jobs} held, PENDING ids): one squeue", queued),
             (f"BatchBackend.status({jobs} finished ids, gone from the queue): squeue + sacct", status),
             (f"raw sacct for {jobs} ids", sacct)]
    return rows, polls


def tables(rows: list[tuple[str, float, float, int]], polls: list[tuple[str, float]], jobs: int) -> str:
    lines = ["| mode | jobs | submitted after s | total s | per job ms | status queries |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {mode} | {jobs} | {submit:.1f} | {total:.1f} | {1000 * total / jobs:.1f} | {queries} |"
              for mode, submit, total, queries in rows]
    lines += ["", "| one status poll | median ms |", "|---|---:|"]
    lines += [f"| {what} | {1000 * seconds:.0f} |" for what, seconds in polls]
    return "\n".join(lines)


def machine(stack: SlurmStack) -> str:
    return (f"{_report.machine()}, "
            f"asyncssh {asyncssh.__version__}; Slurm {stack.version} (stacks/slurm on {stack.suite}: one node, "
            "4 CPUs, MinJobAge 10 s, slurmdbd accounting) reached over SSH on 127.0.0.1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--version", default="24.11")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between status queries (both modes)")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    harness.engine()
    with slurm_stack(args.version) as stack:
        load_start = os.getloadavg()[0]
        rows, polls = asyncio.run(measure(stack, args.jobs, args.poll))
        load = (load_start, os.getloadavg()[0])
        where = machine(stack)
    (_, raw_submit, raw_total, _), (_, ic_submit, ic_total, _) = rows
    ratio, submit_ratio = ic_total / raw_total, ic_submit / raw_submit
    (_, _), (_, finished_status), (_, raw_sacct) = polls
    result = tables(rows, polls, args.jobs)
    # Every figure below comes from this run; explanations of them are prose in docs/benchmarks.md, never printed.
    figures = (f"ratio: {ratio:.2f} (intercede total / raw total); submit phase alone: {submit_ratio:.2f}.\n\n"
               f"In this run: {args.jobs / raw_total:.2f} jobs/s end to end (raw) and {args.jobs / ic_total:.2f} "
               f"jobs/s (intercede); the submit phase was {raw_submit / raw_total:.0%} (raw) and "
               f"{ic_submit / ic_total:.0%} (intercede) of the total; a status poll of the finished ids through "
               f"BatchBackend took {finished_status / raw_sacct:.1f}x the raw sacct. Load average (1 min) of this "
               f"machine: {load[0]:.1f} at the start, {load[1]:.1f} at the end.")
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
