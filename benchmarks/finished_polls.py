"""What finished jobs nobody collects cost the CE actor's status poll: jobs tracked and poll time, once they are done.

Run from the repository root::

    .venv/bin/python -m benchmarks.finished_polls [--jobs 2000]

Starts intercede on a fresh local Ray instance over the embedded local CE (``BatchBackend(LocalTransport,
DirectScheduler)``), declares ``--jobs`` jobs running ``/bin/true`` with phase RUNNING (nobody collects or forgets
them), and waits until every one is Done. Then it gives the reconciler ``--settle`` seconds (at least five poll
intervals) to tell the CE actor what to track, and measures the CE actor's status poll: the ids it still tracks, and
the median of 5 calls of its ``poll`` (one batched ``status`` for every tracked id), timed around the Ray call. For
contrast it then times ``BatchBackend.status`` for all the finished ids in this process: what each poll would cost if
the CE actor kept polling them.

Prints a table, and writes it into ``docs/benchmarks.md`` under its own heading (``--no-doc``: print only).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import ray

from benchmarks import _report
from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest, ce_actor_name
from intercede.actors.settings import Settings
from intercede.backends.batch import BatchBackend
from intercede.backends.schedulers.direct import DirectScheduler
from intercede.backends.transports.local import LocalTransport
from intercede.model import JobSpec

HEADING = "## Finished jobs and the status poll (benchmarks/finished_polls.py)"
SAMPLES = 5


async def median_seconds(call: Callable[[], Awaitable[object]]) -> float:
    samples = []
    for _ in range(SAMPLES):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


async def measure(data_dir: Path, jobs: int, poll: float, settle: float) -> dict[str, float]:
    base = Settings.embedded(data_dir)
    ce = base.ce[0].model_copy(update={"poll_interval": poll})
    settings = Settings.model_validate(base.model_dump() | {"tick_interval": 0.2, "ce": [ce.model_dump()],
                                                            "namespace": f"intercede-bench-{os.getpid()}"})
    ic = Intercede.start(settings, address="local")
    keys = [f"idle-{i:05d}" for i in range(jobs)]
    start = time.perf_counter()
    await ic.declare([JobRequest(k, "local", JobSpec(executable="/bin/true")) for k in keys], progress=False)
    rows = await ic.wait(keys, timeout=3600, progress=False)
    done = time.perf_counter() - start
    assert all(r.state == "Done" for r in rows), [r for r in rows if r.state != "Done"][:3]
    handle = ray.get_actor(ce_actor_name("local"), namespace=settings.namespace)
    for _ in range(max(1, round(settle / poll))):  # the reconciler untracks on its own schedule: look each poll
        if not (await ic.ce_health())[0].tracked:
            break
        await asyncio.sleep(poll)
    tracked = (await ic.ce_health())[0].tracked
    actor_poll = await median_seconds(lambda: handle.poll.remote())
    backend = BatchBackend(LocalTransport(), DirectScheduler(ce.root), ce.root)
    ids = [r.job_id for r in rows]
    all_ids = await median_seconds(lambda: backend.status(ids))
    return {"jobs": jobs, "done_after": done, "tracked": tracked, "actor_poll": actor_poll, "all_ids": all_ids}


def table(m: dict[str, float]) -> str:
    jobs = int(m["jobs"])
    return "\n".join([
        "| what | ids | median ms |", "|---|---:|---:|",
        f"| CE actor `poll` once all {jobs} jobs are Done and recorded (ids it still tracks) | {int(m['tracked'])} | "
        f"{1000 * m['actor_poll']:.1f} |",
        f"| `BatchBackend.status` of all {jobs} finished ids (a poll that kept them) | {jobs} | "
        f"{1000 * m['all_ids']:.1f} |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--poll", type=float, default=0.5, help="the CE's poll_interval (s)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds allowed for untracking (s)")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="intercede-bench-") as data_dir:
        try:
            m = asyncio.run(measure(Path(data_dir), args.jobs, args.poll, max(args.settle, 5 * args.poll)))
        finally:
            ray.shutdown()
    result = table(m)
    print(result)
    summary = (f"{args.jobs} jobs were Done {m['done_after']:.1f} s after the first declare; "
               f"{int(m['tracked'])} of their ids were still tracked by the CE actor after the settle time.")
    print(summary)
    if args.no_doc:
        return
    command = " ".join([".venv/bin/python -m benchmarks.finished_polls", *sys.argv[1:]])
    today = datetime.date.today().isoformat()
    _report.write_section(HEADING, f"Measured {today} on {_report.machine()}, Ray {ray.__version__}. Command: "
                                   f"`{command}` (from the repository root).\n\n{result}\n\n{summary}")
    print(f"written to {_report.DOC}")


if __name__ == "__main__":
    main()
