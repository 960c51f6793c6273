"""How fast the Slurm queue parser reads status lines: 1,000,000 recorded-format lines, pure (no resource).

Run from the repository root::

    .venv/bin/python -m benchmarks.status_parse [--lines 1000000] [--rounds 5] [--no-doc]

The lines are the ``squeue --format=%i|%T|%r`` lines recorded from Slurm 24.11 (``tests/data/slurm/24.11/
squeue_mixed.txt`` and ``squeue_final.txt``: every state and reason the recorder provoked), repeated with distinct
ids until there are ``--lines`` of them; half the ids are plain jobs, half array tasks (``<array>_<k>``), all wanted.
Measured side by side in one run, rounds alternating: ``SlurmScheduler.parse_status`` (the fast path,
:func:`~intercede.backends.schedulers.slurm.queue_states`) given all the lines in one answer, the same fast path given
them as ``BatchBackend.status`` does (one ``squeue`` answer per chunk of 500 ids, each parsed with its chunk's jobs),
and the checked per-line path it replaced (split and validate every line, one new status each: what ``parse_status``
did before). All must give the same answer.
Also counts the commands one ``BatchBackend.status`` issues for 10,000 ids on one CE (argv built, not run).
Times are CPU seconds of this process (``time.process_time``): the parse is pure CPU, and on a shared machine the
wall clock measures the other tenants. Prints the table and ``ratio:`` lines and writes them into docs/benchmarks.md
under its heading.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import _report
from intercede.backends.schedulers.base import BatchJob, NativeStatus
from intercede.backends.schedulers.slurm import SlurmScheduler, _split, _status
from intercede.backends.transports.base import CommandResult, chunks_within, quoted_size

HEADING = "## Status parse rate (benchmarks/status_parse.py)"
DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "slurm" / "24.11"
CHUNK = 500  # ids per squeue command in BatchBackend.status


def recorded_lines(count: int) -> tuple[bytes, list[BatchJob]]:
    """``count`` status lines in the recorded format, with distinct ids, and the jobs they name."""
    shapes = [line.split("|", 1)[1] for name in ("squeue_mixed.txt", "squeue_final.txt")
              for line in (DATA / name).read_text().splitlines() if line.strip()]
    ids = [str(100_000 + i) if i % 2 else f"{7_000 + i // 2000}_{i % 2000}" for i in range(count)]
    text = "".join(f"{job_id}|{shapes[i % len(shapes)]}\n" for i, job_id in enumerate(ids))
    return text.encode(), [BatchJob(i, "/w") for i in ids]


def checked_path(result: CommandResult, jobs: list[BatchJob]) -> dict[str, NativeStatus]:
    """The per-line parse ``parse_status`` did before the fast path (kept here to measure against)."""
    wanted = {j.native_id for j in jobs}
    found: dict[str, NativeStatus] = {}
    for line in result.text.splitlines():
        if not line.strip():
            continue
        job_id, state, reason = _split(result, line, 3)
        if job_id in wanted:
            found[job_id] = _status(state, reason)
    return found


def samples_of(rounds: int, parse: Callable[[CommandResult, list[BatchJob]], object], result: CommandResult,
            jobs: list[BatchJob]) -> list[float]:
    samples = []
    for _ in range(rounds):
        gc.collect()
        start = time.process_time()
        parse(result, jobs)
        samples.append(time.process_time() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    slurm = SlurmScheduler()
    text, jobs = recorded_lines(args.lines)
    result = CommandResult(("squeue",), 0, text, b"", 0.0)
    fast = slurm.parse_status(result, jobs)
    assert {k: (v.state, v.native_state, v.reason) for k, v in fast.items()} == \
        {k: (v.state, v.native_state, v.reason) for k, v in checked_path(result, jobs).items()}
    assert len(fast) == args.lines
    rows = text.split(b"\n")
    chunks = [(CommandResult(("squeue",), 0, b"\n".join(rows[i:i + CHUNK]) + b"\n", b"", 0.0), jobs[i:i + CHUNK])
              for i in range(0, args.lines, CHUNK)]

    def chunked(_result: CommandResult, _jobs: list[BatchJob]) -> None:
        for part, its_jobs in chunks:
            slurm.parse_status(part, its_jobs)

    fast_s: list[float] = []
    chunk_s: list[float] = []
    old_s: list[float] = []
    for _ in range(args.rounds):  # alternate, so a busy moment of the machine hits all three
        fast_s += samples_of(1, slurm.parse_status, result, jobs)
        chunk_s += samples_of(1, chunked, result, jobs)
        old_s += samples_of(1, checked_path, result, jobs)
    # 10,000 ids on one CE: 20 arrays of 500 tasks, then 10,000 plain job ids (chunked as BatchBackend does).
    tasks = [BatchJob(f"{9_000 + a}_{k}", f"/r/{a:012x}{k:04d}") for a in range(20) for k in range(500)]
    plain = [BatchJob(str(200_000 + i), f"/r/{i:016x}") for i in range(10_000)]
    commands = {}
    for label, group in (("20 job arrays of 500 tasks", tasks), ("10,000 single jobs", plain)):
        chunks = list(chunks_within(group, lambda j: quoted_size(j.native_id, j.workdir), max_items=500))
        argvs = [slurm.status_argv(c) for c in chunks]
        commands[label] = (len(argvs), max(len(" ".join(a)) for a in argvs))
    fast_med, chunk_med, old_med = (statistics.median(s) for s in (fast_s, chunk_s, old_s))

    def row(label: str, med: float, samples: list[float]) -> str:
        return (f"| {label} | {args.lines:,} | {med:.3f} | {min(samples):.3f} to {max(samples):.3f} "
                f"| {args.lines / med:,.0f} |")

    lines = ["| parser | lines | median CPU s | range CPU s | lines per CPU s |", "|---|---:|---:|---:|---:|",
             row("`SlurmScheduler.parse_status`, fast path, every line in one answer", fast_med, fast_s),
             row(f"the same, one answer per {CHUNK} ids (as `BatchBackend.status` asks)", chunk_med, chunk_s),
             row("checked per-line path (before the fast path)", old_med, old_s),
             "", "| `BatchBackend.status` of 10,000 ids on one CE | squeue commands | longest argv bytes |",
             "|---|---:|---:|"]
    lines += [f"| {label} | {n} | {size:,} |" for label, (n, size) in commands.items()]
    result_table = "\n".join(lines)
    figures = "\n".join(["```", f"ratio: fast / checked lines per second: {old_med / fast_med:.2f}",
                         f"ratio: {args.lines / fast_med / 1e6:.2f} (million lines per second, fast path, one answer)",
                         f"ratio: {args.lines / chunk_med / 1e6:.2f} (million lines per second, fast path, "
                         f"{CHUNK} ids per answer)", "```"])
    now = datetime.datetime.now(datetime.UTC)
    where = f"{_report.machine()}; {args.rounds} rounds, alternating; {now:%Y-%m-%d %H:%M} UTC"
    print(result_table)
    print(figures)
    if args.no_doc:
        return
    command = " ".join([".venv/bin/python -m benchmarks.status_parse", *sys.argv[1:]])
    _report.write_section(HEADING, f"Measured on {where}. Command: `{command}` (from the repository root).\n\n"
                                   f"{result_table}\n\n{figures}")
    print(f"written to {_report.DOC}")


if __name__ == "__main__":
    main()
