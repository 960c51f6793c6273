"""How long one reconciler tick takes to plan, for 10k / 100k / 1M desired jobs over 100 CEs, 1% changing per tick.

A tick diffs only the keys that changed (the dirty set) plus those whose backoff expired, so its cost should follow
churn, not the number of jobs. Run: ``python -m benchmarks.reconcile_diff [--sizes 10000,100000,1000000]``.

Measured: ``ReconcileState.plan`` (take the due keys, diff them, keep deferred keys dirty); the changes themselves
(status observations folded in between ticks) are applied outside the timing. ``full ms`` is a plain ``diff`` over
every key, for contrast. Each figure is the median of several ticks.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from pathlib import Path

from intercede.model import JobSpec, JobState, JobStatus
from intercede.reconcile import Desired, Phase, Progress, ReconcileState, RetryPolicy, diff

CES = [f"ce{i:03d}" for i in range(100)]
SPEC = JobSpec(executable="/bin/true")
NOW = 1_700_000_000.0
TICKS = 9


def build(n: int, rng: random.Random) -> ReconcileState:
    """n keys with a job each: mostly running, a fifth wanted collected, a tenth already cancelled and ended (so no
    key is waiting on a clock: every key a tick diffs is one that changed)."""
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
                            native_state="CA" if cancelled else "R", last_seen=NOW)
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


def measure(n: int, seed: int = 1) -> tuple[int, int, float, float, int]:
    rng = random.Random(seed)
    state = build(n, rng)
    keys = list(state.desired)
    changed = max(1, n // 100)
    # A million long-lived objects would make every full collection scan them all; the reconciler's actor would
    # freeze them the same way after loading its journal. We measure the diff, not the collector.
    gc.collect()
    gc.freeze()
    ticks, actions = [], 0
    now = NOW
    for _ in range(TICKS):
        now += 10
        churn(state, keys, changed, rng, now)
        start = time.perf_counter()
        planned = state.plan(now)
        ticks.append(time.perf_counter() - start)
        actions += len(planned.actions)
    start = time.perf_counter()
    diff(state.desired, state.desired, state.progress, state.reachable, now, state.policy)
    full = time.perf_counter() - start
    gc.unfreeze()
    return n, changed, statistics.median(ticks) * 1e3, full * 1e3, actions // TICKS


def _label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]
    print(f"{'jobs':>9} {'changed':>8} {'tick ms':>9} {'µs/changed key':>15} {'actions':>8} {'full ms':>9}")
    per_key: dict[int, float] = {}
    for n in sizes:
        jobs, changed, tick_ms, full_ms, actions = measure(n)
        per_key[n] = tick_ms * 1e3 / changed
        print(f"{jobs:>9} {changed:>8} {tick_ms:>9.2f} {per_key[n]:>15.2f} {actions:>8} {full_ms:>9.1f}", flush=True)
    smallest, largest = min(per_key), max(per_key)
    print(f"ratio {_label(largest)}/{_label(smallest)} per-changed-key: {per_key[largest] / per_key[smallest]:.2f} "
          f"(jobs x{largest // smallest}; tick time follows churn, not total)")


if __name__ == "__main__":
    main()
