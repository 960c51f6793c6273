"""Native bulk submission: N copies of one spec through intercede next to a raw per-job submit loop, side by side.

Run from the repository root::

    .venv/bin/python -m benchmarks.bulk_submit [--copies 500] [--rounds 3] [--no-doc]

Starts one Slurm 24.11 stack (``stacks/slurm``, 16 CPUs) and one HTCondor 25.x pool (``stacks/condor``), each reached
over SSH on one :class:`~intercede.backends.transports.ssh.SSHTransport` per mode, and measures the submit phase only
(from the first command until every job id is known), rounds alternating raw and intercede:

* **Slurm raw**: a sequential loop of ``sbatch --parsable --wrap=true`` (one round trip per job);
* **Slurm intercede**: ONE ``BatchBackend.submit`` of a spec with N copies: one command that stages the N job
  directories (job script, tag, secrets) and runs one ``sbatch --array=0-<N-1>``;
* **HTCondor raw**: a sequential loop of N ``condor_submit -terse ... -queue 1``;
* **HTCondor intercede**: ONE ``BatchBackend.submit`` (HTCondorScheduler): one command staging the N directories and
  one ``condor_submit ... -queue N`` (one cluster);
* **HTCondor floor**: one hand-written ``condor_submit -terse ... -queue N`` of the raw loop's description (no
  staging, no per-proc attributes): what the schedd itself takes for one cluster of N (the CLI's jobs removed first);
* **HTCondor bindings**: ONE ``HTCondorBackend.submit``: N local sandboxes, one cluster with N procs from item data,
  one spool (measured once per round, for reference; it has no raw counterpart here).

After the CLI submit, one status query of its held copies two ways: ``BatchBackend.status`` (one ``condor_q`` with the
ids as one compact constraint) and ``condor_q`` given the job ids as arguments (how the CLI dialect asked before), with
how many held jobs each found.

Between rounds every job is removed (``scancel``/``condor_rm``). Prints the table and ``ratio:`` lines (raw median /
intercede median), the last one ``ratio: N`` for Slurm, and writes them into docs/benchmarks.md under its heading.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks import _report
from intercede.backends.batch import BatchBackend
from intercede.backends.htcondor import HTCondorBackend
from intercede.backends.schedulers.htcondor import HTCondorScheduler
from intercede.backends.schedulers.slurm import SlurmScheduler
from intercede.backends.transports.ssh import SSHEndpoint, SSHTransport
from intercede.model import Copy, JobSpec, Resources
from stacks import harness
from stacks.condor_stack import CondorStack
from stacks.condor_stack import start as start_condor
from stacks.slurm_stack import SlurmStack, slurm_stack

HEADING = "## Bulk submission (benchmarks/bulk_submit.py)"
RAW_DIR = "/home/tester/bench-raw"
ROOT = "/home/tester/bench-bulk"
_CONDOR_RAW = ["condor_submit", "-terse", "-append", "universe = vanilla", "-append", "executable = /bin/true",
               "-append", "should_transfer_files = NO", "-append", f"initialdir = {RAW_DIR}", "-append", "hold = true",
               "-queue", "1"]


def _slurm_endpoint(stack: SlurmStack) -> SSHEndpoint:
    return SSHEndpoint(host=stack.host, port=stack.port, username=stack.username, client_keys=[stack.client_key],
                       known_hosts=stack.known_hosts)


def _spec(copies: int) -> JobSpec:
    return JobSpec(executable="/bin/true", tag=f"bulk-{time.monotonic_ns()}",
                   copies=[Copy(variables={"COPY": str(i)}, secrets={"TOKEN": f"t{i}"}) for i in range(copies)])


async def _timed(call: Callable[[], Awaitable[int]]) -> float:
    start = time.perf_counter()
    submitted = await call()
    seconds = time.perf_counter() - start
    assert submitted > 0
    return seconds


async def slurm_round(stack: SlurmStack, copies: int) -> tuple[float, float]:
    async with SSHTransport(_slurm_endpoint(stack)) as transport:
        (await transport.run(["mkdir", "-p", RAW_DIR])).check()

        async def raw() -> int:
            for i in range(copies):
                (await transport.run(["sbatch", "--parsable", f"--job-name=raw-{i}", f"--chdir={RAW_DIR}",
                                      "--output=/dev/null", "--hold", "--wrap=true"])).check()
            return copies

        raw_s = await _timed(raw)
        (await transport.run(["scancel", "--me"])).check()
    async with BatchBackend(SSHTransport(_slurm_endpoint(stack)), SlurmScheduler(), ROOT) as backend:
        spec = _spec(copies).model_copy(update={"resources": _held()})

        async def bulk() -> int:
            result = await backend.submit(spec)
            assert not result.failures, result.failures[:2]
            return len(result.job_ids)

        bulk_s = await _timed(bulk)
        (await backend.transport.run(["scancel", "--me"])).check()
        (await backend.transport.run(["rm", "-rf", "--", ROOT])).check()
    return raw_s, bulk_s


def _held() -> Resources:
    return Resources(native=["--hold"])  # held: the measurement is the submit, not 500 jobs competing for the CPUs


@dataclass(frozen=True)
class StatusPoll:
    """One status query of the held CLI copies: seconds, and how many of them it found held."""

    seconds: float
    found: int


async def _status_polls(backend: BatchBackend, job_ids: list[str]) -> tuple[StatusPoll, StatusPoll]:
    """``BatchBackend.status`` of the held copies (one ``condor_q -constraint``), next to ``condor_q`` given their
    job ids as arguments (how the CLI dialect asked before)."""
    start = time.perf_counter()
    statuses = await backend.status(job_ids)
    ours = StatusPoll(time.perf_counter() - start, sum(s.native_state == "Held" for s in statuses))
    argv = ["condor_q", *(i.partition("@")[0] for i in job_ids), "-json", "-attributes", "ClusterId,ProcId,JobStatus"]
    start = time.perf_counter()
    text = (await backend.transport.run(argv)).check().text
    seconds = time.perf_counter() - start
    return ours, StatusPoll(seconds, len(json.loads(text)) if text.strip() else 0)


async def condor_round(stack: CondorStack, token: Path, staging: Path,
                       copies: int) -> tuple[float, float, float, tuple[StatusPoll, StatusPoll], float]:
    async with SSHTransport(stack.endpoint()) as transport:
        (await transport.run(["mkdir", "-p", RAW_DIR])).check()

        async def raw() -> int:
            for _ in range(copies):
                (await transport.run(_CONDOR_RAW)).check()
            return copies

        raw_s = await _timed(raw)
        (await transport.run(["condor_rm", "-all"])).check()
    async with BatchBackend(SSHTransport(stack.endpoint()), HTCondorScheduler(), ROOT) as backend:
        spec = _spec(copies).model_copy(update={"resources": _condor_held()})

        submitted: list[str] = []

        async def cli() -> int:
            result = await backend.submit(spec)
            assert not result.failures, result.failures[:2]
            submitted.extend(result.job_ids)
            return len(result.job_ids)

        cli_s = await _timed(cli)
        polls = await _status_polls(backend, submitted)
        (await backend.transport.run(["condor_rm", "-all"])).check()
        (await backend.transport.run(["rm", "-rf", "--", ROOT])).check()

        async def floor() -> int:  # the schedd's own cost of one cluster of N: no staging, no per-proc attributes
            (await backend.transport.run([*_CONDOR_RAW[:-1], str(copies)])).check()
            return copies

        floor_s = await _timed(floor)
        (await backend.transport.run(["condor_rm", "-all"])).check()
    # A 500-proc spooled submit can take longer than the default 60 s call deadline on a loaded 2-core machine.
    async with HTCondorBackend(stack.pool, token_file=token, staging=staging, name="bench",
                               call_timeout=600.0) as bindings:
        spec = _spec(copies)  # a spooled submit cannot be held (HTCondor refuses hold with spool); it runs /bin/true

        async def spooled() -> int:
            result = await bindings.submit(spec)
            assert not result.failures, result.failures[:2]
            return len(result.job_ids)

        bindings_s = await _timed(spooled)
    stack.exec("condor_rm -all", user="tester")
    return raw_s, cli_s, bindings_s, polls, floor_s


def _condor_held() -> Resources:
    return Resources(native=["hold = true"])


def table(rows: list[tuple[str, str, list[float]]], copies: int) -> str:
    lines = ["| resource | mode | jobs | median s | range s | per job ms | commands |",
             "|---|---|---:|---:|---:|---:|---|"]
    for resource, mode, samples in rows:
        med = statistics.median(samples)
        lines.append(f"| {resource} | {mode} | {copies} | {med:.2f} | {min(samples):.2f} to {max(samples):.2f} | "
                     f"{1000 * med / copies:.1f} | {_commands(mode, copies)} |")
    return "\n".join(lines)


def status_table(polls: list[tuple[StatusPoll, StatusPoll]], version: str, copies: int) -> str:
    """The status query of the held CLI copies, both forms (median seconds; jobs found in the last round)."""
    lines = [f"| HTCondor {version}: one status query of the {copies} held CLI copies | commands | median s | "
             "held jobs found |", "|---|---:|---:|---:|"]
    for k, what in enumerate([f"`BatchBackend.status` ({copies} ids as one compact `condor_q -constraint`)",
                              f"`condor_q` with the {copies} job ids as arguments (how the CLI dialect asked "
                              "before)"]):
        lines.append(f"| {what} | 1 | {statistics.median(p[k].seconds for p in polls):.2f} | {polls[-1][k].found} |")
    return "\n".join(lines)


def _commands(mode: str, copies: int) -> str:
    if mode.startswith("raw"):
        return f"{copies} (one per job)"
    if mode.startswith("floor"):
        return "1 (`condor_submit` only)"
    if mode.startswith("bindings"):
        return "1 submit + 1 spool (bindings)"
    return "1 (staging + one bulk submit)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    harness.engine()
    load_start = os.getloadavg()[0]
    slurm_raw: list[float] = []
    slurm_bulk: list[float] = []
    condor_raw: list[float] = []
    condor_cli: list[float] = []
    condor_bindings: list[float] = []
    condor_floor: list[float] = []
    status_polls: list[tuple[StatusPoll, StatusPoll]] = []
    with slurm_stack("24.11", cpus=16) as slurm:
        slurm_version = slurm.version
        for r in range(args.rounds):
            raw_s, bulk_s = asyncio.run(slurm_round(slurm, args.copies))
            slurm_raw.append(raw_s)
            slurm_bulk.append(bulk_s)
            print(f"slurm round {r}: raw {raw_s:.2f} s, intercede {bulk_s:.2f} s", flush=True)
    condor = start_condor("25", kind="condor")
    staging = Path(tempfile.mkdtemp(prefix="intercede-bench-staging-"))
    try:
        token = condor.token()
        condor_version = condor.exec("condor_version | head -1").stdout.split()[1]
        for r in range(args.rounds):
            raw_s, cli_s, bindings_s, polls, floor_s = asyncio.run(condor_round(condor, token, staging, args.copies))
            condor_floor.append(floor_s)
            status_polls.append(polls)
            condor_raw.append(raw_s)
            condor_cli.append(cli_s)
            condor_bindings.append(bindings_s)
            print(f"htcondor round {r}: raw {raw_s:.2f} s, CLI {cli_s:.2f} s, bindings {bindings_s:.2f} s, "
                  f"hand-written queue {args.copies} {floor_s:.2f} s",
                  flush=True)
    finally:
        condor.stop()
        shutil.rmtree(staging, ignore_errors=True)
    load_end = os.getloadavg()[0]
    n = args.copies
    rows = [
        (f"Slurm {slurm_version}", "raw: sequential `sbatch --parsable --wrap` loop", slurm_raw),
        (f"Slurm {slurm_version}", f"intercede: one `BatchBackend.submit` of {n} copies (job array)", slurm_bulk),
        (f"HTCondor {condor_version}", "raw: sequential `condor_submit -queue 1` loop", condor_raw),
        (f"HTCondor {condor_version}", f"intercede CLI: one `BatchBackend.submit` of {n} copies (`queue {n}`)",
         condor_cli),
        (f"HTCondor {condor_version}", f"floor: one hand-written `condor_submit -queue {n}` (no staging, no per-proc "
         "attributes)", condor_floor),
        (f"HTCondor {condor_version}", f"bindings: one `HTCondorBackend.submit` of {n} copies (one cluster, spooled)",
         condor_bindings),
    ]
    slurm_ratio = statistics.median(slurm_raw) / statistics.median(slurm_bulk)
    condor_ratio = statistics.median(condor_raw) / statistics.median(condor_cli)
    result = table(rows, n) + "\n\n" + status_table(status_polls, condor_version, n)
    figures = "\n".join([
        "```",
        f"ratio: HTCondor, raw condor_submit loop / intercede queue {n}: {condor_ratio:.1f}",
        f"ratio: HTCondor, raw condor_submit loop / bindings one cluster: "
        f"{statistics.median(condor_raw) / statistics.median(condor_bindings):.1f}",
        f"ratio: Slurm, raw sbatch loop / intercede job array: {slurm_ratio:.1f}",
        f"ratio: {slurm_ratio:.1f}",
        "```",
    ])
    where = (f"{_report.machine()}; Slurm {slurm_version} (stacks/slurm on trixie, 16 CPUs) and HTCondor "
             f"{condor_version} (stacks/condor on sid), each over SSH on 127.0.0.1; {args.rounds} rounds, raw and "
             f"intercede alternating; every job submitted held (the submit is measured, not the run); load average "
             f"(1 min) {load_start:.1f} at the start, {load_end:.1f} at the end")
    print(result)
    print(figures)
    if args.no_doc:
        return
    command = " ".join([".venv/bin/python -m benchmarks.bulk_submit", *sys.argv[1:]])
    today = datetime.date.today().isoformat()
    _report.write_section(HEADING, f"Measured {today} on {where}. Command: `{command}` (from the repository root)."
                                   f"\n\n{result}\n\n{figures}")
    print(f"written to {_report.DOC}")


if __name__ == "__main__":
    main()
