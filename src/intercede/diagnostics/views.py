"""What an operator looks at from a notebook: :class:`Diagnostics` over a running intercede, and its :class:`Snapshot`.

::

    diag = Diagnostics.attach()              # or Diagnostics(Intercede.start(...))
    await diag.refresh()                     # a Snapshot: renders as HTML tables in Jupyter
    diag.jobs                                # the jobs of the last snapshot, a DataFrame indexed by key
    await diag.watch(keys, until="terminal") # refresh every second, live table + progress bar, until all settled
    diag.plot_states(); diag.plot_poll_latency()

Every :meth:`Diagnostics.refresh` also records a *sample* (job counts per CE and state, each CE's poll latency), so
the plots show how things went over time. What moves per refresh is bounded whatever the number of keys: the counts
(one number per CE, state and phase), the rows of the first ``jobs`` keys only, and while :meth:`Diagnostics.watch`
waits, only the keys that settled since the last ask. All I/O goes through the
:class:`~intercede.actors.client.Intercede` facade; everything else is the pure functions of :mod:`.frames` and
:mod:`.plots`.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pandas as pd
from matplotlib.axes import Axes
from tqdm.auto import tqdm

from intercede.actors.client import Intercede
from intercede.diagnostics import frames, plots
from intercede.errors import IntercedeError, TimeoutError
from intercede.reconcile import KeyRow

__all__ = ["Diagnostics", "Snapshot", "Until", "settled"]

Until = Literal["running", "terminal", "collected"]
_TERMINAL = ("Done", "Failed", "Aborted")


def settled(row: KeyRow | Mapping[str, Any], until: Until) -> bool:
    """Whether a key (a facade row) has got as far as ``until``; a key with a permanent error has gone as far as it
    will, and a key cancelled before it was ever submitted is settled too."""
    def get(name: str) -> Any:
        return row.get(name) if isinstance(row, Mapping) else getattr(row, name)

    if get("permanent_error"):
        return True
    if until == "collected":
        return bool(get("collected"))
    if get("phase") == "cancelled" and get("job_id") is None:
        return True
    wanted = _TERMINAL if until == "terminal" else ("Running", *_TERMINAL)
    return get("state") in wanted


@dataclass(frozen=True, eq=False)  # DataFrames do not compare to a bool
class Snapshot:
    """intercede at one moment: the jobs, the CEs, the recent actions and the reconciler's own figures."""

    jobs: pd.DataFrame
    ces: pd.DataFrame
    actions: pd.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)
    taken_at: float = field(default_factory=time.time)
    #: The facade's ``counts()`` at that moment (every key, however many; ``jobs`` may hold the first ones only).
    counts: list[tuple[str, str | None, str, int]] | None = None

    @property
    def keys(self) -> int:
        """How many keys there were (all of them, not only the rows in ``jobs``)."""
        return len(self.jobs) if self.counts is None else sum(n for *_, n in self.counts)

    def summary(self) -> pd.DataFrame:
        """Job counts, one row per CE, one column per state that occurs (in progress order), with a total row and
        column: of every key (from the counts), or of the rows in ``jobs`` when the snapshot has no counts."""
        if self.counts is not None:
            return frames.counts_frame(self.counts)
        if self.jobs.empty:
            return pd.DataFrame()
        table = pd.crosstab(self.jobs["ce"], self.jobs["state"], margins=True, margins_name="total")
        order = [s for s in frames.STATES if s in table.columns]
        table = table[order + [c for c in table.columns if c not in order]]
        table.columns.name = None
        return table

    def __repr__(self) -> str:
        when = datetime.fromtimestamp(self.taken_at, UTC).strftime("%H:%M:%S")
        counts: dict[str, int] = {}
        if self.counts is not None:
            for _, state, _, n in self.counts:
                counts[state or frames.UNOBSERVED] = counts.get(state or frames.UNOBSERVED, 0) + n
        elif not self.jobs.empty:
            counts = {str(state): int(n) for state, n in self.jobs["state"].value_counts().items()}
        states = ", ".join(f"{s} {counts[s]}" for s in frames.STATES if counts.get(s))
        return f"<Snapshot at {when} UTC: {self.keys} keys ({states or 'none'}) on {len(self.ces)} CE(s)>"

    def _repr_html_(self) -> str:
        return self.to_html()

    def to_html(self, max_jobs: int = 50, max_actions: int = 10) -> str:
        when = datetime.fromtimestamp(self.taken_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        ticks = self.stats.get("ticks", "?")
        head = (f"<b>intercede</b> at {when}: {self.keys} keys on {len(self.ces)} CE(s), "
                f"{ticks} reconcile ticks, {self.stats.get('tick_errors', 0)} tick errors")
        if self.stats.get("last_error"):
            head += f" (last: {html.escape(str(self.stats['last_error']))})"
        parts = [f"<div class='intercede-snapshot'><p>{head}</p>"]
        if self.keys:
            parts += ["<h4>jobs by state</h4>", self.summary().to_html()]
        parts += ["<h4>CEs</h4>", self.ces.to_html(na_rep="-", float_format=_fmt)]
        if not self.jobs.empty:
            shown = self.jobs.head(max_jobs)
            more = f" (first {min(max_jobs, len(self.jobs))} of {self.keys})" if self.keys > max_jobs else ""
            parts += [f"<h4>jobs{more}</h4>", shown.to_html(na_rep="-")]
        if not self.actions.empty:
            parts += [f"<h4>recent actions (last {max_actions})</h4>",
                      self.actions.tail(max_actions).to_html(index=False)]
        return "".join(parts) + "</div>"


def _fmt(value: float) -> str:
    return f"{value:.3g}"


class Diagnostics:
    """Snapshots, samples over time and plots of a running intercede (see the module docstring)."""

    def __init__(self, ic: Intercede, *, max_samples: int = 10_000) -> None:
        self.ic = ic
        self.max_samples = max_samples
        self.last: Snapshot | None = None
        self.rows: list[KeyRow] = []  # the facade's rows of the last snapshot (the first ``jobs`` keys)
        self._states: list[list[dict[str, Any]]] = []
        self._latency: list[list[dict[str, Any]]] = []

    @classmethod
    def attach(cls, namespace: str = "intercede", address: str | None = "auto") -> Diagnostics:
        """Attach to the intercede running in ``namespace`` of the Ray cluster at ``address``."""
        return cls(Intercede.attach(namespace, address))

    # -- I/O: one refresh -------------------------------------------------------------------------------------

    async def refresh(self, *, load: bool = False, actions: int = 200, jobs: int = 1000) -> Snapshot:
        """Take a snapshot (and record a sample): the counts of every key, the rows of the first ``jobs`` keys (by
        key), CE health and recent actions. ``load`` also asks each CE for its own queue counts (one command per
        CE, so not every second)."""
        counts = await self.ic.counts()
        rows = await self.ic.rows(limit=jobs)
        health = await self.ic.ce_health()
        recent = await self.ic.recent_actions(actions)
        stats = await self.ic.stats()
        loads = await self.ic.ce_load() if load else None
        now = time.time()
        self.rows = rows
        self._record(frames.counts_sample(counts, now), frames.latency_sample(health, now))
        self.last = Snapshot(frames.jobs_frame(rows), frames.health_frame(health, loads), frames.actions_frame(recent),
                             stats, now, counts)
        return self.last

    def _record(self, states: list[dict[str, Any]], latency: list[dict[str, Any]]) -> None:
        self._states.append(states)
        self._latency.append(latency)
        del self._states[:-self.max_samples], self._latency[:-self.max_samples]

    async def watch(self, keys: Sequence[str] | None = None, *, until: Until = "terminal", every: float = 1.0,
                    timeout: float = 3600.0, progress: bool = True, live: bool = True) -> Snapshot:
        """Refresh every ``every`` seconds until every key of ``keys`` (default: all) is settled (see :func:`settled`);
        a progress bar and, in a notebook, a live-updated table while it waits. Returns the last snapshot; raises
        :class:`~intercede.errors.UnknownKeyError` for keys never declared and
        :class:`~intercede.errors.TimeoutError` naming the unsettled keys after ``timeout`` seconds.

        Each ask moves only what changed: for ``terminal`` and ``collected`` the keys that settled since the last
        ask (the reconciler's watch), for ``running`` the rows of the keys not settled yet."""
        deadline = time.monotonic() + timeout
        display = _LiveDisplay() if live else None
        wanted = list(dict.fromkeys(keys)) if keys is not None else [r.key for r in await self.ic.rows()]
        settle = _Settling(self.ic, until)
        pending = dict.fromkeys(wanted)
        for key in await settle.start(wanted):
            pending.pop(key, None)
        bar = tqdm(total=len(wanted), desc=f"watch ({until})", unit="job", disable=not progress)
        try:
            while True:
                for key in await settle.more(list(pending)):
                    pending.pop(key, None)
                snap = await self.refresh()  # after the ask: the snapshot returned shows every watched key settled
                bar.update(len(wanted) - len(pending) - bar.n)
                if display is not None:
                    display.show(snap)
                if not pending:
                    return snap
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(pending)} jobs not {until} after {timeout:.0f} s: {sorted(pending)[:10]}")
                await asyncio.sleep(every)
        finally:
            bar.close()
            await settle.stop()

    # -- the last snapshot and the histories ------------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        if self.last is None:
            raise IntercedeError("no snapshot yet: `await diag.refresh()` first")
        return self.last

    @property
    def jobs(self) -> pd.DataFrame:
        """The jobs of the last snapshot (see :func:`~intercede.diagnostics.frames.jobs_frame`)."""
        return self._snapshot().jobs

    @property
    def ces(self) -> pd.DataFrame:
        """Per-CE health of the last snapshot (see :func:`~intercede.diagnostics.frames.health_frame`)."""
        return self._snapshot().ces

    @property
    def actions(self) -> pd.DataFrame:
        """The recent actions of the last snapshot."""
        return self._snapshot().actions

    @property
    def state_history(self) -> pd.DataFrame:
        """Every sample of job counts: ``at`` (epoch s), ``ce``, ``state``, ``count``."""
        return pd.DataFrame(self._flat(self._states), columns=["at", "ce", "state", "count"])

    @property
    def latency_history(self) -> pd.DataFrame:
        """Every sample of poll latency: ``at``, ``ce``, ``p50``, ``p95`` (seconds), ``reachable``."""
        return pd.DataFrame(self._flat(self._latency), columns=["at", "ce", "p50", "p95", "reachable"])

    @staticmethod
    def _flat(samples: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        return [record for sample in samples for record in sample]

    def states_over_time(self, ce: str | None = None) -> pd.DataFrame:
        """The state history as a table: seconds since the first sample x state."""
        return frames.states_over_time(self._flat(self._states), ce)

    def plot_states(self, ax: Axes | None = None, *, ce: str | None = None) -> Axes:
        """Job states over time (all CEs, or ``ce``), from the samples taken so far."""
        return plots.plot_states(self._flat(self._states), ax, ce=ce)

    def plot_poll_latency(self, ax: Axes | None = None) -> Axes:
        """Per-CE poll latency (p50, p95) over time, from the samples taken so far."""
        return plots.plot_poll_latency(self._flat(self._latency), ax)

    def _repr_html_(self) -> str:
        if self.last is None:
            return "<p>intercede diagnostics: no snapshot yet (<code>await diag.refresh()</code>)</p>"
        return f"<p>{len(self._states)} samples taken</p>" + self.last.to_html()


class _Settling:
    """Which watched keys settled: the reconciler's watch for ``terminal`` / ``collected`` (it answers with the keys
    that settled since the last ask), the rows of the unsettled keys for ``running`` (the reconciler does not watch
    for it)."""

    def __init__(self, ic: Intercede, until: Until) -> None:
        self._ic, self._until = ic, until
        self._watch: str | None = None

    async def start(self, keys: list[str]) -> list[str]:
        if self._until == "running":
            return [r.key for r in await self._ic.rows_of(keys) if settled(r, self._until)]
        self._watch, done = await self._ic.watch(keys, self._until)
        return done

    async def more(self, pending: list[str]) -> list[str]:
        if not pending:
            return []
        if self._watch is None:
            return [r.key for r in await self._ic.rows_of(pending) if settled(r, self._until)]
        done = await self._ic.settled_since(self._watch)
        if done is None:  # the reconciler restarted (or dropped the watch): watch what is left
            assert self._until != "running"
            self._watch, done = await self._ic.watch(pending, self._until)
        return done

    async def stop(self) -> None:
        if self._watch is not None:
            with contextlib.suppress(Exception):  # best effort: an abandoned watch expires by itself
                await self._ic.unwatch(self._watch)


class _LiveDisplay:
    """One HTML output updated in place, when running under IPython; nothing otherwise."""

    def __init__(self) -> None:
        self._handle: Any = None
        self._enabled = _in_ipython()

    def show(self, snap: Snapshot) -> None:
        if not self._enabled:
            return
        from IPython.display import HTML, display

        content = HTML(snap.to_html(max_jobs=20, max_actions=5))  # type: ignore[no-untyped-call]
        if self._handle is None:
            self._handle = display(content, display_id=True)  # type: ignore[no-untyped-call]
        else:
            self._handle.update(content)


def _in_ipython() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None
