"""Costs that follow churn: what the reconciler sends its CE actors per tick, and what ``wait`` moves per call.

Run from the repository root::

    .venv/bin/python -m benchmarks.churn [--keys 100000] [--churn 0.01] [--ticks 9]

In process (:class:`LocalSeam`: the actors' classes called directly); every call the seam carries is recorded and its
arguments (or its answer) pickled afterwards, outside the timings: the bytes Ray would ship.

**(i) Tracking, per tick.** A ReconcilerActor over the embedded local CE whose tracked job ids are ``--keys``
synthetic ids (its ``tracked_job_ids`` is replaced; nothing is submitted, and the CE actor's poll loop is not started:
this measures the messages, not the resource); each tick ``--churn`` of them end and as many new ones start. *before*
is the old shape (the whole list to ``track_only`` every tick), *after* the deltas (``track`` / ``untrack``, only when
non-empty). The two alternate tick by tick in the same run; each figure is the median over ``--ticks`` ticks of each.
``bytes`` is what the step sent to the CE actor (the ``changes`` pull and the tracking calls), ``step ms`` the time of
``ReconcilerActor.observe`` (in process: no serialisation), ``pickle ms`` the time to pickle what it sent.

**(ii) ``wait`` over ``--keys`` keys.** A ReconcilerActor with ``--keys`` declared keys (never submitted: no tick
runs); between two calls ``--churn`` of them settle (cancelled before they had a job). *before* is the old
``wait``'s call, ``rows()`` (every row, filtered by the caller); *after* is ``settled_since`` (the keys that settled
since the last call) after one ``watch`` (which carries every key, once; shown on its own line). ``counts`` is what
``status`` and ``stats`` can ask instead of every row.

Prints the tables and ``ratio:`` lines, and writes them (with this method) into ``docs/benchmarks.md`` under its own
heading (``--no-doc``: print only).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import pickle
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import _report
from intercede.actors.reconciler import JobRequest, ReconcilerActor, ce_actor_name
from intercede.actors.seam import LocalSeam
from intercede.actors.settings import Settings
from intercede.model import JobSpec
from intercede.reconcile import Phase

HEADING = "## Costs that follow churn (benchmarks/churn.py)"


class MeasuringSeam(LocalSeam):
    """Records each call's method, arguments and answer; ``start`` (the CE actor's poll loop) is not run."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[Any, ...], Any]] = []

    async def call(self, handle: Any, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        result = None if method == "start" else await super().call(handle, method, *args, timeout=timeout, **kwargs)
        self.calls.append((method, args, result))
        return result


def _size(obj: object) -> int:
    return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _pickle_seconds(objs: Sequence[object]) -> float:
    start = time.perf_counter()
    for obj in objs:
        pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return time.perf_counter() - start


async def tracking(data_dir: Path, keys: int, churn: float, ticks: int) -> dict[str, dict[str, float]]:
    seam = MeasuringSeam()
    actor = ReconcilerActor(Settings.embedded(data_dir), seam=seam, start=False)
    wanted = {f"{i}@bench" for i in range(keys)}
    actor.reconciler.tracked_job_ids = lambda ce: list(wanted)  # type: ignore[method-assign]
    handle = seam.actors[ce_actor_name("local")]
    new_shape = actor._tell_tracking

    async def old_shape(name: str, h: Any, *, resync: bool) -> None:
        await seam.call(h, "track_only", actor.reconciler.tracked_job_ids(name))  # what every step sent before
        actor._told[name] = set(wanted)  # so the next delta is against what the CE actor holds

    await actor.observe()  # the first step: a new epoch, the whole set
    first = sum(_size(a) for _, a, _ in seam.calls)
    rng = random.Random(9)
    next_id = keys
    n = max(1, round(keys * churn))
    samples: dict[str, dict[str, list[float]]] = {s: {"bytes": [], "step": [], "pickle": [], "ids": []}
                                                  for s in ("before", "after")}
    for _ in range(ticks):
        for shape in ("before", "after"):
            for gone in rng.sample(sorted(wanted), n):
                wanted.discard(gone)
            wanted.update(f"{i}@bench" for i in range(next_id, next_id + n))
            next_id += n
            actor._tell_tracking = old_shape if shape == "before" else new_shape  # type: ignore[method-assign,assignment]
            seam.calls.clear()
            start = time.perf_counter()
            await actor.observe()
            step = time.perf_counter() - start
            sent = [a for _, a, _ in seam.calls]
            samples[shape]["step"].append(step)
            samples[shape]["bytes"].append(sum(_size(a) for a in sent))
            samples[shape]["pickle"].append(_pickle_seconds(sent))
            samples[shape]["ids"].append(sum(len(a[0]) for m, a, _ in seam.calls if m.startswith(("track", "un"))))
    assert set(handle._tracked) == wanted, "the CE actor's tracked set drifted from the reconciler's"
    actor._tell_tracking = new_shape  # type: ignore[method-assign]
    actor.close()
    result = {shape: {k: statistics.median(v) for k, v in s.items()} for shape, s in samples.items()}
    result["first"] = {"bytes": first}
    return result


async def waiting(data_dir: Path, keys: int, churn: float, ticks: int) -> dict[str, dict[str, float]]:
    actor = ReconcilerActor(Settings.embedded(data_dir), seam=LocalSeam(), start=False)
    names = [f"key-{i:07d}" for i in range(keys)]
    spec = JobSpec(executable="/bin/true")
    for i in range(0, keys, 5000):
        await actor.declare([JobRequest(k, "local", spec) for k in names[i:i + 5000]])
    start = time.perf_counter()
    watch_id, done = await actor.watch(names)
    watch = {"rows": len(names), "bytes": _size((names, "terminal")) + _size((watch_id, done)),
             "ms": time.perf_counter() - start}
    rng = random.Random(9)
    unsettled = list(names)
    rng.shuffle(unsettled)
    n = max(1, round(keys * churn))
    samples: dict[str, dict[str, list[float]]] = {s: {"rows": [], "bytes": [], "ms": []}
                                                  for s in ("before", "after", "counts")}
    for _ in range(ticks):
        settle, unsettled = unsettled[:n], unsettled[n:]
        await actor.cancel(settle)  # cancelled before they had a job: settled
        start = time.perf_counter()
        rows = await actor.rows()
        samples["before"]["ms"].append(time.perf_counter() - start)
        samples["before"]["rows"].append(len(rows))
        samples["before"]["bytes"].append(_size(rows))
        start = time.perf_counter()
        answer = await actor.settled_since(watch_id)
        samples["after"]["ms"].append(time.perf_counter() - start)
        assert answer is not None and sorted(answer) == sorted(settle), "the watch missed keys that settled"
        samples["after"]["rows"].append(len(answer))
        samples["after"]["bytes"].append(_size((watch_id,)) + _size(answer))
        start = time.perf_counter()
        counts = await actor.counts()
        samples["counts"]["ms"].append(time.perf_counter() - start)
        samples["counts"]["rows"].append(len(counts))
        samples["counts"]["bytes"].append(_size(counts))
        assert sum(c[3] for c in counts if c[2] == Phase.CANCELLED.value) == keys - len(unsettled)
    actor.close()
    result = {shape: {k: statistics.median(v) for k, v in s.items()} for shape, s in samples.items()}
    result["watch"] = watch
    return result


def _kb(b: float) -> str:
    return f"{b / 1024:,.1f}"


def report(keys: int, churn: float, ticks: int, t: dict[str, dict[str, float]],
           w: dict[str, dict[str, float]]) -> str:
    lines = [f"{keys:,} tracked keys on one CE, {churn:.1%} churn per tick, median of {ticks} ticks per shape.", "",
             "| tracking per tick | ids sent | KiB sent | step ms | pickle ms |", "|---|---:|---:|---:|---:|"]
    for shape, label in (("before", "before: whole list (`track_only`)"), ("after", "after: deltas")):
        m = t[shape]
        lines.append(f"| {label} | {m['ids']:,.0f} | {_kb(m['bytes'])} | {m['step'] * 1e3:.1f} | "
                     f"{m['pickle'] * 1e3:.2f} |")
    lines += [f"| first step (a new CE actor epoch: the whole set) | {keys:,} | {_kb(t['first']['bytes'])} | | |",
              "", f"`wait` over {keys:,} keys, {churn:.1%} of them settling between two calls:", "",
              "| per call | rows moved | KiB moved | ms |", "|---|---:|---:|---:|"]
    for shape, label in (("before", "before: `rows()` (every row)"), ("after", "after: `settled_since`"),
                         ("counts", "`counts()` (for status, stats)")):
        m = w[shape]
        lines.append(f"| {label} | {m['rows']:,.0f} | {_kb(m['bytes'])} | {m['ms'] * 1e3:.1f} |")
    lines.append(f"| once per wait: `watch` (every key, once) | {w['watch']['rows']:,.0f} | "
                 f"{_kb(w['watch']['bytes'])} | {w['watch']['ms'] * 1e3:.1f} |")
    lines += ["", "```",
              f"ratio: tracking bytes per tick, before / after: {t['before']['bytes'] / t['after']['bytes']:.1f}",
              f"ratio: tracking step time, before / after: {t['before']['step'] / t['after']['step']:.2f}",
              f"ratio: wait bytes per call, before / after: {w['before']['bytes'] / w['after']['bytes']:.1f}",
              f"ratio: wait rows per call, before / after: {w['before']['rows'] / max(1, w['after']['rows']):.1f}",
              f"ratio: wait call time, before / after: {w['before']['ms'] / w['after']['ms']:.2f}",
              "```"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--churn", type=float, default=0.01, help="fraction of the keys changing per tick")
    parser.add_argument("--ticks", type=int, default=9)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        t = asyncio.run(tracking(Path(tmp) / "t", args.keys, args.churn, args.ticks))
        w = asyncio.run(waiting(Path(tmp) / "w", args.keys, args.churn, args.ticks))
    body = report(args.keys, args.churn, args.ticks, t, w)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    text = f"{body}\n\n{_report.machine()}; {stamp}; load average {load}."
    print(text)
    if not args.no_doc:
        method = __doc__.split("\n\n", 3)[3].rsplit("\n\nPrints", 1)[0]
        _report.write_section(HEADING, f"{method}\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
