"""Costs that follow churn (issue 9 part 5): tracking deltas to the CE actor, and queries that move what changed.

In process (LocalSeam) over a real LocalTransport + Direct CE; the seam records every call it carries.
"""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path
from typing import Any

import pytest

from intercede.actors.ce import CEActor
from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest, ReconcilerActor, ce_actor_name
from intercede.actors.seam import LocalSeam
from intercede.actors.settings import Settings
from intercede.errors import UnknownKeyError
from intercede.model import JobSpec

pytestmark = pytest.mark.actors

TRACKING = ("track", "untrack", "track_only")


class RecordingSeam(LocalSeam):
    """A LocalSeam that records each call's method, arguments and pickled size (what Ray would ship)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[Any, ...], int]] = []
        self.results: list[tuple[str, tuple[Any, ...], Any]] = []

    async def call(self, handle: Any, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        self.calls.append((method, args, len(pickle.dumps(args))))
        result = await super().call(handle, method, *args, timeout=timeout, **kwargs)
        self.results.append((method, args, result))
        return result

    def tracking(self) -> list[tuple[str, list[str]]]:
        return [(m, list(a[0])) for m, a, _ in self.calls if m in TRACKING]


def _spec(script: str) -> JobSpec:
    return JobSpec(executable="/bin/sh", arguments=["-c", script])


async def _step_until(actor: ReconcilerActor, ce: CEActor, key: str, state: str) -> None:
    for _ in range(200):
        await ce.poll()
        await actor.step()
        if (await actor.rows_of([key]))[0].state == state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{key} never reached {state}")


async def test_the_ce_actor_is_told_what_changed_and_everything_only_after_a_restart(tmp_path: Path) -> None:
    seam = RecordingSeam()
    settings = Settings.embedded(tmp_path / "data", job_root=tmp_path / "jobs")
    actor = ReconcilerActor(settings, seam=seam, start=False)
    ce: CEActor = seam.actors[ce_actor_name("local")]
    keys = ["k0", "k1", "k2"]
    await actor.declare([JobRequest(k, "local", _spec("sleep 30")) for k in keys])
    try:
        await actor.step()  # a new CE actor epoch: the whole (empty) set; the tick submits
        await actor.step()  # the three submitted ids: one delta
        ids = {r.key: r.job_id for r in await actor.rows()}
        assert all(ids.values())
        assert seam.tracking() == [("track_only", []), ("track", sorted(ids.values()))]
        for _ in range(3):  # nothing changed: nothing is sent
            await actor.step()
        assert len(seam.tracking()) == 2

        await actor.cancel(["k0"])
        await _step_until(actor, ce, "k0", "Aborted")
        await actor.step()  # the step after k0's final state is recorded stops its polling
        assert seam.tracking()[2:] == [("untrack", [ids["k0"]])]
        assert sorted(ce._tracked) == sorted([ids["k1"], ids["k2"]])
        assert actor.resyncs == 1

        # A restarted reconciler (new cursor) over the same journal and CE actor sends the whole set once.
        actor.close()
        seam.calls.clear()
        actor = ReconcilerActor(settings, seam=seam, start=False)
        await actor.step()
        await actor.step()
        assert seam.tracking() == [("track_only", sorted([ids["k1"], ids["k2"]]))]

        # A CE actor whose set differs from what it was told (here: it dropped an id by itself) answers the next
        # delta with another count, and gets the whole set.
        await ce.untrack([ids["k1"]])
        seam.calls.clear()
        await actor.cancel(["k2"])
        await _step_until(actor, ce, "k2", "Aborted")
        await actor.step()
        assert seam.tracking()[-2:] == [("untrack", [ids["k2"]]), ("track_only", [ids["k1"]])]
        assert sorted(ce._tracked) == [ids["k1"]]
    finally:
        await ce.cancel([i for i in ids.values() if i])
        actor.close()
        await ce.aclose()


async def test_wait_moves_only_the_pending_keys_and_counts_move_no_rows(tmp_path: Path) -> None:
    seam = RecordingSeam()
    ic = Intercede.start(Settings.embedded(tmp_path / "data", job_root=tmp_path / "jobs"), seam=seam)
    fast = [f"fast-{i}" for i in range(5)]
    await ic.declare([JobRequest(k, "local", _spec("true")) for k in fast] +
                     [JobRequest("slow", "local", _spec("sleep 2"))], progress=False)
    try:
        rows = await ic.wait([*fast, "slow"], timeout=60, interval=0.1, progress=False)
        assert [r.key for r in rows] == [*fast, "slow"] and {r.state for r in rows} == {"Done"}
        waits = [(m, a) for m, a, _ in seam.calls if m in ("watch", "settled_since", "rows", "rows_of")]
        assert waits[0] == ("watch", ([*fast, "slow"], "terminal"))  # the keys go once
        asks = [m for m, _ in waits[1:-1]]
        assert len(asks) >= 2 and set(asks) == {"settled_since"}  # then only what settled comes back
        assert waits[-1] == ("rows_of", ([*fast, "slow"],))  # and the rows, once
        answers = [len(r) for m, _, r in seam.results if m == "settled_since"]
        watched = next(r for m, _, r in seam.results if m == "watch")
        assert sum(answers) + len(watched[1]) == 6  # each key came back once, when it settled
        assert await ic.counts() == [("local", "Done", "running", 6)]
        assert (await ic.stats())["keys"] == 6
        with pytest.raises(UnknownKeyError, match="nope"):
            await ic.wait(["slow", "nope"], timeout=5, progress=False)
    finally:
        seam.kill(seam.find("intercede-reconciler"))
