"""Carrying out a plan: each step journals first and acts second, so a crash at any point is repaired by the next tick.

* Submit: a new attempt id -> ``record_submit_intent(key, attempt)`` -> ``gateway.submit(spec tagged with the key,
  carrying the attempt)`` -> ``record_job_id``. A crash after the intent leaves an intent without a job id, which is
  only ever *adopted*. If the intent cannot be written, nothing is submitted. Every attempt id of a key is journaled.
* Adopt: ``gateway.find_attempts([key])``. Only a job carrying one of the key's own attempt ids is the key's (a job
  that merely carries the tag — another key's payload renamed itself — is never touched, only logged). One of ours:
  record it. Several: cancel and purge all but the latest attempt's (the earlier ones are fenced), log loudly, then
  record it. A submit of the key still running in the CE actor: look again later. None of ours: a submit that has
  not landed *yet* (an ``sbatch`` orphaned by a dropped connection, still retrying) would run next to a resubmit, so
  every attempt is first *fenced* at the resource (its payload can then never start); only when every attempt is
  fenced is the intent cleared and the key submitted anew. An attempt a job already claimed (it runs, but its tag
  does not find it) is looked for again, and after ``policy.live_attempt_tries`` becomes a permanent error: never a
  second job. A CE that cannot fence (HTCondor through the bindings) has a submit that cannot land late: it is one
  schedd transaction from a worker process that dies with the CE actor, which the schedd aborts when its connection
  closes uncommitted, and a submit still running in a live CE actor is reported ``in_flight``. There the intent is
  cleared as soon as nothing is found.
* Cancel / Purge: one bulk gateway call per CE (and chunk), then record each outcome. Both are safe to repeat. Before
  the purge of a key submitted more than once (and before forgetting a key that never got a job), its tag is looked up
  once more: every other job of its own attempts (an orphan that landed late, exited at its fence) is cancelled and
  purged, and what its attempts left at the resource is discarded.
* Fetch: ``gateway.fetch`` -> verify every listed file under the destination -> ``record_manifest``; only then is
  the job purged (two-phase destructive fetch).
* Errors: temporary ones (see :meth:`RetryPolicy.is_temporary`) back the key off exponentially and never fail a job;
  permanent ones (a CE refusing the spec, credentials rejected) are recorded as ``permanent_error`` and never retried.
  A :class:`~intercede.errors.JournalError` stops the whole plan: without a journal nothing can be done safely.
* After each plan the journal is wiped (:meth:`Journal.wipe`): secrets scrubbed at a job id, and forgotten keys, are
  then gone from its files.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import replace
from functools import partial

from intercede.errors import ConnectivityError, JournalError
from intercede.reconcile.clock import Clock
from intercede.reconcile.gateway import CEGateway, TaggedJobs
from intercede.reconcile.journal_store import JournalStore
from intercede.reconcile.policy import RetryPolicy
from intercede.reconcile.state import Action, Adopt, Cancel, Fetch, Forget, Progress, Purge, Submit
from intercede.reconcile.tracker import ReconcileState
from intercede.reconcile.verify import verify_manifest

__all__ = ["Executor"]

log = logging.getLogger(__name__)

_Unit = Callable[[], Awaitable[None]]


def _chunks(items: Sequence[tuple[str, str]], size: int) -> Iterable[Sequence[tuple[str, str]]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Executor:
    """Runs planned actions against the CEs' gateways, at most ``concurrency`` units at a time, recording every
    result in the journal and mirroring it into the working set. ``gateways`` is shared with the owner, which may
    add gateways later."""

    def __init__(self, journal: JournalStore, state: ReconcileState, gateways: MutableMapping[str, CEGateway],
                 policy: RetryPolicy, clock: Clock, *, concurrency: int, chunk: int) -> None:
        if concurrency < 1 or chunk < 1:
            raise ValueError("concurrency and chunk must be at least 1")
        self._journal = journal
        self._state = state
        self._gateways = gateways
        self._policy = policy
        self._clock = clock
        self._concurrency = concurrency
        self._chunk = chunk

    async def execute(self, actions: Sequence[Action]) -> None:
        """Carry out ``actions`` (at most one per key). Raises JournalError; records every other failure."""
        units = self._units(actions)
        if units:
            await self._run(units)
            self._journal.wipe()

    async def _run(self, units: list[_Unit]) -> None:
        limit = asyncio.Semaphore(self._concurrency)

        async def bounded(unit: _Unit) -> None:
            async with limit:
                await unit()

        try:
            # A TaskGroup, not gather: when one unit dies (JournalError, or the process being torn down) the others
            # are cancelled instead of writing on behind the failure.
            async with asyncio.TaskGroup() as group:
                for unit in units:
                    group.create_task(bounded(unit))
        except BaseExceptionGroup as failures:
            for other in failures.exceptions[1:]:
                log.error("reconciler tick: further failure", exc_info=other)
            raise failures.exceptions[0] from None

    def _units(self, actions: Sequence[Action]) -> list[_Unit]:
        """Group the plan into units of work: one per submit, fetch or forget; one bulk call per CE and chunk for
        adopt, cancel and purge."""
        units: list[_Unit] = []
        adopts: dict[str, list[tuple[str, str]]] = defaultdict(list)
        cancels: dict[str, list[tuple[str, str]]] = defaultdict(list)
        purges: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for action in actions:
            ce = self._state.desired[action.key].ce
            match action:
                case Submit(key):
                    units.append(partial(self._submit, key))
                case Adopt(key):
                    adopts[ce].append((key, key))
                case Cancel(key, job_id):
                    cancels[ce].append((key, job_id))
                case Purge(key, job_id):
                    purges[ce].append((key, job_id))
                case Fetch():
                    units.append(partial(self._fetch, action))
                case Forget(key):
                    units.append(partial(self._forget, key))
        for step, groups in ((self._adopt, adopts), (self._cancel, cancels), (self._purge, purges)):
            for ce, items in groups.items():
                for chunk in _chunks(items, self._chunk):
                    units.append(partial(step, ce, chunk))
        return units

    # ---- steps

    def _gateway(self, ce: str) -> CEGateway:
        gateway = self._gateways.get(ce)
        if gateway is None:
            # Temporary: the journal may name a CE whose gateway is wired after the restart.
            raise ConnectivityError(f"no gateway for CE {ce!r}")
        return gateway

    def _put(self, key: str, progress: Progress) -> None:
        current = self._state.progress.get(key)
        if current is None:
            return  # forgotten meanwhile
        if current.last_seen is not None and (progress.last_seen is None or progress.last_seen < current.last_seen):
            # observe() keeps the newest last_seen in memory only; do not let a journaled row turn it back.
            progress = replace(progress, last_seen=current.last_seen)
        self._state.put_progress(key, progress)

    def _failed(self, keys: Iterable[str], step: str, error: BaseException | str, *, permanent: bool,
                clear_submit_intent: bool = False) -> None:
        now = self._clock.now()
        text = f"{step}: {error}" if isinstance(error, str) else f"{step}: {type(error).__name__}: {error}"
        for key in keys:
            current = self._state.progress.get(key)
            if current is None:
                continue
            attempts = current.attempts + 1
            retry_at = None if permanent else now + self._policy.delay(attempts, key)
            if permanent:
                log.error("job key %s: %s (permanent: not retried)", key, text)
            else:
                log.warning("job key %s: %s (attempt %d, retry in %.1fs)", key, text, attempts,
                            (retry_at or now) - now)
            self._put(key, self._journal.record_error(key, text, permanent=permanent, next_attempt_at=retry_at,
                                                      attempts=attempts, clear_submit_intent=clear_submit_intent))

    async def _guarded(self, keys: Sequence[str], step: str, body: Awaitable[None]) -> None:
        try:
            await body
        except JournalError:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded against its keys; unexpected ones become permanent errors
            self._failed(keys, step, exc, permanent=not self._policy.is_temporary(exc))

    async def _submit(self, key: str) -> None:
        async def body() -> None:
            wanted = self._state.desired[key]
            gateway = self._gateway(wanted.ce)
            # Chosen here and journaled with the intent, before anything reaches the CE: whatever lands at the
            # resource under this id can later be proven to be this key's, and fenced if it has not landed yet.
            attempt = secrets.token_hex(8)
            self._put(key, self._journal.record_submit_intent(key, attempt))
            result = await gateway.submit(wanted.submission(attempt))
            job_ids = result.job_ids
            if job_ids:
                if len(job_ids) > 1:
                    log.error("job key %s: CE %s answered one submit with %d jobs %s; keeping %s",
                              key, wanted.ce, len(job_ids), job_ids, job_ids[0])
                self._put(key, self._journal.record_job_id(key, job_ids[0]))
            elif result.submissions:
                refusal = result.submissions[0]
                # A refused copy created no job, so the intent goes with the error: the retry is a plain submit.
                self._failed([key], "submit refused", refusal.error or "no reason given",
                             permanent=not refusal.temporary, clear_submit_intent=True)
            else:
                # No answer per copy: a job may exist, so the intent stays and the key is adopted next.
                self._failed([key], "submit", "the CE answered with no submission", permanent=False)

        await self._guarded([key], "submit", body())

    async def _adopt(self, ce: str, items: Sequence[tuple[str, str]]) -> None:
        keys = [key for key, _ in items]

        async def body() -> None:
            found = await self._gateway(ce).find_attempts(keys)
            for key in keys:
                await self._guarded([key], "adopt", self._adopt_one(ce, key, found))

        await self._guarded(keys, "adopt", body())

    def _ours(self, ce: str, key: str, found: TaggedJobs) -> list[str]:
        """The jobs found under ``key``'s tag that carry one of its own attempt ids, *latest* attempt first: an
        intent is only ever cleared once every attempt before it is fenced, so only the latest attempt can run its
        payload (an earlier one that landed late exits at its fence). A job with another attempt id is someone
        else's (a payload can rename its job to any tag): logged, never touched. A key journaled before attempt ids
        (none recorded), or a CE that cannot say (None), keeps the old rule: every job carrying the tag is the key's,
        the first one kept."""
        attempts = self._state.progress[key].submit_attempts
        jobs = found.jobs.get(key, {})
        order = {attempt: i for i, attempt in enumerate(attempts)}
        ours = [job for job, attempt in jobs.items() if not attempts or attempt is None or attempt in order]
        foreign = sorted(set(jobs) - set(ours))
        if foreign:
            log.warning("job key %s: CE %s lists job(s) %s under its tag that carry none of its attempt ids "
                        "(another key's job renamed to this tag?); leaving them alone", key, ce, ", ".join(foreign))
        return sorted(ours, key=lambda job: (-order.get(jobs[job] or "", -1), job))

    async def _adopt_one(self, ce: str, key: str, found: TaggedJobs) -> None:
        if key in found.in_flight:
            self._failed([key], "adopt", f"a submit of this key is still running in CE {ce}'s actor; "
                                         "looking it up again once it has ended", permanent=False)
            return
        job_ids = self._ours(ce, key, found)
        if not job_ids:
            await self._fence_or_wait(ce, key)
            return
        keep, extras = job_ids[0], job_ids[1:]
        if extras:
            # Earlier attempts that landed late (fenced: they never run a payload), or another client's submits.
            log.error("job key %s has %d jobs at CE %s (%s): keeping %s, cancelling and purging %s",
                      key, len(job_ids), ce, ", ".join(job_ids), keep, ", ".join(extras))
            await self._remove_jobs(ce, key, extras)
        # Extras went first: if we crash before recording the keeper, the next Adopt finds the keeper again.
        self._put(key, self._journal.record_job_id(key, keep))

    async def _fence_or_wait(self, ce: str, key: str) -> None:
        """No job of the key is found: clear its intent only once no earlier attempt can still start a payload."""
        progress = self._state.progress[key]
        attempts = progress.submit_attempts
        fenced = await self._gateway(ce).fence(attempts) if attempts else None
        live = [a for a in attempts if fenced is not None and not fenced.get(a, False)]
        if not live:
            how = "every earlier attempt is fenced" if fenced is not None else "the CE keeps nothing to fence"
            log.info("job key %s: no job of it at CE %s and %s; it will be submitted", key, ce, how)
            self._put(key, self._journal.clear_submit_intent(key))
            return
        permanent = progress.attempts + 1 >= self._policy.live_attempt_tries
        self._failed([key], "adopt", f"an earlier submit attempt ({', '.join(live)}) is live at CE {ce} but not found "
                     f"by its tag; {'refusing to resubmit' if permanent else 'looking it up again'}",
                     permanent=permanent)

    async def _remove_jobs(self, ce: str, key: str, job_ids: list[str], *, wait_for_live: bool = False) -> bool:
        """Cancel extra jobs and purge them; whether all were purged. With ``wait_for_live`` a job the cancel reached
        is not purged yet: it is still ending, and Slurm writes its last words into the job's directory as it goes
        (recreating a directory purged under it), so the sweep purges it once a cancel finds it ended. (A job purged
        early by Adopt is found again by that sweep, which purges it once more.)"""
        gateway = self._gateway(ce)
        cancelled = await gateway.cancel(job_ids)
        live = {outcome.job_id for outcome in cancelled if outcome.ok} if wait_for_live else set()
        ended = [job for job in job_ids if job not in live]
        for outcome in await gateway.purge(ended) if ended else []:
            if not outcome.ok:
                log.info("job key %s: purging extra job %s: %s", key, outcome.job_id, outcome.detail)
        return not live

    async def _sweep(self, ce: str, keys: Sequence[str]) -> list[str]:
        """Before a key's last purge (or its forget without a job): look its tag up once more, cancel and purge every
        job of its own attempts but the recorded one, discard what its other attempts left. Returns the keys swept;
        the others had their failure recorded and wait for the next tick."""
        if not keys:
            return []
        gateway = self._gateway(ce)
        try:
            found = await gateway.find_attempts(keys)
        except JournalError:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded against the keys, like any step
            self._failed(keys, "sweep", exc, permanent=not self._policy.is_temporary(exc))
            return []
        swept: list[str] = []
        for key in keys:
            progress = self._state.progress.get(key)
            if progress is None:
                continue

            async def body(key: str = key, progress: Progress = progress) -> None:
                if key in found.in_flight:
                    raise ConnectivityError(f"a submit of this key is still running in CE {ce}'s actor")
                extras = [job for job in self._ours(ce, key, found) if job != progress.job_id]
                if extras:
                    log.warning("job key %s: an earlier attempt landed at CE %s as %s; cancelling and purging it",
                                key, ce, ", ".join(extras))
                    if not await self._remove_jobs(ce, key, extras, wait_for_live=True):
                        self._failed([key], "sweep", f"cancelled {', '.join(extras)} (an earlier attempt's job); "
                                     "purging it once it has ended", permanent=False)
                        return
                kept = found.jobs.get(key, {}).get(progress.job_id or "")
                await gateway.discard_attempts([a for a in progress.submit_attempts if a != kept])
                swept.append(key)

            await self._guarded([key], "sweep", body())
        return swept

    def _needs_sweep(self, key: str) -> bool:
        progress = self._state.progress.get(key)
        if progress is None:
            return False
        return len(progress.submit_attempts) > 1 or (progress.job_id is None and bool(progress.submit_attempts))

    async def _cancel(self, ce: str, items: Sequence[tuple[str, str]]) -> None:
        async def body() -> None:
            outcomes = await self._gateway(ce).cancel([job_id for _, job_id in items])
            by_id = {outcome.job_id: outcome for outcome in outcomes}
            now = self._clock.now()
            for key, job_id in items:
                outcome = by_id.get(job_id)
                if outcome is None:
                    self._failed([key], "cancel", f"CE {ce} gave no outcome for job {job_id}", permanent=False)
                elif outcome.ok or not outcome.temporary:
                    if not outcome.ok:
                        # Usually "already finished": the next observation shows the final state.
                        log.info("job key %s: cancel of %s not done (%s); waiting for its final state",
                                 key, job_id, outcome.detail)
                    self._put(key, self._journal.record_cancel_sent(key, now))
                else:
                    self._failed([key], "cancel", outcome.detail or "temporary failure", permanent=False)

        await self._guarded([key for key, _ in items], "cancel", body())

    async def _purge(self, ce: str, items: Sequence[tuple[str, str]]) -> None:
        try:
            swept = set(await self._sweep(ce, [key for key, _ in items if self._needs_sweep(key)]))
        except ConnectivityError as exc:  # no gateway for the CE
            self._failed([key for key, _ in items], "purge", exc, permanent=False)
            return
        items = [(key, job_id) for key, job_id in items if key in swept or not self._needs_sweep(key)]
        if not items:
            return

        async def body() -> None:
            outcomes = await self._gateway(ce).purge([job_id for _, job_id in items])
            by_id = {outcome.job_id: outcome for outcome in outcomes}
            for key, job_id in items:
                outcome = by_id.get(job_id)
                if outcome is None:
                    self._failed([key], "purge", f"CE {ce} gave no outcome for job {job_id}", permanent=False)
                elif outcome.ok:
                    self._put(key, self._journal.record_purged(key))
                else:
                    self._failed([key], "purge", outcome.detail or "refused", permanent=not outcome.temporary)

        await self._guarded([key for key, _ in items], "purge", body())

    async def _fetch(self, action: Fetch) -> None:
        async def body() -> None:
            wanted = self._state.desired[action.key]
            gateway = self._gateway(wanted.ce)
            await asyncio.to_thread(action.destination.mkdir, parents=True, exist_ok=True)
            manifest = await gateway.fetch(action.job_id, wanted.submission(), action.destination)
            # Hashing every byte is slow work: keep it off the event loop.
            await asyncio.to_thread(verify_manifest, manifest, action.job_id, action.destination)
            self._put(action.key, self._journal.record_manifest(action.key, manifest))

        await self._guarded([action.key], "fetch", body())

    async def _forget(self, key: str) -> None:
        if self._needs_sweep(key):
            ce = self._state.desired[key].ce
            try:
                swept = await self._sweep(ce, [key])
            except ConnectivityError as exc:  # no gateway for the CE
                self._failed([key], "forget", exc, permanent=False)
                return
            if not swept:
                return
        self._journal.forget(key)
        self._state.remove(key)
