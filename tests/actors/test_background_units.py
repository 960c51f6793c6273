"""The reconciler's loop never waits for a unit of work: a CE whose submits hang holds only its own slots, while the
loop goes on observing, and the other CE's jobs run and are collected (real local CEs, in process)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from intercede.actors.gateway import ActorGateway
from intercede.actors.reconciler import JobRequest, ReconcilerActor, ce_actor_name
from intercede.actors.seam import LocalSeam
from intercede.actors.settings import Settings, load_settings
from intercede.backends.registry import BatchConfig
from intercede.model import JobSpec, SubmitResult
from intercede.reconcile import KeyRow, Phase
from intercede.reconcile.gateway import CEGateway

pytestmark = pytest.mark.actors


class HangingSubmits:
    """A CE gateway whose submits do not come back until ``release`` is set (an ``sbatch`` stuck on a busy login
    node); everything else goes through."""

    def __init__(self, inner: CEGateway) -> None:
        self._inner = inner
        self.release = asyncio.Event()
        self.waiting = 0

    async def submit(self, spec: JobSpec) -> SubmitResult:
        self.waiting += 1
        await self.release.wait()
        self.waiting -= 1
        return await self._inner.submit(spec)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


async def rows(actor: ReconcilerActor, keys: list[str]) -> dict[str, KeyRow]:
    return {r.key: r for r in await actor.rows_of(keys)}


async def eventually(condition: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """Ask until ``condition`` holds, as a client's ``wait`` does (the loop runs on this event loop: each pause
    gives it the floor)."""
    for _ in range(int(timeout / 0.1)):
        if await condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout} s")


async def _true(value: bool) -> bool:
    return value


async def test_a_ce_whose_submits_hang_holds_up_neither_the_loop_nor_the_other_ce(tmp_path: Path) -> None:
    ces = [BatchConfig(name=name, scheduler="direct", root=str(tmp_path / f"jobs-{name}"), poll_interval=0.2,
                       max_in_flight=2) for name in ("slow", "fast")]
    settings = Settings(data_dir=tmp_path / "data", tick_interval=0.2, ce=ces)
    seam = LocalSeam()
    actor = ReconcilerActor(settings, seam=seam, start=False)
    hanging = HangingSubmits(ActorGateway(seam, seam.find(ce_actor_name("slow"))))
    actor.reconciler.set_gateway("slow", hanging)  # type: ignore[arg-type]
    slow = [f"slow-{i}" for i in range(4)]
    fast = [f"fast-{i}" for i in range(6)]
    spec = JobSpec(executable="/bin/sh", arguments=["-c", "echo done"])
    await actor.declare([JobRequest(k, "slow", spec) for k in slow] +
                        [JobRequest(k, "fast", spec, Phase.COLLECTED, tmp_path / "out" / k) for k in fast])
    await actor.ensure_running()
    try:
        async def collected() -> bool:
            return all(r.collected for r in (await rows(actor, fast)).values())

        await eventually(collected, 60)
        assert all((tmp_path / "out" / k / "stdout.txt").read_text() == "done\n" for k in fast)
        ticks = actor.ticks
        # The slow CE holds its two slots and no more; its other keys wait for room, and the loop steps on.
        assert hanging.waiting == 2
        assert all(r.job_id is None for r in (await rows(actor, slow)).values())
        await eventually(lambda: _true(actor.ticks >= ticks + 3), 10)
        assert hanging.waiting == 2

        hanging.release.set()
        async def done() -> bool:
            return all(r.state == "Done" for r in (await rows(actor, slow)).values())

        await eventually(done, 60)
        found = await seam.find(ce_actor_name("slow")).find_by_tag(slow)
        assert all(len(found[k]) == 1 for k in slow), "each slow key was submitted once"
        assert actor.tick_errors == 0
    finally:
        actor.close()
        for name in ("slow", "fast"):
            await seam.find(ce_actor_name(name)).aclose()


def test_an_old_submits_per_tick_is_read_as_max_in_flight_with_a_deprecation_warning(tmp_path: Path) -> None:
    config = tmp_path / "ces.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[[ce]]\nname = "old"\nscheduler = "direct"\n'
                      f'root = "{tmp_path / "jobs"}"\nsubmits_per_tick = 7\n')
    with pytest.warns(FutureWarning, match="submits_per_tick is deprecated.*max_in_flight"):
        (old,) = load_settings(config).ce
    assert old.max_in_flight == 7
    both = BatchConfig(name="both", scheduler="direct", root=str(tmp_path / "j"), max_in_flight=3)
    assert (both.max_in_flight, BatchConfig(name="new", scheduler="direct", root="/j").max_in_flight) == (3, 32)
