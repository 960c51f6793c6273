"""Looking at a running intercede from a notebook or a terminal.

* :class:`Diagnostics` (:mod:`.views`) — attach, take snapshots (jobs, CE health, recent actions as DataFrames that
  render as HTML), sample states over time, plot job states and per-CE poll latency. Needs the ``notebook`` extra
  (pandas, matplotlib).
* :mod:`.frames` — the pure functions behind it: facade rows -> DataFrames. :mod:`.plots` — the matplotlib plots.
* :func:`check_ce` (:mod:`.cecheck`) — connectivity, authentication and a tiny test job on one CE; no Ray.
* :mod:`.text` — the plain tables of ``intercede status``.

The names are imported lazily, so the command line (which needs neither pandas nor matplotlib) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from intercede.diagnostics.cecheck import CheckReport, Step, check_ce
    from intercede.diagnostics.frames import actions_frame, health_frame, jobs_frame
    from intercede.diagnostics.views import Diagnostics, Snapshot

__all__ = ["CheckReport", "Diagnostics", "Snapshot", "Step", "actions_frame", "check_ce", "health_frame",
           "jobs_frame"]

_WHERE = {
    "CheckReport": "cecheck", "Step": "cecheck", "check_ce": "cecheck",
    "actions_frame": "frames", "health_frame": "frames", "jobs_frame": "frames",
    "Diagnostics": "views", "Snapshot": "views",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
