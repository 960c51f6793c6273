"""ARC REST throughput: intercede's ARCBackend versus pyarcrest's client driven the way aCT drives it.

Run from the repository root (pyarcrest is not a dependency; install it into the venv for this only)::

    .venv/bin/pip install pyarcrest==0.5 && .venv/bin/python -m benchmarks.arc_throughput [N] [release]

Starts one A-REX (default ARC 7.2, fork LRMS) and measures, same run, same CE, both clients authenticating with the
same proxy (pyarcrest without verifying the server certificate: it cannot; intercede verifying it):

* submit N jobs one POST per job — intercede: N concurrent ``submit`` calls on one backend (≤ 8 connections);
  pyarcrest: N sequential ``createJobs`` (its client is blocking, one connection);
* submit N jobs in bulk — intercede: one ``submit`` of N copies with ``instances=False`` (``ActivityDescriptions`` of
  ≤ 100 per POST); pyarcrest: one ``createJobs`` of an N-description bundle (what aCT does);
* submit N identical jobs with REST 1.1 ``instances=N`` — intercede only (its default for untagged identical copies;
  pyarcrest 0.5 has no such call, so its row compares with pyarcrest's bulk bundle);
* status of the N bulk jobs — intercede ``status`` (``info``, one round trip per 500 ids); pyarcrest
  ``getJobsInfo`` (also ``info``);
* fetch the stdout of the N bulk jobs once finished — intercede ``fetch`` (listing, HEAD, streamed GET, sha256),
  N concurrent; pyarcrest ``downloadFile`` N sequential (no listing, no bounds, no hash).

The jobs of the two submit-only rows (one POST per job, instances) are killed as soon as they are timed, for both
clients, so that A-REX runs only the two bulk sets (2 x N jobs) to the end on this 2-core machine.

Prints a table and ``ratio:`` lines (pyarcrest / intercede), and writes the table into docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks import _report
from intercede.backends.arc import ARCBackend, _adl
from intercede.model import JobSpec
from stacks import harness
from stacks.arc_stack import ARCStack, start

HEADING = "## ARC REST throughput (benchmarks/arc_throughput.py)"
SPEC = JobSpec(executable="/bin/echo", arguments=["hello"])


async def until_finished(be: ARCBackend, ids: list[str], stack: ARCStack, timeout: float = 1800) -> None:
    """Poll until every job is terminal; every 30 s, a profile line on stderr: the jobs per REST state and what is
    using the CPU in A-REX's container (its LRMS scripts, the info provider, arched)."""
    deadline = time.monotonic() + timeout
    shown = 0.0
    while time.monotonic() < deadline:
        statuses = await be.status(ids)
        if all(s.state.is_terminal for s in statuses):
            return
        if time.monotonic() - shown > 30:
            shown = time.monotonic()
            _progress(f"states {dict(Counter(s.native_state for s in statuses))}; in the CE: "
                      f"{await asyncio.to_thread(_busy, stack)}")
        await asyncio.sleep(2)
    raise RuntimeError("jobs not finished in time")


def _busy(stack: ARCStack) -> str:
    """What runs in A-REX's container now: processes per command name (A-REX's LRMS scripts and helpers are
    short-lived, so a snapshot shows where it is), and the CPU time arched has used so far."""
    running: Counter[str] = Counter()
    arched = 0
    for row in stack.exec("ps -eo comm=,time=").stdout.splitlines():
        parts = row.split()
        if len(parts) != 2:
            continue
        running[parts[0]] += 1
        if parts[0] == "arched":
            h, m, sec = (int(x) for x in parts[1].split("-")[-1].split(":"))
            arched += 3600 * h + 60 * m + sec
    return ", ".join(f"{name} x{k}" for name, k in running.most_common(5)) + f"; arched CPU {arched} s"


async def intercede(stack: ARCStack, n: int, out: Path) -> tuple[dict[str, float], list[str]]:
    t: dict[str, float] = {}
    arc = {"ca_file": stack.ca_file, "proxy_file": stack.proxy_file, "delegate": False}
    async with ARCBackend(stack.url, **arc) as be, ARCBackend(stack.url, instances=False, **arc) as bundles:
        for client in (be, bundles):  # connection + version negotiation, as pyarcrest's getClient does
            await client.status(["abcdef123456"])
        t0 = time.perf_counter()
        single = await asyncio.gather(*(be.submit(SPEC) for _ in range(n)))
        t["submit, one POST per job"] = time.perf_counter() - t0
        _progress(f"intercede: submit, one POST per job {t['submit, one POST per job']:.2f} s")
        single_ids = [j for r in single for j in r.job_ids]
        await be.cancel(single_ids)
        t0 = time.perf_counter()
        bulk = await bundles.submit(SPEC.model_copy(update={"copies": SPEC.copies * n}))
        t["submit, bulk"] = time.perf_counter() - t0
        _progress(f"intercede: submit, bulk {t['submit, bulk']:.2f} s")
        t0 = time.perf_counter()
        copies = await be.submit(SPEC.model_copy(update={"copies": SPEC.copies * n}))
        t["submit, instances=N"] = time.perf_counter() - t0
        _progress(f"intercede: submit, instances=N {t['submit, instances=N']:.2f} s")
        await be.cancel(copies.job_ids)
        ids = bulk.job_ids
        assert len(ids) == n and len(single_ids) == n and len(copies.job_ids) == n
        t0 = time.perf_counter()
        await be.status(ids)
        t["status of all"] = time.perf_counter() - t0
        _progress(f"intercede: status of all {t['status of all']:.2f} s")
        t0 = time.perf_counter()
        await until_finished(be, ids, stack)
        _progress(f"intercede: {n} bulk jobs finished {time.perf_counter() - t0:.0f} s after the status call")
        t0 = time.perf_counter()
        await asyncio.gather(*(be.fetch(i, SPEC, out / i) for i in ids))
        t["fetch stdout of all"] = time.perf_counter() - t0
        _progress(f"intercede: fetch stdout of all {t['fetch stdout of all']:.2f} s")
        await be.purge(ids + single_ids + copies.job_ids)
    return t, ids


def pyarcrest_run(stack: ARCStack, n: int, out: Path) -> tuple[dict[str, float], list[str]]:
    from pyarcrest.arc import ARCRest

    t: dict[str, float] = {}
    client = ARCRest.getClient(url=stack.url.removesuffix("/arex"), proxypath=str(stack.proxy_file))
    desc = _adl.plan(SPEC, 0).xml
    t0 = time.perf_counter()
    single = [client.createJobs(desc) for _ in range(n)]
    t["submit, one POST per job"] = time.perf_counter() - t0
    _progress(f"pyarcrest: submit, one POST per job {t['submit, one POST per job']:.2f} s")
    single_ids = [r[0].value[0] for r in single]
    client.killJobs(single_ids)
    t0 = time.perf_counter()
    bulk = client.createJobs(_adl.bundle([desc] * n))
    t["submit, bulk"] = time.perf_counter() - t0
    _progress(f"pyarcrest: submit, bulk {t['submit, bulk']:.2f} s")
    t["submit, instances=N"] = t["submit, bulk"]  # pyarcrest 0.5 has no instances: its bulk bundle is its answer
    ids = [r.value[0] for r in bulk]
    t0 = time.perf_counter()
    client.getJobsInfo(ids)
    t["status of all"] = time.perf_counter() - t0
    _progress(f"pyarcrest: status of all {t['status of all']:.2f} s")
    t0 = time.perf_counter()
    deadline = time.monotonic() + 1800
    while any(r.value not in ("FINISHED", "FAILED", "KILLED") for r in client.getJobsStatus(ids)):
        if time.monotonic() > deadline:
            raise RuntimeError("pyarcrest's jobs not finished in time")
        time.sleep(2)
    _progress(f"pyarcrest: {n} bulk jobs finished {time.perf_counter() - t0:.0f} s after the status call")
    t0 = time.perf_counter()
    for i in ids:
        client.downloadFile(i, "stdout.txt", str(out / f"{i}.txt"))
    t["fetch stdout of all"] = time.perf_counter() - t0
    _progress(f"pyarcrest: fetch stdout of all {t['fetch stdout of all']:.2f} s")
    deadline = time.monotonic() + 300
    while any(r.value not in ("FINISHED", "FAILED", "KILLED") for r in client.getJobsStatus(single_ids)):
        if time.monotonic() > deadline:
            break
        time.sleep(2)
    client.cleanJobs(ids + single_ids)
    client.close()
    return t, ids


def _progress(what: str) -> None:
    print(f"[bench] {what} (load average {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    release = sys.argv[2] if len(sys.argv) > 2 else "7.2"
    harness.engine()
    load_before = os.getloadavg()[0]
    stack = start(release)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ours, _ = asyncio.run(intercede(stack, n, Path(tmp) / "intercede"))
            load_between = os.getloadavg()[0]
            (Path(tmp) / "pyarcrest").mkdir()
            theirs, _ = pyarcrest_run(stack, n, Path(tmp) / "pyarcrest")
    finally:
        stack.stop()
    load = f"load average {load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after"
    rows = [f"| {k} | {ours[k]:.2f} | {theirs[k]:.2f} | {theirs[k] / ours[k]:.1f} |" for k in ours]
    table = "\n".join([f"| N = {n} jobs, ARC {stack.version} | intercede (s) | pyarcrest (s) | pyarcrest / intercede |",
                       "|---|---|---|---|", *rows])
    print(table)
    print(load)
    for k in ours:
        print(f"ratio: {k}: {theirs[k] / ours[k]:.1f}")
    today = datetime.date.today().isoformat()
    _report.write_section(HEADING, f"Measured {today} on {_report.machine()} ({load}), one A-REX (fork LRMS) "
                          f"in a container, both clients in the same run on the same CE.\n\n{table}\n\n"
                          "intercede verifies TLS, "
                          "hashes every fetched file and checks bounds; pyarcrest does none of these. The "
                          "one-POST-per-job figures are concurrent for intercede (async, ≤ 8 connections) and "
                          "sequential for pyarcrest (a blocking client), as each is meant to be driven. pyarcrest "
                          "0.5 has no `instances` call: its instances=N row is its bulk bundle again. The two "
                          "clients ran one after the other, intercede first; the load average (1 min) was "
                          f"{load_before:.1f} when intercede started and {load_between:.1f} when pyarcrest "
                          "started.")


if __name__ == "__main__":
    main()
