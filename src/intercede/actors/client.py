"""The facade a WMS or a notebook uses: start or attach to intercede, declare jobs, cancel, collect, query, wait.

::

    ic = Intercede.start(Settings.embedded())          # or Intercede.attach() from a notebook
    await ic.declare([JobRequest("job-1", "local", JobSpec(executable="/bin/echo", arguments=["hi"]))])
    await ic.wait(["job-1"])                            # progress bar in terminals and notebooks
    await ic.collect(["job-1"], Path("outputs"))        # outputs/job-1/... on THIS machine

Outputs are fetched and verified by each key's CE actor, on its node, into the service's output area (see
:meth:`ReconcilerActor.collect <intercede.actors.reconciler.ReconcilerActor.collect>`); :meth:`Intercede.collect`
pulls them from there through Ray, in chunks of at most :data:`~intercede.backends.outputs.MAX_CHUNK` bytes, into the
directory given on the machine where it is called, wherever the actors run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from intercede.actors import cluster
from intercede.actors.ce import CEHealth
from intercede.actors.reconciler import (
    ActionRecord,
    JobRequest,
    ReconcilerActor,
    Until,
    ce_actor_name,
    limits_only_change,
    reconciler_name,
    settled,
)
from intercede.actors.seam import RaySeam, Seam
from intercede.actors.settings import Settings
from intercede.backends import outputs
from intercede.backends.capabilities import LoadReport
from intercede.errors import (
    ConfigConflictError,
    ConnectivityError,
    InvalidSpecError,
    TimeoutError,
)
from intercede.model import OutputManifest
from intercede.reconcile import KeyRow

__all__ = ["Intercede"]


class Intercede:
    """A handle on a running ReconcilerActor (through the seam)."""

    def __init__(self, seam: Seam, handle: Any) -> None:
        self._seam, self._handle = seam, handle

    @classmethod
    def start(cls, settings: Settings, *, seam: Seam | None = None, fault_plan: Path | None = None,
              address: str | None = None, replace: bool = False) -> Intercede:
        """Start the named actors for ``settings`` (the reconciler starts its loop itself), or join them if they run
        already with the same settings.

        With the SQLite journal the reconciler is placed on the node that holds the file (``settings.journal_node``,
        by default the Ray node this process runs on), with NodeAffinitySchedulingStrategy(soft=False): Ray restarts
        it only there; if that node is lost the reconciler is not started anywhere else (it would open an empty
        journal): calls to it raise :class:`ConnectivityError` until the node is back and ``start`` runs there
        again. Options the seam was given for the reconciler replace this placement. :class:`InvalidSpecError` if
        ``journal_node`` is not a live node. With a PostgreSQL journal Ray may start and restart it on any node.

        If the running intercede differs only in CE limits (``max_queued``, ``downtime``, ...: see
        :data:`~intercede.backends.registry.LIMIT_FIELDS`), the new limits are applied to it at once, without a
        restart. If it has other settings, :class:`ConfigConflictError` names what differs and nothing
        changes: a new configuration is never silently ignored. With ``replace`` the running reconciler is stopped
        (and the CE actors whose configuration changed or that are gone), and one with ``settings`` starts; it
        resumes from the journal under the new ``data_dir``. Jobs in flight keep running at their CEs.
        """
        if seam is None:
            if address is None and cluster.recorded_cluster_is_dead():
                address = "local"
            RaySeam.connect(settings.namespace, address)
            seam = RaySeam(settings.namespace)
        running = seam.find(reconciler_name())
        if running is not None:
            current: Settings = seam.call_blocking(running, "running_settings")
            if current != settings and limits_only_change(current, settings):
                seam.call_blocking(running, "apply_limits", settings)
            elif current != settings:
                if not replace:
                    raise ConfigConflictError(_conflict(current, settings))
                _stop(seam, running, current, settings)
        # The SQLite journal is a file on one node's disk: the reconciler runs there and Ray restarts it only there
        # (elsewhere it would open an empty journal). The reconciler starts its CE actors through this same seam (in
        # process, or shipped to its Ray actor with its placement options and timeout).
        node = (settings.journal_node or seam.node()) if settings.journal_on_a_node else None
        placed = seam.pinned(reconciler_name(), node) if node is not None else seam
        handle = placed.start(ReconcilerActor, reconciler_name(), settings, seam=placed, fault_plan=fault_plan)
        return cls(seam, handle)

    @classmethod
    def attach(cls, namespace: str = "intercede", address: str | None = "auto") -> Intercede:
        """Attach to a running intercede; :class:`ConnectivityError` saying what to do if there is none.

        Fails within seconds when no Ray cluster answers at ``address``. A cluster started on this machine uses the
        token in ``~/.ray/auth_token``: it is sent to an explicit ``address`` too (Ray itself does so only for a
        cluster it finds), unless ``RAY_AUTH_MODE`` says otherwise.
        """
        resolved = cluster.require_cluster(address)
        if resolved is not None:
            cluster.use_local_token()
        try:
            RaySeam.connect(namespace, address)
        except ConnectionError as exc:
            where = f"the Ray cluster at {resolved}" if resolved else "a Ray cluster"
            raise ConnectivityError(f"could not join {where}: {exc}. If it runs with token authentication, this "
                                    "machine needs its token (~/.ray/auth_token, or RAY_AUTH_TOKEN)") from exc
        seam = RaySeam(namespace)
        handle = seam.find(reconciler_name())
        if handle is None:
            raise ConnectivityError(f"no intercede is running in Ray namespace {namespace!r}; "
                                    "start one with `intercede run`")
        return cls(seam, handle)

    async def _call(self, method: str, *args: Any) -> Any:
        return await self._seam.call(self._handle, method, *args)

    async def declare(self, jobs: Sequence[JobRequest], *, batch: int = 500, progress: bool = True) -> None:
        """Declare jobs in batches, with a progress bar. All or nothing: every job is checked before any is declared,
        and :class:`InvalidSpecError` names each refused one (a bad key or CE, another spec for a known key, a key
        being forgotten). Should a later batch still be refused (another client declared the same keys meanwhile),
        the error says how many jobs, and which keys, were declared before it."""
        jobs = list(jobs)
        if len(jobs) > batch:  # one batch is checked and applied atomically by the actor itself
            problems: list[str] = []
            for i in range(0, len(jobs), batch):
                problems += await self._call("check_declare", jobs[i:i + batch])
            if problems:
                shown = "; ".join(problems[:10]) + (f"; ... and {len(problems) - 10} more" if len(problems) > 10
                                                    else "")
                raise InvalidSpecError(f"declare refused for {len(problems)} of {len(jobs)} job(s), nothing was "
                                       f"declared: {shown}")
        with tqdm(total=len(jobs), desc="declare", unit="job", disable=not progress) as bar:
            for i in range(0, len(jobs), batch):
                try:
                    await self._call("declare", jobs[i:i + batch])
                except InvalidSpecError as exc:
                    if i == 0:
                        raise
                    raise InvalidSpecError(f"{exc}; the first {i} job(s) were declared (keys {jobs[0].key!r} to "
                                           f"{jobs[i - 1].key!r}), the rest were not") from exc
                bar.update(len(jobs[i:i + batch]))

    async def cancel(self, keys: Sequence[str]) -> None:
        """Cancel each key's job; its files at the CE are purged ``purge_cancelled_after`` seconds later (a
        :meth:`collect` before then still gets them). :class:`UnknownKeyError` names keys never declared (and nothing
        is changed)."""
        await self._call("cancel", list(keys))

    async def collect(self, keys: Sequence[str], destination: Path, *, wait: bool = True, timeout: float = 3600.0,
                      progress: bool = True) -> dict[str, OutputManifest]:
        """Collect each key's outputs into ``destination/<key>`` **on the machine where this is called**, wherever
        the actors run; returns the manifest of what was written there, per key collected.

        The key's CE actor fetches the outputs once the job is terminal and verifies them on its node (into the
        service's output area, see :meth:`ReconcilerActor.collect
        <intercede.actors.reconciler.ReconcilerActor.collect>`), the reconciler records the manifest and purges the
        remote job; then this pulls the files (:meth:`download`). With ``wait`` false it only asks and returns ``{}``
        (a later call pulls them). Keys that end with a permanent error instead (their :meth:`rows_of` says why) are
        left out of the answer. :class:`UnknownKeyError` names keys never declared (and nothing is changed);
        :class:`TimeoutError` after ``timeout`` seconds; what :meth:`download` raises."""
        await self._call("collect", list(keys))
        if not wait:
            return {}
        rows = await self.wait(keys, until="collected", timeout=timeout, progress=progress)
        return await self.download([r.key for r in rows if r.collected], destination)

    async def recorded_outputs(self, keys: Sequence[str]) -> dict[str, OutputManifest]:
        """The recorded (verified) manifest of each key whose outputs were fetched; its ``destination`` is the
        service's copy, on the node of the key's CE actor. :class:`UnknownKeyError` names keys never declared."""
        found = await self._call("outputs_of", list(keys))
        return {key: manifest for key, _, manifest in found if manifest is not None}

    async def download(self, keys: Sequence[str], destination: Path) -> dict[str, OutputManifest]:
        """Pull the recorded outputs of ``keys`` into ``destination/<key>`` on this machine; returns the manifest of
        what was written, per key whose outputs are recorded (the others are left out).

        Each file is read from the key's CE actor in chunks of at most
        :data:`~intercede.backends.outputs.MAX_CHUNK` bytes, staged under ``destination/<key>``, checked against the
        recorded manifest's size and sha256, and moved into place only once all of the key's files arrived
        (:func:`~intercede.backends.outputs.receive`): nothing is written outside ``destination/<key>`` nor through
        a symlink there (:class:`~intercede.errors.OutputBoundError` for a hostile name),
        :class:`~intercede.errors.TransferError` for a file that does not match or that the CE actor's node no longer
        holds (the actor restarted on another node), :class:`ConnectivityError` if the CE actor is gone."""
        pulled: dict[str, OutputManifest] = {}
        for key, ce, manifest in await self._call("outputs_of", list(keys)):
            if manifest is None:
                continue
            handle = self._seam.find(ce_actor_name(ce))
            if handle is None:
                raise ConnectivityError(f"the actor of CE {ce!r} that holds the outputs of {key!r} is not running")
            source = str(manifest.destination)

            async def read(name: str, offset: int, size: int, handle: Any = handle, source: str = source) -> bytes:
                data: bytes = await self._seam.call(handle, "read_output", source, name, offset, size)
                return data

            outputs.split_name(key)  # a key is one path component (the model guarantees it; never trust a wire)
            pulled[key] = await outputs.receive(destination.absolute() / key, manifest, read)  # noqa: ASYNC240
        return pulled

    async def forget(self, keys: Sequence[str]) -> None:
        """Cancel, purge and drop each key. :class:`UnknownKeyError` names keys never declared (and nothing is
        changed)."""
        await self._call("forget", list(keys))

    async def rows(self, limit: int | None = None) -> list[KeyRow]:
        """Every key's :class:`~intercede.reconcile.KeyRow` (key, ce, phase, state, native_state, exit_code, job_id,
        last_seen, attempts, last_error, permanent_error, collected, outputs), sorted by key; the first ``limit``
        only if given. Moves every row asked for: for summaries use :meth:`counts`, for some keys :meth:`rows_of`,
        to wait :meth:`wait`."""
        rows: list[KeyRow] = await self._call("rows", limit)
        return rows

    async def unknown(self, keys: Sequence[str]) -> list[str]:
        """Which of ``keys`` were never declared (or are forgotten), in their order; moves no row."""
        unknown: list[str] = await self._call("unknown", list(keys))
        return unknown

    async def ce_health(self) -> list[CEHealth]:
        health: list[CEHealth] = await self._call("ce_health")
        return health

    async def recent_actions(self, limit: int = 200) -> list[ActionRecord]:
        actions: list[ActionRecord] = await self._call("recent_actions", limit)
        return actions

    async def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self._call("stats")
        return stats

    async def ce_load(self) -> dict[str, LoadReport | None]:
        """What each CE's resource says of itself (free cores, running, queued), None where it cannot say (no such
        capability, or unreachable right now). One command per CE: call it on demand, not in a tight loop."""
        loads: dict[str, LoadReport | None] = {}
        for health in await self.ce_health():
            handle = self._seam.find(ce_actor_name(health.name))
            loads[health.name] = None
            if handle is not None:
                with contextlib.suppress(Exception):  # unsupported or unreachable: "cannot say" is the answer
                    loads[health.name] = await self._seam.call(handle, "load")
        return loads

    @staticmethod
    def cluster_address() -> str | None:
        """The address of the Ray cluster this process joined (what ``intercede status --address`` takes)."""
        return cluster.joined_address()

    async def wait(self, keys: Sequence[str], *, until: Until = "terminal", timeout: float = 3600.0,
                   interval: float = 0.5, progress: bool = True) -> list[KeyRow]:
        """Wait until every key is terminal (or collected); keys with a permanent error count as settled. Returns
        the keys' rows, in their order.

        The keys are sent once (:meth:`ReconcilerActor.watch`); each interval then moves only the keys that settled
        since the last one (:meth:`ReconcilerActor.settled_since`), not every row. Once none is pending the rows are
        fetched once, and any key found unsettled again (its phase changed meanwhile) is waited for too; a reconciler
        that restarted meanwhile is asked again. :class:`UnknownKeyError` names keys never declared; raises
        :class:`TimeoutError` listing the unsettled keys after ``timeout`` seconds.
        """
        wanted = list(dict.fromkeys(keys))
        deadline = time.monotonic() + timeout
        watching = wanted
        with tqdm(total=len(wanted), desc=f"wait ({until})", unit="job", disable=not progress) as bar:
            while True:
                watch_id, done = await self._call("watch", watching, until)
                pending = dict.fromkeys(watching)
                try:
                    while True:
                        for key in done:
                            pending.pop(key, None)
                        bar.update(len(wanted) - len(pending) - bar.n)
                        if not pending:
                            break
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"{len(pending)} jobs not {until} after {timeout:.0f} s: "
                                               f"{sorted(pending)[:10]}")
                        await asyncio.sleep(interval)
                        asked: list[str] | None = await self._call("settled_since", watch_id)
                        if asked is None:  # the reconciler restarted (or dropped the watch): watch what is left
                            break
                        done = asked
                finally:
                    if pending:
                        with contextlib.suppress(Exception):  # best effort: an abandoned watch expires by itself
                            await self._call("unwatch", watch_id)
                if pending:
                    watching = list(pending)
                    continue
                rows: list[KeyRow] = await self._call("rows_of", wanted)
                watching = [r.key for r in rows if not settled(r, until)]
                if not watching:
                    bar.update(len(wanted) - bar.n)
                    return rows

    async def watch(self, keys: Sequence[str], until: Until = "terminal") -> tuple[str, list[str]]:
        """Start watching ``keys`` until they settle: ``(watch id, keys settled already)``; then
        :meth:`settled_since` answers with the keys that settled since the last ask (None: watch again, the
        reconciler restarted). What :meth:`wait` uses; see :meth:`ReconcilerActor.watch
        <intercede.actors.reconciler.ReconcilerActor.watch>`."""
        watch_id, done = await self._call("watch", list(keys), until)
        return str(watch_id), list(done)

    async def settled_since(self, watch_id: str) -> list[str] | None:
        done: list[str] | None = await self._call("settled_since", watch_id)
        return done

    async def unwatch(self, watch_id: str) -> None:
        await self._call("unwatch", watch_id)

    async def rows_of(self, keys: Sequence[str]) -> list[KeyRow]:
        """The rows of ``keys`` only (as :meth:`rows`); :class:`UnknownKeyError` names keys never declared."""
        rows: list[KeyRow] = await self._call("rows_of", list(keys))
        return rows

    async def counts(self) -> list[tuple[str, str | None, str, int]]:
        """How many keys per (CE, state, wanted phase): ``(ce, state or None, phase, count)``, however many keys."""
        counts: list[tuple[str, str | None, str, int]] = await self._call("counts")
        return counts


def _conflict(running: Settings, wanted: Settings) -> str:
    """What differs between the running settings and the wanted ones, by field and CE name (never by value: a CE's
    options may hold secrets)."""
    differences = [name for name in type(wanted).model_fields
                   if name != "ce" and getattr(running, name) != getattr(wanted, name)]
    have = {c.name: c for c in running.ce}
    want = {c.name: c for c in wanted.ce}
    if added := sorted(want.keys() - have.keys()):
        differences.append(f"CEs added: {', '.join(added)}")
    if gone := sorted(have.keys() - want.keys()):
        differences.append(f"CEs removed: {', '.join(gone)}")
    for name in sorted(have.keys() & want.keys()):
        if have[name] != want[name]:
            fields = [f for f in type(want[name]).model_fields if getattr(have[name], f) != getattr(want[name], f)]
            differences.append(f"CE {name!r} changed ({', '.join(fields) or 'its kind'})")
    return (f"intercede already runs in Ray namespace {wanted.namespace!r} with other settings "
            f"({'; '.join(differences)}); nothing was changed. Replace it explicitly (`intercede run --replace`, "
            "or Intercede.start(settings, replace=True)), or stop it first")


def _stop(seam: Seam, reconciler: Any, running: Settings, wanted: Settings) -> None:
    """Kill the running reconciler and the CE actors ``wanted`` does not keep as they are; return once their names
    are free (:class:`TimeoutError` otherwise)."""
    keep = {c.name for c in wanted.ce} & {c.name for c in running.ce if c in wanted.ce}
    names = [reconciler_name()] + [ce_actor_name(c.name) for c in running.ce if c.name not in keep]
    handles = [(name, reconciler if name == reconciler_name() else seam.find(name)) for name in names]
    # Stopped cleanly first, so its journal is released before its successor opens it (a kill returns before the
    # process is gone).
    seam.call_blocking(reconciler, "close")
    for _, handle in handles:
        if handle is not None:
            seam.kill(handle)
    deadline = time.monotonic() + seam.timeout
    for name, _ in handles:
        while seam.find(name) is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"actor {name} did not stop within {seam.timeout:g} s")
            time.sleep(0.1)
