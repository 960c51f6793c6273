"""Pure functions from what the facade returns (lists of dicts or models) to pandas DataFrames. No I/O, no Ray.

* :func:`jobs_frame` — one row per job key, indexed by key: CE, desired phase, observed state, native state, exit code,
  job id, last seen, attempts, last and permanent error, collected, outputs.
* :func:`health_frame` — one row per CE: reachable, last poll, poll latency percentiles, job counts by state (what
  intercede tracks there) and, when given, the resource's own queue counts; error rate.
* :func:`actions_frame` — the reconciler's recent actions (time, kind, key).
* :func:`state_sample` (from rows) / :func:`counts_sample` (from the facade's ``counts()``, whatever the number of
  keys) / :func:`latency_sample` — the records one sample adds to a history; :func:`states_over_time` turns a
  history into a time x state table for plotting.

A key nothing has been observed for yet (declared, not yet submitted or not yet polled) has the state
:data:`UNOBSERVED`.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from intercede.diagnostics.records import STATES, UNOBSERVED, as_dict

__all__ = [
    "ACTION_COLUMNS",
    "HEALTH_COLUMNS",
    "JOB_COLUMNS",
    "STATES",
    "UNOBSERVED",
    "USAGE_COLUMNS",
    "actions_frame",
    "as_dict",
    "counts_frame",
    "counts_sample",
    "health_frame",
    "jobs_frame",
    "latency_sample",
    "state_counts",
    "state_sample",
    "states_over_time",
]

USAGE_COLUMNS = ["wall_seconds", "cpu_seconds", "peak_memory_mb", "node", "started_at", "ended_at"]
JOB_COLUMNS = ["key", "ce", "phase", "state", "native_state", "exit_code", "job_id", "last_seen", "attempts",
               "last_error", "permanent_error", "collected", "outputs", "waiting_reason", "policy_reason",
               *USAGE_COLUMNS]
HEALTH_COLUMNS = ["ce", "reachable", "last_poll", "poll_latency_p50", "poll_latency_p95", "polls", "poll_errors",
                  "error_rate", "call_errors", "tracked", *STATES[1:], "queue_running", "queue_queued", "free_cores",
                  "last_error"]
ACTION_COLUMNS = ["at", "kind", "key"]


def _times(values: pd.Series) -> pd.Series:
    """Epoch seconds (or None) as UTC timestamps (or NaT)."""
    return pd.to_datetime(pd.to_numeric(values, errors="coerce"), unit="s", utc=True)


def _with_usage(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with its ``usage`` (a :class:`~intercede.model.Usage`, a dict, or None) spread into
    :data:`USAGE_COLUMNS`."""
    data = dict(row)
    usage = data.pop("usage", None)
    if usage is not None and not isinstance(usage, Mapping):
        usage = usage.model_dump()
    usage = usage or {}
    data.update({"wall_seconds": usage.get("wall_seconds"), "cpu_seconds": usage.get("cpu_seconds"),
                 "peak_memory_mb": usage.get("peak_memory_mb"), "node": usage.get("node"),
                 "started_at": usage.get("started_at"), "ended_at": usage.get("ended_at")})
    return data


def jobs_frame(rows: Iterable[Any]) -> pd.DataFrame:
    """The facade's ``rows()`` as a DataFrame indexed by key, columns :data:`JOB_COLUMNS` (less ``key``): the
    resource's usage of a finished job in :data:`USAGE_COLUMNS`, and why a key waits (``waiting_reason``: its CE's
    limits hold its submit back) or why intercede ended it (``policy_reason``: a per-state timeout, lost)."""
    frame = pd.DataFrame([_with_usage(as_dict(r)) for r in rows], columns=JOB_COLUMNS)
    for column in ("phase", "state"):  # records carry string enums: plain strings in the frame
        frame[column] = frame[column].map(lambda v: v.value if isinstance(v, enum.Enum) else v)
    frame["state"] = frame["state"].fillna(UNOBSERVED).astype(str)
    frame["exit_code"] = frame["exit_code"].astype("Int64")
    frame["attempts"] = frame["attempts"].fillna(0).astype(int)
    frame["collected"] = frame["collected"].fillna(False).astype(bool)
    frame["last_seen"] = _times(frame["last_seen"])
    frame["outputs"] = frame["outputs"].map(lambda p: p if p is None or p != p else str(p))  # p != p: NaN
    for column in ("wall_seconds", "cpu_seconds", "peak_memory_mb"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    for column in ("started_at", "ended_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    for column in ("native_state", "job_id", "last_error", "permanent_error", "outputs", "waiting_reason",
                   "policy_reason", "node"):
        # Plain objects with None for "none": pandas' string dtype would turn None into NaN.
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame.set_index("key")


def health_frame(health: Iterable[Any], loads: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The facade's ``ce_health()`` (and optionally ``ce_load()``) as a DataFrame indexed by CE name.

    ``error_rate`` is failed polls / polls; the state columns count the jobs the CE actor tracks in each state; the
    ``queue_*`` and ``free_cores`` columns are the resource's own figures (missing where it cannot say).
    """
    records = []
    for item in health:
        h = as_dict(item)
        polls = int(h.get("polls") or 0)
        record: dict[str, Any] = {
            "ce": h["name"], "reachable": bool(h.get("reachable")), "last_poll": h.get("last_poll_at"),
            "poll_latency_p50": h.get("poll_latency_p50"), "poll_latency_p95": h.get("poll_latency_p95"),
            "polls": polls, "poll_errors": int(h.get("poll_errors") or 0),
            "error_rate": (int(h.get("poll_errors") or 0) / polls) if polls else 0.0,
            "call_errors": int(h.get("call_errors") or 0), "tracked": int(h.get("tracked") or 0),
            "last_error": h.get("last_error") or "",
        }
        states: Mapping[str, int] = h.get("states") or {}
        record.update({state: int(states.get(state, 0)) for state in STATES[1:]})
        load = (loads or {}).get(h["name"])
        if load is not None:
            report = as_dict(load)
            record.update(queue_running=report.get("running"), queue_queued=report.get("queued"),
                          free_cores=report.get("free_cores"))
        records.append(record)
    frame = pd.DataFrame(records, columns=HEALTH_COLUMNS)
    frame["last_poll"] = _times(frame["last_poll"])
    for column in ("queue_running", "queue_queued", "free_cores"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    for column in ("poll_latency_p50", "poll_latency_p95", "error_rate"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame.set_index("ce")


def actions_frame(actions: Iterable[Any]) -> pd.DataFrame:
    """The facade's ``recent_actions()`` as a DataFrame (oldest first), columns :data:`ACTION_COLUMNS`."""
    frame = pd.DataFrame([as_dict(a) for a in actions], columns=ACTION_COLUMNS)
    frame["at"] = _times(frame["at"])
    return frame


def state_counts(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], int]:
    """How many keys each (CE, state) has; unobserved keys count as :data:`UNOBSERVED`."""
    return dict(Counter((str(r["ce"]), str(r["state"] or UNOBSERVED)) for r in (as_dict(x) for x in rows)))


def state_sample(rows: Iterable[Mapping[str, Any]], at: float) -> list[dict[str, Any]]:
    """The records one sample of job states adds to a history: ``{"at", "ce", "state", "count"}``."""
    return [{"at": at, "ce": ce, "state": state, "count": n}
            for (ce, state), n in sorted(state_counts(rows).items())]


def counts_sample(counts: Iterable[tuple[str, str | None, str, int]], at: float) -> list[dict[str, Any]]:
    """The records one sample of job states adds to a history, from the facade's ``counts()`` ``(ce, state, phase,
    n)``: the same records as :func:`state_sample`, phases summed."""
    summed: Counter[tuple[str, str]] = Counter()
    for ce, state, _, n in counts:
        summed[(ce, state or UNOBSERVED)] += n
    return [{"at": at, "ce": ce, "state": state, "count": n} for (ce, state), n in sorted(summed.items())]


def counts_frame(counts: Iterable[tuple[str, str | None, str, int]]) -> pd.DataFrame:
    """The facade's ``counts()`` as a CE x state table of key counts (states in :data:`STATES` order, only those that
    occur), with a ``total`` row and column; empty when there are no keys."""
    frame = pd.DataFrame([{"ce": ce, "state": state or UNOBSERVED, "count": n} for ce, state, _, n in counts],
                         columns=["ce", "state", "count"])
    if frame.empty:
        return pd.DataFrame()
    table = frame.pivot_table(index="ce", columns="state", values="count", aggfunc="sum", fill_value=0,
                              margins=True, margins_name="total")
    order = [s for s in STATES if s in table.columns]
    table = table[order + [c for c in table.columns if c not in order]].astype(int)
    table.index.name, table.columns.name = "ce", None
    return table


def latency_sample(health: Iterable[Any], at: float) -> list[dict[str, Any]]:
    """The records one sample of CE health adds to a history: ``{"at", "ce", "p50", "p95", "reachable"}``."""
    return [{"at": at, "ce": h["name"], "p50": h.get("poll_latency_p50"), "p95": h.get("poll_latency_p95"),
             "reachable": bool(h.get("reachable"))} for h in (as_dict(x) for x in health)]


def states_over_time(history: Iterable[Mapping[str, Any]], ce: str | None = None) -> pd.DataFrame:
    """A state-sample history as a table: one row per sample (index: seconds since the history's first sample), one
    column per state in :data:`STATES` order (only the states that occur), job counts (of ``ce`` only, if given)."""
    frame = pd.DataFrame(list(history), columns=["at", "ce", "state", "count"])
    start = float(frame["at"].min()) if not frame.empty else 0.0
    if ce is not None:
        frame = frame[frame["ce"] == ce]
    if frame.empty:
        return pd.DataFrame(index=pd.Index([], name="elapsed_s", dtype=float))
    table = frame.pivot_table(index="at", columns="state", values="count", aggfunc="sum", fill_value=0)
    table = table[[s for s in STATES if s in table.columns] + [s for s in table.columns if s not in STATES]]
    table.index = pd.Index([float(at) - start for at in table.index], name="elapsed_s")
    table.columns.name = None
    return table.astype(int)
