"""Stand-ins for the three names of diracx-tasks this package uses, for running it without DiracX.

diracx-tasks 0.7 pulls in diracx-core, -db and -logic, FastAPI and Redis: a DiracX deployment has them, the demo
does not need them. The stand-ins keep the shape (a task is a dataclass with ``async def execute``; a periodic one
has a ``default_schedule``); ``schedule()`` runs the task at once instead of handing it to a broker.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar


class IntervalSeconds:
    """Repeats every ``seconds`` (diracx.tasks.plumbing.schedules.IntervalSeconds)."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds

    def next_occurrence(self) -> datetime:
        return datetime.now(tz=UTC) + timedelta(seconds=self.seconds)


class BaseTask:
    """A one-shot task (diracx.tasks.plumbing.base_task.BaseTask): ``await task.schedule()`` runs it here."""

    async def execute(self, *args: Any) -> Any:
        raise NotImplementedError

    async def schedule(self, *, at_time: datetime | None = None, labels: dict[str, Any] | None = None) -> str:
        await self.execute()
        return secrets.token_hex(8)


class PeriodicBaseTask(BaseTask):
    """A task the scheduler runs on its ``default_schedule``."""

    default_schedule: ClassVar[IntervalSeconds]
