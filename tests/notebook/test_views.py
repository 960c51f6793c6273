"""Diagnostics over a real intercede on the embedded default, without a cluster (the in-process seam)."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib import pyplot as plt

from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest, ReconcilerActor, reconciler_name
from intercede.actors.seam import LocalSeam
from intercede.actors.settings import Settings
from intercede.backends.capabilities import LoadReport
from intercede.diagnostics import Diagnostics
from intercede.errors import IntercedeError, TimeoutError
from intercede.model import JobSpec

pytestmark = pytest.mark.notebook


def _start(folder: Path) -> Intercede:
    """intercede on the embedded default, every actor in this process (the reconciler gets the same seam)."""
    seam = LocalSeam()
    handle = seam.start(ReconcilerActor, reconciler_name(), Settings.embedded(folder), seam=seam)
    seam.spawn(handle, "run_forever")
    return Intercede(seam, handle)


def _job(key: str, script: str) -> JobRequest:
    return JobRequest(key, "local", JobSpec(executable="/bin/sh", arguments=["-c", script]))


async def test_watch_samples_until_settled_and_the_views_show_what_happened(tmp_path: Path) -> None:
    ic = _start(tmp_path)
    diag = Diagnostics(ic)
    assert "no snapshot yet" in diag._repr_html_()
    with pytest.raises(IntercedeError, match="refresh"):
        _ = diag.jobs
    await ic.declare([_job("ok", "echo fine"), _job("bad", "exit 3"), _job("long", "sleep 600")], progress=False)

    await diag.watch(["long"], until="running", every=0.2, timeout=60, progress=False)
    await ic.cancel(["long"])
    snap = await diag.watch(until="terminal", every=0.2, timeout=60, progress=False)

    assert diag.jobs["state"].to_dict() == {"bad": "Failed", "long": "Aborted", "ok": "Done"}
    assert diag.jobs.loc["bad", "exit_code"] == 3 and diag.jobs.loc["long", "phase"] == "cancelled"
    assert snap is diag.last and diag.ces.loc["local", "reachable"]
    assert {"Submit", "Cancel"} <= set(diag.actions["kind"])
    samples = diag.state_history["at"].nunique()
    assert samples >= 3  # every refresh of the watch is a sample
    table = diag.states_over_time()
    assert table.index[0] == 0.0 and table.iloc[-1][["Done", "Failed", "Aborted"]].tolist() == [1, 1, 1]
    assert set(diag.latency_history["ce"]) == {"local"}
    assert len(diag.plot_states().collections) >= 3
    assert len(diag.plot_poll_latency().get_lines()) == 2
    plt.close("all")
    assert f"{samples} samples taken" in diag._repr_html_() and "<table" in diag._repr_html_()

    loaded = await diag.refresh(load=True)
    assert loaded.ces.loc["local", "free_cores"] >= 0
    loads = await ic.ce_load()
    assert isinstance(loads["local"], LoadReport)


async def test_watch_names_the_keys_it_gave_up_on_and_those_never_declared(tmp_path: Path) -> None:
    ic = _start(tmp_path)
    diag = Diagnostics(ic)
    await ic.declare([_job("slow", "sleep 30")], progress=False)
    with pytest.raises(TimeoutError, match=r"1 jobs not terminal after 1 s: \['slow'\]"):
        await diag.watch(["slow"], every=0.2, timeout=1, progress=False)
    with pytest.raises(IntercedeError, match="never declared: \\['ghost'\\]"):
        await diag.watch(["slow", "ghost"], every=0.2, timeout=5, progress=False)
    await ic.cancel(["slow"])
    await diag.watch(["slow"], every=0.2, timeout=30, progress=False)
