"""Matplotlib plots of the histories a :class:`~intercede.diagnostics.views.Diagnostics` samples. Pure drawing.

Each function draws on ``ax`` (a new figure's axes if None) and returns the axes, so a notebook cell ending in a call
shows the plot (inline backend) and a script can ``ax.figure.savefig(...)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.axes import Axes

from intercede.diagnostics.frames import states_over_time
from intercede.diagnostics.records import STATES, UNOBSERVED

__all__ = ["STATE_COLORS", "plot_poll_latency", "plot_states"]

#: One colour per state, the same in every plot.
STATE_COLORS = {
    UNOBSERVED: "#c7c7c7", "Submitted": "#9ecae1", "Waiting": "#fdae6b", "Running": "#3182bd", "Done": "#31a354",
    "Failed": "#de2d26", "Aborted": "#756bb1", "Unknown": "#252525",
}


def _axes(ax: Axes | None, title: str) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5), layout="constrained")
    ax.set_title(title)
    return ax


def plot_states(history: Iterable[Mapping[str, Any]], ax: Axes | None = None, *, ce: str | None = None) -> Axes:
    """Job states over time: a stacked area of how many keys were in each state at each sample."""
    table = states_over_time(history, ce)
    ax = _axes(ax, "job states over time" + (f" on {ce}" if ce else ""))
    ax.set_xlabel("seconds since the first sample")
    ax.set_ylabel("jobs")
    if table.empty:
        ax.text(0.5, 0.5, "no samples yet", ha="center", va="center", transform=ax.transAxes)
        return ax
    states = [s for s in STATES if s in table.columns] + [s for s in table.columns if s not in STATES]
    ax.stackplot(table.index.to_numpy(), *(table[s].to_numpy() for s in states), labels=states,
                 colors=[STATE_COLORS.get(s, "#999999") for s in states], alpha=0.9, step="post")
    ax.set_xlim(table.index.min(), max(table.index.max(), table.index.min() + 1e-9))
    ax.set_ylim(0, max(1, int(table.sum(axis=1).max())))
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    return ax


def plot_poll_latency(history: Iterable[Mapping[str, Any]], ax: Axes | None = None) -> Axes:
    """Per-CE poll latency over time: the median (solid) and 95th percentile (dashed) of recent polls, in ms."""
    frame = pd.DataFrame(list(history), columns=["at", "ce", "p50", "p95", "reachable"])
    ax = _axes(ax, "status poll latency per CE")
    ax.set_xlabel("seconds since the first sample")
    ax.set_ylabel("latency (ms)")
    frame = frame.dropna(subset=["p50"])
    if frame.empty:
        ax.text(0.5, 0.5, "no successful poll yet", ha="center", va="center", transform=ax.transAxes)
        return ax
    start = float(frame["at"].min())
    for ce, rows in frame.groupby("ce", sort=True):
        elapsed = rows["at"].astype(float).to_numpy() - start
        line = ax.plot(elapsed, rows["p50"].astype(float).to_numpy() * 1000, marker="o", ms=3, label=f"{ce} p50")[0]
        ax.plot(elapsed, rows["p95"].astype(float).to_numpy() * 1000, ls="--", color=line.get_color(),
                label=f"{ce} p95")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    return ax
