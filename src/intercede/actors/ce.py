"""CEActor: the one owner of a Computing Element's backend. A plain class; :mod:`.wiring` makes it a Ray actor.

It keeps the set of job ids the reconciler tracks on this CE (the ids whose state can still change; a job whose final
state the reconciler recorded is dropped): the reconciler sends what to start and stop tracking (:meth:`track`,
:meth:`untrack`), and the whole set (:meth:`track_only`) only when it meets a new instance of this actor or restarted
itself. It runs ONE batched status poll per interval for
all of them (the backend chunks the ids), caching each job's latest status with a change counter so the reconciler
pulls only what changed (:meth:`changes`). A failed poll marks the CE unreachable and backs off exponentially; it never
marks a job failed. A finished job dropped from tracking before its usage arrived (accounting lags the job's end:
sacct behind slurmctld, slurmdbd down) is still polled, at most :data:`USAGE_REPOLLS` more times, until the usage
shows up (a new status the reconciler pulls like any change) or those polls are spent. Every other call (submit,
cancel, fetch, ...) is forwarded to the backend under a bounded concurrency, and timed. Health and latency figures
come from :meth:`health`.

Outputs are fetched *and verified* here, in the process that writes them (:meth:`fetch`): the reconciler may run on
another node and only records the verified manifest. The files stay under the fetch's destination on this actor's
node (the service's output area), and :meth:`read_output` serves them on in bounded chunks to whoever collects them,
wherever that caller runs (:meth:`Intercede.collect <intercede.actors.client.Intercede.collect>`).

Credentials are kept by a :class:`~intercede.actors.credentials.CredentialKeeper` on a task of their own (refreshed
before they expire, whether or not jobs move). While one is missing or expired the CE reports it (``auth_problem``),
counts as unreachable to the reconciler (its jobs are held back, never failed), and refuses calls with the temporary
:class:`~intercede.errors.CredentialExpiredError`; it recovers by itself when a fresh credential appears.

Submits in flight are counted per tag: a reconciler that restarted while its predecessor's submit still runs here
must not take "no job found" for "never submitted", so :meth:`find_attempts` names those tags ``in_flight``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import pickle
import secrets
import statistics
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from intercede.actors import metrics
from intercede.actors.credentials import CredentialKeeper
from intercede.backends import outputs
from intercede.backends.capabilities import (
    AttemptTaggable,
    Cancellable,
    Fenceable,
    JobBackend,
    LoadReport,
    LoadReporter,
    OutputRetriever,
    Purgeable,
    Taggable,
)
from intercede.backends.credentials import CredentialProvider, load_provider
from intercede.backends.registry import CEConfigBase, build_backend
from intercede.errors import (
    ConnectivityError,
    CredentialExpiredError,
    IntercedeError,
    TransferError,
    UnsupportedError,
    is_temporary,
)
from intercede.model import JobSpec, JobStatus, Outcome, OutputManifest, SubmitResult
from intercede.reconcile.gateway import TaggedJobs
from intercede.reconcile.verify import verify_manifest

__all__ = ["CEActor", "CEHealth"]

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BACKOFF = 60.0
#: How many more polls a finished job gets, once the reconciler stopped tracking it, while its usage is missing: enough
#: for accounting that lags the end by minutes at the default interval, few enough that a resource that never reports
#: usage (or a job it keeps none for) costs a bounded number of batched re-asks, never a poll forever.
USAGE_REPOLLS = 30


class CEHealth(BaseModel):
    """A CE's health as its actor sees it."""

    name: str
    reachable: bool
    tracked: int
    polls: int
    poll_errors: int
    last_poll_at: float | None
    last_error: str
    poll_latency_p50: float | None
    poll_latency_p95: float | None
    call_errors: int
    states: dict[str, int]
    auth_problem: str = ""  # why this CE cannot authenticate (missing or expired credential); "" when it can
    credentials: dict[str, float | None] = {}  # per credential slot, when the one in use expires (epoch seconds)
    usage_pending: int = 0  # finished jobs no longer tracked that are still polled for their late usage


class CEActor:
    """Owns one CE's backend; see the module docstring. ``clock`` returns epoch seconds (injectable for tests)."""

    def __init__(self, config: CEConfigBase, *, concurrency: int = 8, clock: Callable[[], float] = time.time,
                 credentials: CredentialProvider | None = None) -> None:
        self.config = config
        self.backend: JobBackend = build_backend(config)
        self._clock = clock
        provider = credentials or load_provider(config.credentials, config.credential_options)
        self.credentials = CredentialKeeper(config.name, self.backend, provider,
                                            margins={str(k): v for k, v in config.credential_margins.items()},
                                            interval=min(max(config.poll_interval, 1.0), 30.0), clock=clock)
        self._keeping: asyncio.Task[None] | None = None
        self._limit = asyncio.Semaphore(concurrency)
        self._tracked: set[str] = set()
        self._cache: dict[str, tuple[int, JobStatus]] = {}
        self._usage_pending: dict[str, int] = {}  # untracked finished job id -> polls left to wait for its usage
        self._delivered: dict[str, int] = {}  # untracked job id whose late usage is cached -> that entry's version
        self._version = 0
        self._reachable = True
        self._failures = 0
        self._polls = 0
        self._poll_errors = 0
        self._call_errors = 0
        self._last_poll_at: float | None = None
        self._last_error = ""
        self._latencies: deque[float] = deque(maxlen=500)
        self._poller: asyncio.Task[None] | None = None
        self._submitting: Counter[str] = Counter()  # tag -> submits of it running here (or waiting for a slot)
        # A restarted actor starts counting again: the epoch tells a reader its cursor is stale.
        self.epoch = secrets.token_hex(4)

    # -- tracking and polling -----------------------------------------------------------------------------------

    async def track(self, job_ids: Sequence[str]) -> int:
        """Poll these ids from now on (idempotent); returns how many ids are tracked now, so the sender can tell
        whether its view and this actor's still agree."""
        self._tracked.update(job_ids)
        for job_id in job_ids:
            self._usage_pending.pop(job_id, None)
            self._delivered.pop(job_id, None)
        return len(self._tracked)

    async def track_only(self, job_ids: Sequence[str]) -> int:
        """Poll exactly these ids from now on: every other id is untracked (as by :meth:`untrack`).

        The reconciler sends the ids whose state can still change, so a job whose final state it has recorded (or
        that it purged or forgot) stops being polled: finished jobs nobody collects would otherwise be polled
        forever. The full resync the reconciler sends after a restart of either actor; returns how many are
        tracked."""
        keep = set(job_ids)
        released = self._tracked - keep
        await self.track(list(keep))
        self._tracked = keep
        self._release(released)
        return len(keep)

    async def untrack(self, job_ids: Sequence[str]) -> int:
        """Stop polling these ids and drop their cached status (idempotent); returns how many ids are tracked now.
        A finished job whose usage has not arrived yet is polled a while longer for it (see the module docstring)."""
        released = [job_id for job_id in job_ids if job_id in self._tracked]
        self._tracked.difference_update(job_ids)
        self._release(released)
        return len(self._tracked)

    def _release(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            cached = self._cache.get(job_id)
            if cached is not None and cached[1].state.is_terminal and cached[1].usage is None:
                self._usage_pending[job_id] = USAGE_REPOLLS
            else:
                self._cache.pop(job_id, None)

    def _forget(self, job_ids: Iterable[str]) -> None:
        """Stop polling these ids at once, usage or not (they were purged)."""
        for job_id in job_ids:
            self._tracked.discard(job_id)
            self._usage_pending.pop(job_id, None)
            self._delivered.pop(job_id, None)
            self._cache.pop(job_id, None)

    async def poll(self) -> bool:
        """One batched status query for every tracked id; returns whether the CE answered."""
        await self.credentials.ready()
        ids = sorted(self._tracked.union(self._usage_pending))
        start = time.monotonic()
        self._polls += 1
        try:
            statuses = await self.backend.status(ids) if ids else []
        except Exception as exc:  # noqa: BLE001 - any failure of the whole poll means "unreachable", never "failed"
            self._poll_errors += 1
            self._failures += 1
            self._reachable = False
            self._last_error = f"{type(exc).__name__}: {exc}"
            metrics.record_error("poll", exc, self.config.name)
            log.warning("CE %s: status poll failed (%s); jobs keep their last state", self.config.name,
                        self._last_error)
            return False
        self._latencies.append(time.monotonic() - start)
        self._reachable, self._failures, self._last_poll_at = True, 0, self._clock()
        for status in statuses:
            if status.job_id in self._tracked or status.job_id in self._usage_pending:
                self._remember(status)
        self._count_usage_polls()
        metrics.record_poll(self.config.name, self._latencies[-1], self._state_counts())
        return True

    def _count_usage_polls(self) -> None:
        """After a poll: a pending job whose usage came is handed over (its cache entry kept until the reconciler
        pulled it); one whose polls are spent is dropped."""
        for job_id, left in list(self._usage_pending.items()):
            cached = self._cache.get(job_id)
            if cached is not None and cached[1].usage is not None:
                del self._usage_pending[job_id]
                self._delivered[job_id] = cached[0]
            elif left <= 1 or cached is None:
                del self._usage_pending[job_id]
                self._cache.pop(job_id, None)
            else:
                self._usage_pending[job_id] = left - 1

    def _remember(self, status: JobStatus) -> None:
        old = self._cache.get(status.job_id)
        if old is not None and _same(old[1], status):
            return
        self._version += 1
        self._cache[status.job_id] = (self._version, status)

    def next_poll_delay(self) -> float:
        """The interval, doubled per consecutive failure up to a minute."""
        return min(self.config.poll_interval * 2.0 ** self._failures, MAX_BACKOFF)

    async def start(self) -> None:
        """Start the poll loop (once: never more than one poller per CE)."""
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever())
        if self._keeping is None or self._keeping.done():
            self._keeping = asyncio.get_running_loop().create_task(self.credentials.run_forever())

    async def _poll_forever(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(self.next_poll_delay())

    async def changes(self, epoch: str, since: int) -> tuple[str, int, list[JobStatus], bool]:
        """Statuses that changed after counter ``since`` of ``epoch`` (all of them if the epoch is not this actor's):
        ``(epoch, new counter, statuses, reachable)``."""
        if epoch != self.epoch:
            since = 0
        for job_id, version in list(self._delivered.items()):
            if version <= since:  # the reconciler has folded it in: an untracked job's entry can go
                del self._delivered[job_id]
                self._cache.pop(job_id, None)
        changed = [s for v, s in self._cache.values() if v > since]
        return self.epoch, self._version, changed, self._reachable and not self.credentials.problem

    # -- forwarded operations ---------------------------------------------------------------------------------

    async def _call(self, what: Callable[[], Awaitable[T]], *, bounded: bool = True) -> T:
        """Run ``what`` (one call of the backend's) with its failure counted, under the concurrency bound unless
        ``bounded`` is False: then ``what`` takes a slot (:attr:`_limit`) itself, around its commands only."""
        await self.credentials.ready()
        if self.credentials.problem:
            self._call_errors += 1
            raise CredentialExpiredError(f"CE {self.config.name}: {self.credentials.problem}")
        async with self._limit if bounded else contextlib.nullcontext():
            try:
                return await what()
            except Exception as exc:
                self._call_errors += 1
                metrics.record_error("call", exc, self.config.name)
                if is_temporary(exc):
                    self._reachable = False
                    self._last_error = f"{type(exc).__name__}: {exc}"
                raise

    async def submit(self, spec: JobSpec) -> SubmitResult:
        tags = [t for i in range(len(spec.copies)) if (t := spec.copy_tag(i)) is not None]
        self._submitting.update(tags)
        try:
            result = await self._call(lambda: self.backend.submit(spec))
        finally:
            self._submitting.subtract(tags)
            for tag in tags:
                if self._submitting[tag] <= 0:
                    del self._submitting[tag]
        self._tracked.update(result.job_ids)
        return result

    async def submit_many(self, specs: Sequence[JobSpec]) -> list[SubmitResult | BaseException]:
        """:meth:`submit` of each spec, all at once (each under the concurrency bound): per spec its result, or the
        exception its submit raised (the coalesced calls of :class:`~intercede.actors.gateway.ActorGateway`)."""
        return await _each(self.submit(spec) for spec in specs)

    async def fetch_many(self, items: Sequence[tuple[str, JobSpec, Path]]) -> list[OutputManifest | BaseException]:
        """:meth:`fetch` of each ``(job_id, spec, destination)``, all at once: per item its verified manifest, or the
        exception its fetch raised."""
        return await _each(self.fetch(job_id, spec, destination) for job_id, spec, destination in items)

    async def find_by_tag(self, tags: Sequence[str]) -> dict[str, list[str]]:
        backend = _require(self.backend, Taggable)
        return await self._call(lambda: backend.find_by_tag(tags))

    async def find_attempts(self, tags: Sequence[str]) -> TaggedJobs:
        """Jobs per tag with the attempt id each carries, and the tags with a submit still running here. The
        in-flight set is read *before* the lookup: a submit that ends during it has landed, so the lookup sees it."""
        in_flight = frozenset(t for t in tags if self._submitting[t] > 0)
        if isinstance(self.backend, AttemptTaggable):
            finder = self.backend
            jobs = await self._call(lambda: finder.find_attempts(tags))
        else:
            backend = _require(self.backend, Taggable)
            plain = await self._call(lambda: backend.find_by_tag(tags))
            jobs = {tag: dict.fromkeys(ids) for tag, ids in plain.items()}
        return TaggedJobs(jobs=jobs, in_flight=in_flight)

    async def fence(self, attempts: Sequence[str]) -> dict[str, bool] | None:
        """Per attempt, whether it is fenced (False: a job of it already runs); None if the backend cannot fence."""
        if not isinstance(self.backend, Fenceable):
            return None
        backend = self.backend
        return await self._call(lambda: backend.fence(attempts))

    async def discard_attempts(self, attempts: Sequence[str]) -> None:
        if isinstance(self.backend, Fenceable) and attempts:
            backend = self.backend
            await self._call(lambda: backend.discard_attempts(attempts))

    async def cancel(self, job_ids: Sequence[str]) -> list[Outcome]:
        backend = _require(self.backend, Cancellable)
        return await self._call(lambda: backend.cancel(job_ids))

    async def fetch(self, job_id: str, spec: JobSpec, destination: Path) -> OutputManifest:
        """Fetch a terminal job's outputs into ``destination`` (on this actor's node) and verify what arrived against
        what the resource listed: every file of the manifest is there, a regular file inside ``destination``, with
        the listed size and sha256 (size only where the backend lists no checksum). Returns the verified manifest,
        naming ``destination`` as given.

        Raises what the backend's fetch raises, :class:`~intercede.reconcile.verify.ManifestMismatchError` when the
        files do not match (temporary: the fetch is repeated, and rewrites every file) or
        :class:`~intercede.reconcile.verify.ManifestConflictError` when no destination could ever match (permanent),
        and :class:`TransferError` when ``destination`` cannot be made."""
        backend = _require(self.backend, OutputRetriever)

        async def fetch_and_verify() -> OutputManifest:
            try:
                await asyncio.to_thread(destination.mkdir, parents=True, exist_ok=True)
            except OSError as exc:
                raise TransferError(f"cannot make the destination {destination} on the node of CE actor "
                                    f"{self.config.name}: {exc.strerror or exc}") from exc
            async with self._limit:
                manifest = await backend.fetch(job_id, spec, destination)
            # Hashing every byte is slow work: keep it off the event loop (status polls go on meanwhile), and out of
            # the slot, as making the destination is: a slot bounds the commands at the resource, and slots held
            # over local work (two thread hops, the hashing) leave the resource idle while others wait for one.
            await asyncio.to_thread(verify_manifest, manifest, job_id, destination)
            return manifest.model_copy(update={"destination": destination})

        return await self._call(fetch_and_verify, bounded=False)

    async def read_output(self, destination: str, name: str, offset: int, size: int = outputs.MAX_CHUNK) -> bytes:
        """At most ``size`` bytes (never more than :data:`~intercede.backends.outputs.MAX_CHUNK`) of the collected
        file ``name`` under ``destination`` on this actor's node, from ``offset``: what a caller on another machine
        pulls, chunk by chunk, into its own directory. Contained (:func:`~intercede.backends.outputs.read_chunk`):
        a name outside ``destination`` or a symlink on the way is refused with
        :class:`~intercede.errors.OutputBoundError`; :class:`TransferError` when the file is not on this node (the
        actor restarted on another one: the outputs stayed on the old node)."""
        return await asyncio.to_thread(outputs.read_chunk, Path(destination), name, offset, size)

    async def purge(self, job_ids: Sequence[str]) -> list[Outcome]:
        backend = _require(self.backend, Purgeable)
        outcomes = await self._call(lambda: backend.purge(job_ids))
        self._forget([o.job_id for o in outcomes if o.ok])
        return outcomes

    async def load(self) -> LoadReport:
        backend = _require(self.backend, LoadReporter)
        return await self._call(backend.load)

    async def health(self) -> CEHealth:
        lat = sorted(self._latencies)
        states = self._state_counts()
        return CEHealth(
            name=self.config.name, reachable=self._reachable, tracked=len(self._tracked), polls=self._polls,
            poll_errors=self._poll_errors, last_poll_at=self._last_poll_at, last_error=self._last_error,
            poll_latency_p50=statistics.median(lat) if lat else None,
            poll_latency_p95=lat[math.ceil(0.95 * len(lat)) - 1] if lat else None,  # nearest rank: never < p50
            call_errors=self._call_errors, states=states, auth_problem=self.credentials.problem,
            credentials=self.credentials.expiries(), usage_pending=len(self._usage_pending),
        )

    def _state_counts(self) -> dict[str, int]:
        states: dict[str, int] = {}
        for _, s in self._cache.values():
            states[s.state.value] = states.get(s.state.value, 0) + 1
        return states

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        if self._keeping is not None:
            self._keeping.cancel()
        await self.backend.aclose()


async def _each(calls: Iterable[Awaitable[T]]) -> list[T | BaseException]:
    """Await every call concurrently; per call its result or the exception it raised. A cancelled call is the
    caller going away: that is raised."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, asyncio.CancelledError):
            raise result
    return [_portable(r) if isinstance(r, BaseException) else r for r in results]


def _portable(error: BaseException) -> BaseException:
    """``error``, or if it cannot be pickled (to travel back as a value) an IntercedeError of the same
    temporariness that names it: a submit's "may have run" must not turn into a permanent failure on the way."""
    try:
        pickle.dumps(error)
    except Exception:  # noqa: BLE001 - whatever pickling raises, the error is replaced
        kind = ConnectivityError if is_temporary(error) else IntercedeError
        return kind(f"{type(error).__name__}: {error}")
    return error


def _same(a: JobStatus, b: JobStatus) -> bool:
    # Usage too: accounting may answer a poll after the one that saw the job end.
    return (a.state, a.native_state, a.exit_code, a.reason, a.usage) == (
        b.state, b.native_state, b.exit_code, b.reason, b.usage)


def _require(backend: object, capability: type[T]) -> T:
    if not isinstance(backend, capability):
        raise UnsupportedError(f"{backend!r} is not {capability.__name__}")
    return backend


