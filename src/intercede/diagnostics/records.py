"""What every view shares, without pandas: the states a key can show, and the facade's items as plain dicts."""

from __future__ import annotations

import dataclasses
from typing import Any

from intercede.model import JobState

__all__ = ["STATES", "UNOBSERVED", "as_dict"]

#: The state of a key nothing has been observed for yet (declared; not yet submitted, or not yet polled).
UNOBSERVED = "Unobserved"
#: Every state a job key can show, in progress order (the column order of the tables and the stacking of the plot).
STATES = [UNOBSERVED, *(s.value for s in (JobState.SUBMITTED, JobState.WAITING, JobState.RUNNING, JobState.DONE,
                                          JobState.FAILED, JobState.ABORTED, JobState.UNKNOWN))]


def as_dict(item: Any) -> dict[str, Any]:
    """A pydantic model, a dataclass or a mapping as a plain dict (the facade returns all three)."""
    if hasattr(item, "model_dump"):
        dumped: dict[str, Any] = item.model_dump()
        return dumped
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    return dict(item)
