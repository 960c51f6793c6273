"""The reconciler's view of a CE actor: :class:`~intercede.reconcile.gateway.CEGateway` calls sent through the seam.

Submits and fetches are *coalesced*: the ones the reconciler starts together (the units of one step all reach the
gateway in the same pass of the event loop) travel as one actor call, ``submit_many`` or ``fetch_many``, which the CE
actor carries out item by item under its own concurrency bound and answers item by item. Nothing waits to fill a batch:
a call made alone goes out on the next pass of the loop, by itself. Each caller still gets its own answer or its own
exception, so the reconciler's units, journal writes and crash points are per key as before; a batch that fails as a
whole (the CE actor died, the call timed out) fails each of its calls with that error. Every Ray call costs both
processes CPU whatever it carries (serializing, the RPC, the dispatch onto the actor's loop), and on a busy CE the
reconciler starts tens of submits and fetches per step: one call carries them instead of one each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from intercede.actors.seam import Seam
from intercede.model import JobSpec, Outcome, OutputManifest, SubmitResult
from intercede.reconcile.gateway import TaggedJobs

__all__ = ["MAX_BATCH", "ActorGateway", "Coalescer"]

#: Most items one coalesced call carries; more that came together go as further calls. A call answers when its last
#: item is done, so its items' keys are freed together: as many as the CE actor runs at once by default (8) keeps
#: the next call's items running while the reconciler folds the first call's answers and plans more.
MAX_BATCH = 8

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class Coalescer(Generic[Item, Answer]):
    """Gathers the items asked for in one pass of the event loop and sends them as one call of ``send``, which answers
    one value per item, in order: an answer, or the exception that item raised (returned, not raised). If ``send``
    raises, every item of its call raises that. Not thread-safe: one event loop owns it."""

    def __init__(self, send: Callable[[list[Item]], Awaitable[list[Answer | BaseException]]]) -> None:
        self._send = send
        self._waiting: list[tuple[Item, asyncio.Future[Answer]]] = []

    async def ask(self, item: Item) -> Answer:
        loop = asyncio.get_running_loop()
        if not self._waiting:
            loop.call_soon(self._flush)
        future: asyncio.Future[Answer] = loop.create_future()
        self._waiting.append((item, future))
        return await future

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        for start in range(0, len(waiting), MAX_BATCH):
            asyncio.get_running_loop().create_task(self._call(waiting[start:start + MAX_BATCH]))

    async def _call(self, batch: list[tuple[Item, asyncio.Future[Answer]]]) -> None:
        try:
            answers = await self._send([item for item, _ in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"a coalesced call answered {len(answers)} items for {len(batch)}")
        except BaseException as exc:
            for _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)


FetchItem = tuple[str, JobSpec, Path]


class ActorGateway:
    """Forwards every gateway call to the CE actor ``handle`` (submits and fetches coalesced, see the module
    docstring)."""

    def __init__(self, seam: Seam, handle: Any) -> None:
        self._seam, self._handle = seam, handle
        # Not idempotent: a submit interrupted by the CE actor's death is adopted by its tag, never re-run.
        self._submits: Coalescer[JobSpec, SubmitResult] = Coalescer(
            lambda specs: seam.call_once(handle, "submit_many", specs))
        self._fetches: Coalescer[FetchItem, OutputManifest] = Coalescer(
            lambda items: seam.call(handle, "fetch_many", items))

    async def submit(self, spec: JobSpec) -> SubmitResult:
        return await self._submits.ask(spec)

    async def find_attempts(self, tags: Sequence[str]) -> TaggedJobs:
        return cast(TaggedJobs, await self._seam.call(self._handle, "find_attempts", list(tags)))

    async def fence(self, attempts: Sequence[str]) -> dict[str, bool] | None:
        return cast(dict[str, bool] | None, await self._seam.call(self._handle, "fence", list(attempts)))

    async def discard_attempts(self, attempts: Sequence[str]) -> None:
        await self._seam.call(self._handle, "discard_attempts", list(attempts))

    async def cancel(self, job_ids: Sequence[str]) -> list[Outcome]:
        return cast(list[Outcome], await self._seam.call(self._handle, "cancel", list(job_ids)))

    async def fetch(self, job_id: str, spec: JobSpec, destination: Path) -> OutputManifest:
        return await self._fetches.ask((job_id, spec, destination))

    async def purge(self, job_ids: Sequence[str]) -> list[Outcome]:
        return cast(list[Outcome], await self._seam.call(self._handle, "purge", list(job_ids)))
