"""intercede's figures as Ray metrics, so they appear on every node's Prometheus endpoint (``/metrics``).

=====================================  =========  ======================  ==============================================
metric (Prometheus adds ``ray_``)      type       tags                    recorded by
=====================================  =========  ======================  ==============================================
``intercede_jobs``                     gauge      ``ce``, ``state``       each CE actor after every successful poll
``intercede_actions_total``            counter    ``kind``                the reconciler, per action it issues
``intercede_errors_total``             counter    ``ce``, ``where``,      a failed poll (``where="poll"``), a failed
                                                  ``kind``                call to a CE (``"call"``), a failed tick
                                                                          (``"tick"``); ``kind`` is the error's class
``intercede_poll_latency_seconds``     histogram  ``ce``                  each CE actor, per successful poll
=====================================  =========  ======================  ==============================================

The hooks are one line each in :mod:`.ce` and :mod:`.reconciler`. Recording never raises: a metrics problem must not
stop a poll or a tick. Outside a Ray worker (the in-process seam of the tests) the calls are harmless no-ops of Ray's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

import ray
from ray.util.metrics import Counter, Gauge, Histogram

from intercede.model import JobState

__all__ = [
    "LATENCY_BOUNDARIES",
    "metrics_endpoints",
    "record_actions",
    "record_error",
    "record_poll",
]

log = logging.getLogger(__name__)

#: Histogram buckets (seconds) for a poll: a local CE answers in milliseconds, a loaded Slurm over SSH in seconds.
LATENCY_BOUNDARIES = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]


@cache
def _jobs() -> Gauge:
    return Gauge("intercede_jobs", description="Jobs a CE actor tracks, by observed state", tag_keys=("ce", "state"))


@cache
def _actions() -> Counter:
    return Counter("intercede_actions_total", description="Actions the reconciler issued, by kind",
                   tag_keys=("kind",))


@cache
def _errors() -> Counter:
    return Counter("intercede_errors_total", description="Errors, by CE, where they happened and error class",
                   tag_keys=("ce", "where", "kind"))


@cache
def _latency() -> Histogram:
    return Histogram("intercede_poll_latency_seconds", description="Duration of a CE's batched status poll",
                     boundaries=LATENCY_BOUNDARIES, tag_keys=("ce",))


def record_poll(ce: str, seconds: float, states: Mapping[str, int]) -> None:
    """A successful poll of ``ce``: its latency, and how many of its jobs are in each state (absent states are 0)."""
    try:
        _latency().observe(seconds, tags={"ce": ce})
        for state in JobState:
            _jobs().set(states.get(state.value, 0), tags={"ce": ce, "state": state.value})
    except Exception:  # figures are best effort; the poll itself succeeded
        log.debug("could not record poll metrics", exc_info=True)


def record_actions(kinds: Iterable[str]) -> None:
    """One count per action issued (``kinds``: the action class names, e.g. ``"Submit"``)."""
    try:
        for kind in kinds:
            _actions().inc(1, tags={"kind": kind})
    except Exception:  # figures are best effort
        log.debug("could not record action metrics", exc_info=True)


def record_error(where: str, error: BaseException, ce: str = "") -> None:
    """One error at ``where`` ("poll", "call", "tick") of ``ce`` ("" for the reconciler itself)."""
    try:
        _errors().inc(1, tags={"ce": ce, "where": where, "kind": type(error).__name__})
    except Exception:  # figures are best effort
        log.debug("could not record error metrics", exc_info=True)


def metrics_endpoints() -> list[str]:
    """The Prometheus endpoint of every live node of the Ray cluster this process joined ([] if none)."""
    if not ray.is_initialized():
        return []
    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    return [f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
            for n in nodes if n.get("Alive") and n.get("MetricsExportPort")]
