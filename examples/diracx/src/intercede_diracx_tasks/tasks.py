"""DiracX tasks that fill CEs with pilots and follow them, through intercede's async API.

* :class:`SubmitPilotsTask` (periodic) schedules one :class:`SubmitPilotsToCETask` per CE.
* :class:`SubmitPilotsToCETask` tops the CE up to its target of waiting pilots: it creates the pilots in the WMS's
  own records first (their ids are the WMS's), then declares them to intercede with those ids as keys. intercede
  journals each key before it submits and tags the job at the CE with it, so a pilot is never submitted twice, even
  across a crash of the task, the worker or intercede itself.
* :class:`CheckPilotsTask` (periodic) reads the pilots' states from intercede (DIRAC's state strings), records them
  in the WMS's pilot records, collects the outputs of finished pilots and then forgets them in intercede.

What the tasks work with (the intercede client, the pilot records, the CEs and their targets, the pilot's job) is a
:class:`PilotContext`, set once per worker process with :func:`configure` (from a DiracX deployment's settings; the
demo sets it itself).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

from intercede import Intercede, JobRequest, JobSpec, KeyRow
from intercede.errors import UnknownKeyError
from intercede_diracx_tasks.store import FINAL, PilotStore

try:  # a DiracX deployment
    from diracx.tasks.plumbing.base_task import BaseTask, PeriodicBaseTask
    from diracx.tasks.plumbing.schedules import IntervalSeconds
except ImportError:  # the demo, without DiracX
    from intercede_diracx_tasks._standin import BaseTask, IntervalSeconds, PeriodicBaseTask  # type: ignore[assignment]

__all__ = ["CheckPilotsTask", "PilotContext", "SubmitPilotsTask", "SubmitPilotsToCETask", "configure", "current"]

WAITING = (None, "Submitted", "Waiting", "Unknown")  # not running yet (None: declared, not submitted yet)


@dataclasses.dataclass
class PilotContext:
    """What the tasks need: ``targets`` maps each CE to the number of waiting pilots to keep there; ``per_cycle``
    caps the pilots one task run submits to a CE; ``pilot`` makes the job of a pilot id for a CE (a pure function:
    declaring a key again must give the same spec); outputs land under ``outputs/<pilot id>``."""

    intercede: Intercede
    store: PilotStore
    targets: Mapping[str, int]
    pilot: Callable[[str, str], JobSpec]
    outputs: Path
    per_cycle: int = 100


_CONTEXT: dict[str, PilotContext] = {}


def configure(context: PilotContext) -> None:
    _CONTEXT["current"] = context


def current() -> PilotContext:
    try:
        return _CONTEXT["current"]
    except KeyError:
        raise RuntimeError("intercede_diracx_tasks.configure() was not called in this worker") from None


@dataclasses.dataclass
class SubmitPilotsTask(PeriodicBaseTask):
    """Every minute: one :class:`SubmitPilotsToCETask` per CE."""

    default_schedule = IntervalSeconds(60)

    async def execute(self) -> int:
        for ce in current().targets:
            await SubmitPilotsToCETask(ce).schedule()
        return len(current().targets)


@dataclasses.dataclass
class SubmitPilotsToCETask(BaseTask):
    """Top ``ce`` up to its target of waiting pilots; returns how many pilots were declared."""

    ce: str

    async def execute(self) -> int:
        ctx = current()
        waiting = sum(n for ce, state, phase, n in await ctx.intercede.counts()
                      if ce == self.ce and state in WAITING and phase == "running")
        wanted = min(ctx.targets.get(self.ce, 0) - waiting, ctx.per_cycle)
        if wanted <= 0:
            return 0
        ids = await ctx.store.new_pilots(self.ce, wanted)  # the WMS's records first: see the module docstring
        await ctx.intercede.declare([JobRequest(i, self.ce, ctx.pilot(self.ce, i)) for i in ids], progress=False)
        return len(ids)


@dataclasses.dataclass
class CheckPilotsTask(PeriodicBaseTask):
    """Every 30 s: pilot states into the WMS's records; finished pilots collected, then forgotten in intercede.
    Returns the number of pilots whose status changed."""

    default_schedule = IntervalSeconds(30)

    async def execute(self) -> int:
        ctx = current()
        active = await ctx.store.active()
        if not active:
            return 0
        statuses: dict[str, str] = {}
        finished: list[str] = []
        collected: list[str] = []
        for row in await _rows(ctx, active):
            key, state = row.key, row.state
            if state is None:  # declared, not submitted yet
                continue
            if state not in FINAL:
                statuses[key] = state
            elif row.collected:  # the record turns final once the outputs are safe
                statuses[key] = state
                collected.append(key)
            else:
                finished.append(key)
        if finished:  # ask only: a later check pulls them once collected (a task never waits for outputs)
            await ctx.intercede.collect(finished, ctx.outputs, wait=False)
        if collected:  # the verified outputs, pulled to where this task runs, before the record turns final
            await ctx.intercede.download(collected, ctx.outputs)
        await ctx.store.set_status(statuses)
        if collected:
            await ctx.intercede.forget(collected)
        return len(statuses)


async def _rows(ctx: PilotContext, active: Mapping[str, str]) -> list[KeyRow]:
    try:
        return await ctx.intercede.rows_of(list(active))
    except UnknownKeyError:
        # Created in the records but never declared (a crash between the two): declare them now (idempotent).
        await ctx.intercede.declare([JobRequest(i, ce, ctx.pilot(ce, i)) for i, ce in active.items()],
                                    progress=False)
        return await ctx.intercede.rows_of(list(active))
