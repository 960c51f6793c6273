"""A CE actor that hangs (its process SIGSTOPped) delays only its own CE's jobs, and seam calls to it time out.

Two local Direct CEs, ``a`` and ``b``, on real Ray. ``a``'s jobs are submitted, then ``a``'s CE actor process is
stopped (its jobs, child processes, go on running). A seam call to it raises intercede's TimeoutError within its
deadline; jobs declared on ``b`` meanwhile run and are collected; after SIGCONT ``a``'s jobs converge too. Every job
ran exactly once (each appends its key to a ledger).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from intercede.actors.ce import CEActor
from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest, ce_actor_name, reconciler_name
from intercede.actors.seam import RaySeam
from intercede.actors.settings import Settings
from intercede.errors import TimeoutError
from intercede.model import JobSpec, OutputFile
from intercede.reconcile import Phase
from tests.faults.conftest import stop_actors

pytestmark = pytest.mark.faults


class CEActorWithPid(CEActor):
    """A CEActor that says which process it runs in, so the test can stop that process."""

    async def pid(self) -> int:
        return os.getpid()


def _job(key: str, ledger: Path, seconds: float) -> JobSpec:
    script = 'sleep "$3"; echo "$1" >> "$2"; echo "$1" > out.txt'
    return JobSpec(executable="/bin/sh", arguments=["-c", script, "sh", key, str(ledger), str(seconds)],
                   output_files=[OutputFile(name="out.txt")])


async def _all_submitted(ic: Intercede, keys: Sequence[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        rows = {r.key: r for r in await ic.rows()}
        if all(k in rows and rows[k].job_id for k in keys):
            return
        assert time.monotonic() < deadline, f"not submitted within {timeout} s: {rows}"
        await asyncio.sleep(0.2)


@pytest.mark.usefixtures("ray_local")
async def test_a_hung_ce_actor_delays_only_its_own_jobs_and_calls_to_it_time_out(tmp_path: Path) -> None:
    namespace = f"hung-ce-{uuid.uuid4().hex[:8]}"
    embedded = Settings.embedded(tmp_path / "data")
    (local,) = embedded.ce
    ces = [local.model_copy(update={"name": n, "root": str(tmp_path / f"jobs-{n}")}) for n in "ab"]
    settings = embedded.model_copy(update={"namespace": namespace, "tick_interval": 0.2, "ce": ces})
    seam = RaySeam(namespace, timeout=3.0)  # the reconciler gets this seam, and its deadline
    ledger, outputs = tmp_path / "ledger", tmp_path / "out"
    a_keys, b_keys = [f"hung-a{i}" for i in range(3)], [f"free-b{i}" for i in range(3)]

    def request(key: str, ce: str, seconds: float) -> JobRequest:
        return JobRequest(key, ce, _job(key, ledger, seconds), Phase.COLLECTED, outputs / key)

    stopped = 0
    try:
        a_actor = seam.start(CEActorWithPid, ce_actor_name("a"), ces[0])  # the reconciler joins it
        Intercede.start(settings, seam=seam)
        # The test's own calls get the default deadline: the first ones wait for the actors' processes to start.
        ic = Intercede(RaySeam(namespace), seam.find(reconciler_name()))
        await ic.declare([request(k, "a", 3.0) for k in a_keys], progress=False)
        await _all_submitted(ic, a_keys, timeout=60)

        stopped = await seam.call(a_actor, "pid", timeout=120)
        os.kill(stopped, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="'health' got no answer within 1 s"):
            await seam.call(a_actor, "health", timeout=1.0)
        with pytest.raises(TimeoutError, match="may still run"):
            await seam.call_once(a_actor, "health", timeout=1.0)
        assert time.monotonic() - started < 4.0, "each call gave up at its deadline"

        await ic.declare([request(k, "b", 0.5) for k in b_keys], progress=False)
        b_rows = await ic.wait(b_keys, until="collected", timeout=60, progress=False)
        a_while_stopped = [r for r in await ic.rows() if r.key in a_keys]
        assert (tmp_path / "jobs-a").exists()

        os.kill(stopped, signal.SIGCONT)
        stopped = 0
        a_rows = await ic.wait(a_keys, until="collected", timeout=90, progress=False)
    finally:
        if stopped:
            os.kill(stopped, signal.SIGCONT)
        stop_actors(namespace)

    assert [(r.state, r.permanent_error) for r in b_rows] == [("Done", None)] * len(b_keys)
    assert not any(r.collected for r in a_while_stopped), "a's jobs wait for their CE actor"
    assert [(r.state, r.permanent_error) for r in a_rows] == [("Done", None)] * len(a_keys)
    assert Counter(ledger.read_text().split()) == Counter({k: 1 for k in a_keys + b_keys}), "each ran exactly once"
    for k in a_keys + b_keys:
        assert (outputs / k / "out.txt").read_text() == f"{k}\n"
