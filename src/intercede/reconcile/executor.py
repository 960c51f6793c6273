"""Carrying out a plan: units of work run in the background, journaled in groups, so a crash at any point is
repaired by the next step.

**Units in the background.** :meth:`Executor.start` turns a plan into units (one per submit, fetch or forget; one
bulk call per CE and chunk for adopt, cancel and purge) and starts each as an asyncio task, bounded per CE
(``max_in_flight``) and overall (``concurrency``); it returns at once. A key with a unit in flight is *busy* until
that unit has finished and its results are on disk: the owner never plans a second action for it
(:meth:`Executor.busy`), and :meth:`Executor.room` is how many more units a CE may take (the submit budget of the next
plan; a submit *rate* belongs to planning, see ``diff.plan``'s ``budget``).

**Journal writes in groups.** A unit does not write the journal: it leaves its results (job id, manifest, cancel
sent, purged, error, forget) as pending writes, and :meth:`Executor.fold` applies every pending write in one
:meth:`Journal.batch` (one transaction, one fsync), then mirrors the new rows into the working set, then frees the
keys of the units that have ended. If the batch fails (:class:`~intercede.errors.JournalError`) nothing of it is on
disk and nothing of it reaches memory: the writes stay pending and the next fold tries again. A write that is lost
because the process died is repaired as before: a job id not recorded is adopted, a manifest not recorded is fetched
again, a purge or cancel not recorded is sent again (all of them are safe to repeat).

* Submit: all of a plan's submit intents, each with a new attempt id, are written in one batch *before* any of
  their submits starts (:meth:`Executor.start`); then ``gateway.submit(spec tagged with the key, carrying the
  attempt)`` -> its job id (pending). A crash after the intent leaves an intent without a job id, which is only ever
  *adopted*. If the intents cannot be written, nothing of the plan is started. Every attempt id of a key is journaled.
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
* Fetch: ``gateway.fetch`` (which fetches and verifies every listed file in one process, where they land) -> check
  the manifest is the job's and the destination's -> ``record_manifest``; the key stays busy until that record is on
  disk, and only a later plan purges the job (two-phase destructive fetch).
* Errors: temporary ones (see :meth:`RetryPolicy.is_temporary`) back the key off exponentially and never fail a job;
  permanent ones (a CE refusing the spec, credentials rejected) are recorded as ``permanent_error`` and never retried.
  A :class:`~intercede.errors.JournalError` from a unit (a direct write) is raised by the next :meth:`fold`; any other
  ``BaseException`` (the process is going down) cancels every other unit and is raised by the next :meth:`fold`.
* After each fold the journal is wiped (:meth:`Journal.wipe`): secrets scrubbed at a job id, and forgotten keys, are
  then gone from its files.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from operator import methodcaller

from intercede.errors import ConnectivityError, JournalError
from intercede.reconcile.clock import Clock
from intercede.reconcile.gateway import CEGateway, TaggedJobs
from intercede.reconcile.journal_store import JournalStore
from intercede.reconcile.policy import RetryPolicy
from intercede.reconcile.state import Action, Adopt, Cancel, DeclareLost, Fetch, Forget, Progress, Purge, Submit
from intercede.reconcile.tracker import ReconcileState
from intercede.reconcile.verify import check_manifest_identity

__all__ = ["Executor"]

log = logging.getLogger(__name__)


def _chunks(items: Sequence[tuple[str, str]], size: int) -> Iterable[Sequence[tuple[str, str]]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass(frozen=True, slots=True)
class _Unit:
    """One unit of work: the CE it talks to, the keys it is for (busy until it ends), and its body."""

    ce: str
    keys: tuple[str, ...]
    body: Callable[[], Awaitable[None]]


_FORGOTTEN = None
"""What a pending forget leaves: the key is removed from the working set once the forget is on disk."""


@dataclass(frozen=True, slots=True)
class _Write:
    """A unit's result, waiting for the next fold: ``apply`` writes it (inside the fold's batch) and returns the new
    progress, or None for a forget."""

    key: str
    apply: Callable[[JournalStore], Progress | None]


class Executor:
    """Runs planned actions against the CEs' gateways in the background (see the module docstring): at most
    ``max_in_flight[ce]`` units per CE (unbounded for a CE not named) and ``concurrency`` in all. ``gateways`` is
    shared with the owner, which may add gateways later. Not thread-safe: one event loop owns it."""

    def __init__(self, journal: JournalStore, state: ReconcileState, gateways: MutableMapping[str, CEGateway],
                 policy: RetryPolicy, clock: Clock, *, concurrency: int, chunk: int,
                 max_in_flight: Mapping[str, int] | None = None) -> None:
        if concurrency < 1 or chunk < 1:
            raise ValueError("concurrency and chunk must be at least 1")
        limits = dict(max_in_flight or {})
        if any(limit < 1 for limit in limits.values()):
            raise ValueError(f"max_in_flight must be at least 1 per CE, got {limits}")
        self._journal = journal
        self._state = state
        self._gateways = gateways
        self._policy = policy
        self._clock = clock
        self._chunk = chunk
        self._cancel_reasons: dict[str, str] = {}
        self._limit = asyncio.Semaphore(concurrency)
        self._limits = limits
        self._ce_limits = {ce: asyncio.Semaphore(limit) for ce, limit in limits.items()}
        self._tasks: dict[asyncio.Task[None], _Unit] = {}
        self._units_of: dict[str, int] = defaultdict(int)  # units started and not ended, per CE
        self._busy: set[str] = set()  # keys of units started and not yet folded
        self._ended: list[_Unit] = []  # units that ended since the last fold
        self._pending: list[_Write] = []
        self._failures: list[BaseException] = []
        self._wake = asyncio.Event()  # set whenever a unit ends, or by nudge()

    # ---- what the owner plans with

    def busy(self) -> frozenset[str]:
        """The keys with a unit in flight, or whose unit's results are not on disk yet: plan nothing for them."""
        return frozenset(self._busy)

    def room(self) -> dict[str, int]:
        """For each CE with a ``max_in_flight``, how many more units it may take now."""
        return {ce: max(0, limit - self._units_of[ce]) for ce, limit in self._limits.items()}

    def running_low(self, ces: Iterable[str]) -> bool:
        """Whether one of ``ces`` (with a ``max_in_flight``) has half of it or more free."""
        return any(2 * (limit - self._units_of[ce]) >= limit for ce in ces if (limit := self._limits.get(ce)))

    @property
    def in_flight(self) -> int:
        """Units started and not ended."""
        return len(self._tasks)

    # ---- running

    def start(self, actions: Sequence[Action]) -> int:
        """Start ``actions`` (at most one per key, none for a busy key) in the background and return the number of
        units started. Every submit intent of the plan is written first, in one batch; if that raises
        :class:`JournalError`, nothing is started and the planned keys are re-planned by the next step."""
        actions = [a for a in actions if a.key not in self._busy]
        # No intent for a CE without a gateway (yet): its submit fails at once, and nothing can exist for it.
        attempts = {a.key: secrets.token_hex(8) for a in actions
                    if isinstance(a, Submit) and self._state.desired[a.key].ce in self._gateways}
        if attempts:
            try:
                # Chosen here and journaled with the intent, before anything reaches the CE: whatever lands at the
                # resource under this id can later be proven to be this key's, and fenced if it has not landed yet.
                with self._journal.batch(f"record {len(attempts)} submit intent(s)"):
                    written = [(key, self._journal.record_submit_intent(key, attempt))
                               for key, attempt in attempts.items()]
            except BaseException:
                self._state.touch(a.key for a in actions)
                raise
            for key, progress in written:
                self._put(key, progress)
        units = self._units(actions, attempts)
        loop = asyncio.get_running_loop()
        for unit in units:
            self._busy.update(unit.keys)
            self._units_of[unit.ce] += 1
            task = loop.create_task(self._bounded(unit))
            self._tasks[task] = unit
            task.add_done_callback(self._ended_task)
        return len(units)

    async def _bounded(self, unit: _Unit) -> None:
        # The CE's own limit first: a unit queued behind a slow CE must not hold a slot the other CEs could use.
        ce_limit = self._ce_limits.get(unit.ce)
        if ce_limit is None:
            async with self._limit:
                await unit.body()
            return
        async with ce_limit, self._limit:
            await unit.body()

    def _ended_task(self, task: asyncio.Task[None]) -> None:
        unit = self._tasks.pop(task)
        self._units_of[unit.ce] -= 1
        self._ended.append(unit)
        self._wake.set()
        if task.cancelled():
            return
        failure = task.exception()
        if failure is None:
            return
        self._failures.append(failure)
        if not isinstance(failure, Exception):
            # The process is going down (a crash, an interpreter exit): nothing else of the plan may go on.
            self.cancel_all()

    def nudge(self) -> None:
        """Wake :meth:`wait_for_any` (the owner has something new to plan)."""
        self._wake.set()

    async def wait_for_any(self, timeout: float | None) -> bool:
        """Wait until a unit ends or leaves a result, or :meth:`nudge` (or one of them happened since the last
        wait), at most ``timeout`` seconds (None: no limit); whether one did."""
        if not self._wake.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return False
        self._wake.clear()
        return True

    async def settle(self) -> None:
        """Wait until every unit in flight has ended, folding results in as they come (what came together is one
        transaction, as the loop's steps fold them), then fold what is left. A unit's crash cancels the others (see
        :meth:`cancel_all`) and is raised by the fold that follows."""
        try:
            while self._tasks:
                await self.wait_for_any(None)
                self.fold()
        except BaseException:
            self.cancel_all()
            raise
        self.fold()

    def cancel_all(self) -> None:
        """Cancel every unit in flight (the owner is closing, or the process is going down). Their pending results
        are never folded."""
        for task in self._tasks:
            task.cancel()

    # ---- folding results in

    def raise_failures(self) -> None:
        """Raise the failure of a unit that died since the last call (see the module docstring), if any."""
        if self._failures:
            failure, *others = self._failures
            self._failures = []
            for other in others:
                log.error("reconciler: further failure of a unit", exc_info=other)
            raise failure

    def write_pending(self) -> list[tuple[str, Progress | None]]:
        """Apply the pending writes to the journal; call it inside a :meth:`Journal.batch`, then :meth:`apply` what
        it returns once the batch is on disk, then :meth:`raise_failures`."""
        written: list[tuple[str, Progress | None]] = []
        for write in self._pending:
            try:
                written.append((write.key, write.apply(self._journal)))
            except KeyError:  # forgotten meanwhile: the write changed nothing
                continue
        return written

    def apply(self, written: Sequence[tuple[str, Progress | None]]) -> None:
        """Mirror what :meth:`write_pending` wrote (now on disk) into the working set, and free the keys of the
        units that ended before it."""
        self._pending = []
        for key, progress in written:
            if progress is _FORGOTTEN:
                self._state.remove(key)
            else:
                self._put(key, progress)
        ended, self._ended = self._ended, []
        keys = [key for unit in ended for key in unit.keys]
        self._busy.difference_update(keys)
        # Dirty again (and their wake-ups re-armed): a change that came while a key was busy was not planned.
        self._state.touch(keys)
        if written:
            self._journal.wipe()

    def fold(self) -> int:
        """Write every pending result in one batch, then mirror it into the working set; returns the writes folded.
        Raises :class:`JournalError` with nothing of it in memory (the writes stay pending), then the failure of a
        unit that died: the results known before it are recorded first (each is true, whatever comes after)."""
        if not self._pending and not self._ended and not self._failures:
            return 0
        written: list[tuple[str, Progress | None]] = []
        if self._pending:
            with self._journal.batch(f"record {len(self._pending)} result(s)"):
                written = self.write_pending()
        self.apply(written)
        self.raise_failures()
        return len(written)

    async def execute(self, actions: Sequence[Action]) -> None:
        """Carry out ``actions`` and wait for all of it to be on disk (:meth:`start`, then :meth:`settle`)."""
        self.start(actions)
        await self.settle()

    def _units(self, actions: Sequence[Action], attempts: Mapping[str, str]) -> list[_Unit]:
        """Group the plan into units of work: one per submit, fetch or forget; one bulk call per CE and chunk for
        adopt, cancel and purge."""
        units: list[_Unit] = []
        adopts: dict[str, list[tuple[str, str]]] = defaultdict(list)
        cancels: dict[str, list[tuple[str, str]]] = defaultdict(list)
        purges: dict[str, list[tuple[str, str]]] = defaultdict(list)
        # Units run in the background: a plan's reasons are kept until its cancel unit uses them.
        self._cancel_reasons.update({a.key: a.reason for a in actions if isinstance(a, Cancel) and a.reason})
        for action in actions:
            ce = self._state.desired[action.key].ce
            match action:
                case Submit(key):
                    units.append(_Unit(ce, (key,), partial(self._submit, key, attempts.get(key))))
                case Adopt(key):
                    adopts[ce].append((key, key))
                case Cancel(key, job_id):
                    cancels[ce].append((key, job_id))
                case Purge(key, job_id):
                    purges[ce].append((key, job_id))
                case Fetch():
                    units.append(_Unit(ce, (action.key,), partial(self._fetch, action)))
                case Forget(key):
                    units.append(_Unit(ce, (key,), partial(self._forget, key)))
                case DeclareLost(key, reason):
                    units.append(_Unit(ce, (key,), partial(self._declare_lost, key, reason)))
        for step, groups in ((self._adopt, adopts), (self._cancel, cancels), (self._purge, purges)):
            for ce, items in groups.items():
                for chunk in _chunks(items, self._chunk):
                    units.append(_Unit(ce, tuple(key for key, _ in chunk), partial(step, ce, chunk)))
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

    def _record(self, key: str, write: Callable[[JournalStore], Progress | None]) -> None:
        """Leave a result for the next fold (see the module docstring): ``write(journal)`` records it."""
        self._pending.append(_Write(key, write))
        self._wake.set()  # a result to fold: the sooner it is on disk, the less a crash takes with it

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
            self._record(key, methodcaller("record_error", key, text, permanent=permanent, next_attempt_at=retry_at,
                                           attempts=attempts, clear_submit_intent=clear_submit_intent))

    async def _guarded(self, keys: Sequence[str], step: str, body: Awaitable[None]) -> None:
        try:
            await body
        except JournalError:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded against its keys; unexpected ones become permanent errors
            self._failed(keys, step, exc, permanent=not self._policy.is_temporary(exc))

    async def _submit(self, key: str, attempt: str | None) -> None:
        async def body() -> None:
            # The intent with ``attempt`` is on disk already (see start()); None: the CE had no gateway then.
            wanted = self._state.desired[key]
            gateway = self._gateway(wanted.ce)
            if attempt is None:
                raise ConnectivityError(f"no gateway for CE {wanted.ce!r} when the submit was planned")
            result = await gateway.submit(wanted.submission(attempt))
            job_ids = result.job_ids
            if job_ids:
                if len(job_ids) > 1:
                    log.error("job key %s: CE %s answered one submit with %d jobs %s; keeping %s",
                              key, wanted.ce, len(job_ids), job_ids, job_ids[0])
                self._record(key, methodcaller("record_job_id", key, job_ids[0]))
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
        self._record(key, methodcaller("record_job_id", key, keep))

    async def _fence_or_wait(self, ce: str, key: str) -> None:
        """No job of the key is found: clear its intent only once no earlier attempt can still start a payload."""
        progress = self._state.progress[key]
        attempts = progress.submit_attempts
        fenced = await self._gateway(ce).fence(attempts) if attempts else None
        live = [a for a in attempts if fenced is not None and not fenced.get(a, False)]
        if not live:
            how = "every earlier attempt is fenced" if fenced is not None else "the CE keeps nothing to fence"
            log.info("job key %s: no job of it at CE %s and %s; it will be submitted", key, ce, how)
            self._record(key, methodcaller("clear_submit_intent", key))
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
                    reason = self._cancel_reasons.pop(key, "")
                    if reason:
                        log.warning("job key %s: cancelling %s, %s", key, job_id, reason)
                    self._record(key, methodcaller("record_cancel_sent", key, now, reason))
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
                    self._record(key, methodcaller("record_purged", key))
                else:
                    self._failed([key], "purge", outcome.detail or "refused", permanent=not outcome.temporary)

        await self._guarded([key for key, _ in items], "purge", body())

    async def _fetch(self, action: Fetch) -> None:
        async def body() -> None:
            wanted = self._state.desired[action.key]
            gateway = self._gateway(wanted.ce)
            # The gateway fetches and verifies where the files land (the CE actor's node); here it is only recorded.
            manifest = await gateway.fetch(action.job_id, wanted.submission(), action.destination)
            check_manifest_identity(manifest, action.job_id, action.destination)
            self._record(action.key, methodcaller("record_manifest", action.key, manifest))

        await self._guarded([action.key], "fetch", body())

    async def _declare_lost(self, key: str, reason: str) -> None:
        log.warning("job key %s: %s", key, reason)
        self._record(key, methodcaller("record_lost", key, reason, self._clock.now()))

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
        self._record(key, methodcaller("forget", key))
