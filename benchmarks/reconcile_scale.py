"""How the reconciler scales: the cost of one diff tick against the number of jobs, and 1,000 jobs end to end.

Run from the repository root::

    .venv/bin/python -m benchmarks.reconcile_scale [--sizes 10000,100000,1000000] [--jobs 1000] [--repeat 3]

(It replaces ``benchmarks/reconcile_diff.py``, whose measurement is part (i).)

**(i) One diff tick** for 10k / 100k / 1M desired jobs over 100 CEs, 1% of them changed per tick. A tick diffs only
the keys that changed (the dirty set) plus those whose backoff expired, so its cost must follow churn, not the number
of jobs. Measured: ``ReconcileState.plan`` (take the due keys, diff them, keep deferred keys dirty); the changes
themselves (status observations folded in between ticks) are applied outside the timing. Each figure is the median of
9 ticks. ``full diff ms`` is a plain ``diff`` over every key, for contrast, and the second table holds the churn fixed
at 1,000 keys per tick while the total grows a hundredfold.

**(ii) End to end on the local CE**: ``--jobs`` jobs running ``/bin/true``, each declared with phase COLLECTED
(``Intercede.start(Settings.embedded(tmp))`` on a fresh local Ray instance; the ReconcilerActor submits, the CEActor
polls, the outputs are fetched, verified, journaled, and the remote directories purged) until ``wait(until=
"collected")`` returns, against the raw backend path: ``BatchBackend(LocalTransport, DirectScheduler)`` doing submit
(``--concurrency`` at a time) -> one ``status`` for every unfinished id every ``--poll`` seconds -> fetch
(``--concurrency`` at a time) -> one bulk ``purge``. Ray's start-up is not timed; the declare calls are. The two
paths alternate for ``--repeat`` rounds and the medians are compared.

Prints both tables, ``ratio: N`` (intercede median / raw backend median) and the growth factors and load average of
this run, and writes exactly that (with the method text) into ``docs/benchmarks.md`` under its own heading, leaving any
other section alone. Analyses of where the time goes (profiles, other settings) are prose in that file's notes, which
no script writes.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import os
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pydantic
import ray

from benchmarks import _report
from benchmarks.churn import report as churn_report
from benchmarks.churn import tracking as churn_tracking
from benchmarks.churn import waiting as churn_waiting
from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest
from intercede.actors.settings import Settings
from intercede.backends.batch import BatchBackend
from intercede.backends.schedulers.direct import DirectScheduler
from intercede.backends.transports.local import LocalTransport
from intercede.model import JobSpec, JobState, JobStatus
from intercede.reconcile import Desired, Phase, Progress, ReconcileState, RetryPolicy, diff

HEADING = "## Reconciler scale (benchmarks/reconcile_scale.py)"


# ---- (i) one diff tick

CES = [f"ce{i:03d}" for i in range(100)]
SPEC = JobSpec(executable="/bin/true")
NOW = 1_700_000_000.0
TICKS = 9
FIXED_CHURN = 1000
DIFF_TEXT = (
    "A tick diffs only the keys that changed (the dirty set) plus those whose backoff ended; this measures whether "
    "its cost follows churn rather than the number of jobs. Measured: `ReconcileState.plan` (take the due keys, diff "
    f"them, keep deferred keys dirty) over {len(CES)} CEs, median of {TICKS} ticks, with 1% of the keys changed before "
    "each tick (new statuses, some jobs ending, a few phase changes; applied outside the timing). `full diff ms` is a "
    f"plain `diff` over every key, for contrast. The second table holds the churn at {FIXED_CHURN:,} changed keys (or "
    "every key, if fewer) while the total grows."
)


def build(n: int, rng: random.Random) -> ReconcileState:
    """n keys with a job each: mostly running, a fifth wanted collected, a tenth already cancelled, ended and purged
    (so no key is waiting on a clock: every key a tick diffs is one that changed)."""
    state = ReconcileState(RetryPolicy(submits_per_tick=100))
    for i in range(n):
        key = f"wms.{i:07d}"
        roll = rng.random()
        if roll < 0.2:
            desired = Desired(key, CES[i % len(CES)], SPEC, Phase.COLLECTED, Path("/out") / key)
        elif roll < 0.3:
            desired = Desired(key, CES[i % len(CES)], SPEC, Phase.CANCELLED)
        else:
            desired = Desired(key, CES[i % len(CES)], SPEC)
        cancelled = desired.phase is Phase.CANCELLED
        progress = Progress(job_id=str(i), submit_intent=True,
                            state=JobState.ABORTED if cancelled else JobState.RUNNING,
                            native_state="CA" if cancelled else "R", last_seen=NOW, purged=cancelled)
        state.put(desired, progress)
    state.due(NOW)  # start clean: the restart's first full tick is not what we measure
    return state


def churn(state: ReconcileState, keys: list[str], count: int, rng: random.Random, now: float) -> None:
    """Change ``count`` keys: most get a new status (some finish), a few get a new phase."""
    for key in rng.sample(keys, count):
        progress = state.progress[key]
        roll = rng.random()
        if roll < 0.05 and state.desired[key].phase is Phase.RUNNING:
            state.put(state.desired[key].with_phase(Phase.CANCELLED))
        elif roll < 0.5:
            status = JobStatus(job_id=progress.job_id or "", state=JobState.DONE, native_state="CD", exit_code=0)
            state.put_progress(key, progress.with_observation(status, now))
        else:
            status = JobStatus(job_id=progress.job_id or "", state=JobState.RUNNING, native_state=f"R{rng.random()}")
            state.put_progress(key, progress.with_observation(status, now))


def ticks(state: ReconcileState, keys: list[str], changed: int, rng: random.Random, now: float) -> tuple[float, int]:
    """Median seconds of TICKS ticks with ``changed`` keys changed before each, and the mean actions per tick."""
    samples, actions = [], 0
    for _ in range(TICKS):
        now += 10
        churn(state, keys, changed, rng, now)
        start = time.perf_counter()
        planned = state.plan(now)
        samples.append(time.perf_counter() - start)
        actions += len(planned.actions)
    return statistics.median(samples), actions // TICKS


def measure_diff(n: int, seed: int = 1) -> tuple[int, int, float, float, int, float]:
    """(jobs, changed, tick ms, full-diff ms, actions per tick, tick ms with FIXED_CHURN changed keys)."""
    rng = random.Random(seed)
    state = build(n, rng)
    keys = list(state.desired)
    changed = max(1, n // 100)
    # A million long-lived objects would make every full collection scan them all; the reconciler's actor would
    # freeze them the same way after loading its journal. We measure the diff, not the collector.
    gc.collect()
    gc.freeze()
    tick, actions = ticks(state, keys, changed, rng, NOW)
    fixed, _ = ticks(state, keys, min(FIXED_CHURN, n), rng, NOW + 1000)
    start = time.perf_counter()
    diff(state.desired, state.desired, state.progress, state.reachable, NOW + 2000, state.policy)
    full = time.perf_counter() - start
    gc.unfreeze()
    return n, changed, tick * 1e3, full * 1e3, actions, fixed * 1e3


def _label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def diff_section(sizes: list[int]) -> str:
    rows = []
    for n in sizes:
        rows.append(measure_diff(n))
        jobs, changed, tick_ms, full_ms, _, fixed_ms = rows[-1]
        print(f"diff: {jobs} jobs, {changed} changed: tick {tick_ms:.2f} ms, full diff {full_ms:.1f} ms; "
              f"{min(FIXED_CHURN, jobs)} changed: tick {fixed_ms:.2f} ms", flush=True)
    lines = ["| jobs | changed per tick | tick ms | µs per changed key | actions per tick | full diff ms |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {jobs} | {changed} | {tick:.2f} | {tick * 1e3 / changed:.2f} | {actions} | {full:.1f} |"
              for jobs, changed, tick, full, actions, _ in rows]
    lines += ["", "| jobs | changed per tick | tick ms |", "|---:|---:|---:|"]
    lines += [f"| {jobs} | {min(FIXED_CHURN, jobs)} | {fixed:.2f} |" for jobs, _, _, _, _, fixed in rows]
    small, large = rows[0], rows[-1]
    if large[0] > small[0]:
        lines += ["", f"{_label(small[0])} -> {_label(large[0])} jobs (x{large[0] // small[0]}): at 1% churn the "
                  f"tick grew x{large[2] / small[2]:.1f}, with its churn (x{large[1] // small[1]} changed keys; per "
                  f"changed key x{(large[2] / large[1]) / (small[2] / small[1]):.1f}); at a fixed "
                  f"{min(FIXED_CHURN, small[0])} changed keys it grew x{large[5] / small[5]:.1f}; a full diff grew "
                  f"x{large[3] / small[3]:.1f}."]
    return "\n".join(lines)


# ---- (ii) end to end on the local CE

def job_spec() -> JobSpec:
    return JobSpec(executable="/bin/true")


def e2e_settings(data_dir: Path, tick: float, poll: float, in_flight: int, ces: int = 1) -> Settings:
    """The embedded settings with ``ces`` local CEs (``local``, ``local-2``, ...), each with its own job root."""
    base = Settings.embedded(data_dir)
    first = base.ce[0]
    configs = [first.model_copy(update={"name": "local" if i == 0 else f"local-{i + 1}", "poll_interval": poll,
                                        "max_in_flight": in_flight,
                                        "root": first.root if i == 0 else f"{first.root}-{i + 1}"}).model_dump()
               for i in range(ces)]
    return Settings.model_validate(base.model_dump() | {"tick_interval": tick, "ce": configs,
                                                        "namespace": f"intercede-bench-{os.getpid()}"})


@dataclass(frozen=True)
class Through:
    """One run through intercede: seconds to all collected, seconds of the declares, the reconciler actor's
    resident memory before the declares and once every key is collected, and its journal's size."""

    elapsed: float
    declared: float
    rss_before: int
    rss_after: int
    journal_bytes: int


async def through_intercede(settings: Settings, jobs: int) -> Through:
    """From the first declare until every key is collected (Ray and the actors already running); keys are spread
    round-robin over the settings' CEs."""
    ic = Intercede.start(settings, address="local")
    before = await ic.stats()  # the actors exist and answer: start-up is not what we measure
    outputs = settings.data_dir / "outputs"
    names = [c.name for c in settings.ce]
    requests = [JobRequest(f"bench-{i:05d}", names[i % len(names)], job_spec(), Phase.COLLECTED,
                           outputs / f"bench-{i:05d}") for i in range(jobs)]
    start = time.perf_counter()
    for i in range(0, jobs, 5000):
        await ic.declare(requests[i:i + 5000], progress=False)
    declared = time.perf_counter() - start
    rows = await ic.wait([r.key for r in requests], until="collected", timeout=3600, progress=False)
    elapsed = time.perf_counter() - start
    after = await ic.stats()
    bad = [r for r in rows if r.state != "Done" or r.permanent_error or not r.collected]
    assert not bad, f"{len(bad)} keys did not end Done and collected: {bad[:2]}"
    assert all((outputs / r.key / "stdout.txt").is_file() for r in rows)
    return Through(elapsed, declared, before["rss_bytes"], after["rss_bytes"], _check_leftovers(settings))


def _check_leftovers(settings: Settings) -> int:
    """Assert every job directory was purged; the journal's bytes on disk."""
    for ce in settings.ce:
        root = Path(ce.root)  # type: ignore[attr-defined]
        assert not root.exists() or not any(root.iterdir()), "purged job directories are left"
    return sum(f.stat().st_size for f in settings.data_dir.glob("journal.sqlite*"))


async def raw_backend(root: Path, jobs: int, concurrency: int, poll: float) -> float:
    """Seconds for submit -> poll until terminal -> fetch -> purge of ``jobs`` jobs through the backend alone."""
    backend = BatchBackend(LocalTransport(), DirectScheduler(str(root / "jobs")), str(root / "jobs"),
                           concurrency=concurrency)
    spec = job_spec()
    limit = asyncio.Semaphore(concurrency)
    outputs = root / "outputs"

    async def submit() -> str:
        async with limit:
            (job_id,) = (await backend.submit(spec)).job_ids
            return job_id

    async def fetch(i: int, job_id: str) -> None:
        async with limit:
            await backend.fetch(job_id, spec, outputs / f"raw-{i:05d}")

    start = time.perf_counter()
    ids = await asyncio.gather(*(submit() for _ in range(jobs)))
    pending = list(ids)
    while pending:
        statuses = await backend.status(pending)
        assert all(s.state is not JobState.FAILED for s in statuses)
        pending = [s.job_id for s in statuses if not s.state.is_terminal]
        if pending:
            await asyncio.sleep(poll)
    await asyncio.gather(*(fetch(i, job_id) for i, job_id in enumerate(ids)))
    assert all(o.ok for o in await backend.purge(ids))
    elapsed = time.perf_counter() - start
    assert not any((root / "jobs").iterdir()), "purged job directories are left"
    return elapsed


@dataclass(frozen=True)
class EndToEnd:
    """The end-to-end settings, and the seconds of each repetition."""

    jobs: int
    tick: float
    poll: float
    in_flight: int
    concurrency: int
    raw: list[float] = field(default_factory=list)
    intercede: list[float] = field(default_factory=list)
    declare: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.intercede) / statistics.median(self.raw)


async def e2e(run: EndToEnd, repeat: int) -> None:
    """``repeat`` rounds of raw then intercede, each on fresh directories (and a fresh Ray instance)."""
    for i in range(repeat):
        with tempfile.TemporaryDirectory(prefix="intercede-bench-raw-") as raw_dir:
            run.raw.append(await raw_backend(Path(raw_dir), run.jobs, run.concurrency, run.poll))
        with tempfile.TemporaryDirectory(prefix="intercede-bench-") as data_dir:
            try:
                through = await through_intercede(
                    e2e_settings(Path(data_dir), run.tick, run.poll, run.in_flight), run.jobs)
            finally:
                ray.shutdown()  # a local instance this process started: its detached actors go with it
        run.intercede.append(through.elapsed)
        run.declare.append(through.declared)
        print(f"e2e round {i + 1}: raw backend {run.raw[-1]:.2f} s, intercede {through.elapsed:.2f} s "
              f"(declare {through.declared:.2f} s)", flush=True)


def e2e_text(run: EndToEnd) -> str:
    """What the end-to-end rows measure (the method, from this run's arguments)."""
    return (
        f"{run.jobs} jobs running `/bin/true` on the local CE, collected. **intercede**: `Intercede.start(Settings."
        "embedded(tmp))` with the settings in the table on a fresh local Ray instance (its start-up not timed): a "
        "ReconcilerActor with its SQLite journal and one CEActor owning `BatchBackend(LocalTransport, "
        "DirectScheduler)`. Timed from the first `declare` (every key with phase COLLECTED and its own destination) "
        "until `wait(until=\"collected\")` (polling at its default 0.5 s) returns: each job submitted once, seen Done, "
        "its stdout/stderr fetched, verified (sha256) and journaled, its remote directory purged. **raw**: the same "
        f"backend driven directly in the benchmark's process: every submit ({run.concurrency} at a time), one "
        f"`status` for all unfinished ids every {run.poll:g} s, every fetch ({run.concurrency} at a time), one bulk "
        f"`purge`. {len(run.raw)} rounds alternating raw and intercede."
    )


def e2e_section(run: EndToEnd) -> str:
    def row(path: str, samples: list[float]) -> str:
        median = statistics.median(samples)
        return (f"| {path} | {run.jobs} | {median:.2f} | {min(samples):.2f} to {max(samples):.2f} | "
                f"{1000 * median / run.jobs:.1f} |")

    return "\n".join([
        "| path | jobs | median s | range s | per job ms |", "|---|---:|---:|---:|---:|",
        row(f"raw: BatchBackend(LocalTransport, DirectScheduler): submit, status every {run.poll:g} s, fetch, "
            f"purge; {run.concurrency} at a time", run.raw),
        row(f"intercede: declare (COLLECTED) -> wait(until=\"collected\"); tick_interval {run.tick:g} s, "
            f"poll_interval {run.poll:g} s, max_in_flight {run.in_flight}", run.intercede),
    ])


# ---- (iii) many jobs on several local CEs

def scale_text(jobs: int, ces: int) -> str:
    return (
        f"{jobs:,} jobs running `/bin/true`, spread round-robin over {ces} local CEs (each its own CEActor and "
        "`BatchBackend(LocalTransport, DirectScheduler)` with its own job root), declared COLLECTED and timed as "
        "above until `wait(until=\"collected\")` returns, once. Memory: the ReconcilerActor's resident set "
        "(`/proc/self/statm`, reported by `stats()`) before the declares and once every key is collected, per "
        "tracked key; the journal's size on disk (database and WAL) at the end."
    )


async def at_scale(jobs: int, ces: int, tick: float, poll: float, in_flight: int) -> Through:
    with tempfile.TemporaryDirectory(prefix="intercede-bench-scale-") as data_dir:
        settings = e2e_settings(Path(data_dir), tick, poll, in_flight, ces)
        try:
            through = await through_intercede(settings, jobs)
        finally:
            ray.shutdown()
    print(f"scale: {jobs} jobs on {ces} CEs: {through.elapsed:.1f} s", flush=True)
    return through


def scale_section(t: Through, args: argparse.Namespace, load_start: float) -> str:
    grown = t.rss_after - t.rss_before
    return "\n".join([
        "| jobs | CEs | max_in_flight per CE | s to all collected | jobs/s | declare s | reconciler RSS before MiB | "
        "after MiB | per tracked key KiB | journal MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {args.scale_jobs:,} | {args.scale_ces} | {args.in_flight} | {t.elapsed:.1f} | "
        f"{args.scale_jobs / t.elapsed:.0f} | {t.declared:.2f} | {t.rss_before / 2**20:.0f} | "
        f"{t.rss_after / 2**20:.0f} | {grown / args.scale_jobs / 1024:.1f} | {t.journal_bytes / 2**20:.1f} |",
        "",
        f"memory per tracked key: {grown / args.scale_jobs / 1024:.1f} KiB (resident growth of the reconciler "
        f"actor / keys; collected keys stay tracked). Load average (1 min): {load_start:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after.",
    ])


# ---- (iv) per-tick Ray traffic and wait, with 100k tracked keys (benchmarks/churn.py's measurements)

CHURN_TEXT = (
    "`benchmarks/churn.py`'s two measurements, run here at the scale of this page (in process, `LocalSeam`; every "
    "call the seam carries is pickled afterwards, outside the timings: the bytes Ray would ship). Tracking: a "
    "ReconcilerActor step (`observe`: the `changes` pull, the tracking deltas, and the fold of the reports and of "
    "the units' results in one journal transaction) with the given tracked job ids, 1% of them ending and as many "
    "new ones starting per tick. `wait`: a waiter over every key, 1% settling between two calls. *before* is the "
    "old shape of each call (whole list every tick; every row every call), *after* what runs now."
)


# ---- report

def machine() -> str:
    return (f"{_report.machine()}, Ray {ray.__version__}, "
            f"pydantic {pydantic.VERSION}, SQLite journal on the local disk")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="desired jobs per diff measurement")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs of the end-to-end run (0: skip it)")
    parser.add_argument("--tick", type=float, default=0.2, help="the reconciler's tick_interval (s)")
    parser.add_argument("--poll", type=float, default=0.5, help="the CE's poll_interval, and the raw path's (s)")
    parser.add_argument("--in-flight", type=int, default=32, help="each CE's max_in_flight")
    parser.add_argument("--scale-jobs", type=int, default=10_000, help="jobs of the 4-CE run (0: skip it)")
    parser.add_argument("--scale-ces", type=int, default=4, help="local CEs of that run")
    parser.add_argument("--churn-keys", type=int, default=100_000,
                        help="tracked keys of the churn measurement (0: skip it)")
    parser.add_argument("--concurrency", type=int, default=8, help="the raw path's submits/fetches at a time")
    parser.add_argument("--repeat", type=int, default=3, help="end-to-end rounds (raw, then intercede)")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    today = datetime.date.today().isoformat()
    command = " ".join([".venv/bin/python -m benchmarks.reconcile_scale", *sys.argv[1:]])
    body = [f"Measured {today} on {machine()}. Command: `{command}` (from the repository root)."]
    ran: set[str] = set()
    if sizes:
        ran.add("### One diff tick")
        body += ["### One diff tick", DIFF_TEXT, diff_section(sizes)]
        print(body[-1])
    if args.jobs:
        run = EndToEnd(args.jobs, args.tick, args.poll, args.in_flight, args.concurrency)
        load_start = os.getloadavg()[0]
        asyncio.run(e2e(run, args.repeat))
        ran.add("### End to end on the local CE")
        body += ["### End to end on the local CE", e2e_text(run), e2e_section(run),
                 f"ratio: {run.ratio:.2f} (intercede median / raw backend median, {args.repeat} rounds each). "
                 f"Declaring the {args.jobs} keys took {statistics.median(run.declare):.2f} s of intercede's "
                 f"total. Load average (1 min) of this machine: {load_start:.1f} before the first round, "
                 f"{os.getloadavg()[0]:.1f} after the last."]
        print(body[-2])
        print(body[-1])
    if args.scale_jobs:
        load_start = os.getloadavg()[0]
        scaled = asyncio.run(at_scale(args.scale_jobs, args.scale_ces, args.tick, args.poll, args.in_flight))
        ran.add("### Many jobs on several local CEs")
        body += ["### Many jobs on several local CEs", scale_text(args.scale_jobs, args.scale_ces),
                 scale_section(scaled, args, load_start)]
        print(body[-1])
    if args.churn_keys:
        with tempfile.TemporaryDirectory(prefix="intercede-bench-churn-") as tmp:
            followed = asyncio.run(churn_tracking(Path(tmp) / "t", args.churn_keys, 0.01, 9))
            waited = asyncio.run(churn_waiting(Path(tmp) / "w", args.churn_keys, 0.01, 9))
        ran.add("### Per-tick Ray traffic and `wait` at scale")
        body += ["### Per-tick Ray traffic and `wait` at scale", CHURN_TEXT,
                 churn_report(args.churn_keys, 0.01, 9, followed, waited)]
        print(body[-1])
    if not args.no_doc:
        _report.write_section(HEADING, "\n\n".join(_with_kept(body, ran)))
        print(f"written to {_report.DOC}")


KEPT = "(Kept from an earlier run of this script"


def _with_kept(body: list[str], ran: set[str]) -> list[str]:
    """``body``, with each part this run skipped taken over from the page's section as it stands (marked as kept),
    so a run of one part does not drop the others, and nothing is assembled by hand. Parts in the script's order."""
    text = _report.DOC.read_text() if _report.DOC.exists() else ""
    old: dict[str, str] = {}
    when = "an earlier date"
    if HEADING in text:
        start = text.index(HEADING) + len(HEADING)
        end = text.find("\n## ", start)
        section = text[start:end if end != -1 else None]
        if measured := re.search(r"^Measured (\S+) ", section.strip(), re.M):
            when = measured[1]
        for part in section.split("\n### ")[1:]:
            title, _, rest = part.partition("\n")
            old["### " + title.strip()] = rest.strip()
    out = [body[0]]
    for title in PARTS:
        if title in ran:
            at = body.index(title)
            following = [t for t in PARTS if t in ran and body.index(t) > at]
            out += body[at:body.index(following[0]) if following else None]
        elif title in old:
            kept = old[title] if old[title].startswith(KEPT) else \
                f"{KEPT}, measured {when}: this run skipped this part.)\n\n{old[title]}"
            out += [title, kept]
    return out


PARTS = ["### One diff tick", "### End to end on the local CE", "### Many jobs on several local CEs",
         "### Per-tick Ray traffic and `wait` at scale"]


if __name__ == "__main__":
    main()
